"""The composition root (bridge/wiring.py): each part built once and shared, the overrides in place of the
boundaries, what was built released; and the app and the admin CLI take their parts from it."""

from __future__ import annotations

from bridge.config import BridgeSettings
from bridge.wiring import Overrides, Parts
from tests.support.fake_slurm import FakeSlurm


async def test_each_part_is_built_once_and_shared(tmp_path):
    fake = FakeSlurm()
    parts = Parts(BridgeSettings(database={"url": f"sqlite+aiosqlite:///{tmp_path}/w.db"},
                                 accounts={"slurm_sync": False}), Overrides(slurm=fake))
    assert parts.slurm.inner is fake
    assert parts.sessions.slurm is parts.slurm is parts.watcher.slurm
    assert parts.sessions.folders is parts.folders and parts.sessions.images is parts.images
    assert parts.sessions.runner is parts.folders.runner is parts.images.runner
    assert parts.presets is parts.presets and parts.sessions.db is parts.db is parts.key_usage.db
    service = parts.accounts()
    assert service.projects is parts.projects and service.unix_users is parts.unix_users
    assert not service.projects.enabled and parts.accounts(force_slurm_sync=True).projects.enabled
    await parts.aclose()
    assert fake.closed


async def test_nothing_built_nothing_released(tmp_path):
    fake = FakeSlurm()
    await Parts(BridgeSettings(), Overrides(slurm=fake)).aclose()
    assert not fake.closed


async def test_the_app_runs_on_the_overridden_slurm_without_patching(gw):
    state = gw.app.state
    assert isinstance(state.slurm.inner, FakeSlurm)
    assert state.sessions.slurm is state.slurm is state.watcher.slurm is state.parts.slurm
    assert state.folders is state.sessions.folders is state.parts.folders
    assert state.projects is state.parts.projects and state.unix_users is state.parts.unix_users
    r = await gw.request("GET", "/scaling-groups?group=default", "alice")   # partitions, from the fake
    assert r.status_code == 200 and "debug" in r.text, r.text


def test_the_admin_cli_takes_its_account_service_from_the_root():
    from bridge import cli_admin

    settings = BridgeSettings()
    service = cli_admin._accounts(settings)
    assert type(service.projects) is type(Parts(settings).projects)
    assert cli_admin._accounts(settings, force=True).projects.enabled
