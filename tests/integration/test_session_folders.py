"""Issue 12.2: a session's folders are the user's alone. Under a shared (1777) work root, another user of the
cluster can create `<work root>/<user>` first (or a symlink there); `mkdir -p` would then use it, and its owner
could swap `.bridge/runner.py` (run as the victim) or read the kernel secret and SSH key. Such a session is
refused before anything reaches Slurm, with the folder named."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest

from bridge.adapters.db.engine import Database, upgrade
from bridge.adapters.slurm.factory import build_runner, build_slurm_client
from bridge.config import BridgeSettings, dev_cluster_overrides
from bridge.domain.auth import AuthContext
from bridge.domain.session import SessionRequest
from bridge.errors import GenericForbidden
from bridge.services import accounts
from bridge.services.events import EventBus
from bridge.services.images import ImageResolver
from bridge.services.sessions import SessionService

pytestmark = pytest.mark.cluster


async def in_root(root: Path, *argv: str, user: str | None = None, check: bool = True) -> str:
    """A command inside the dev cluster's root (as `user`, else root); its stdout."""
    switch = ["runuser", "-u", user, "--"] if user else []
    done = await asyncio.to_thread(subprocess.run, ["chroot", str(root), *switch, *argv], check=check,
                                   capture_output=True, text=True)
    return done.stdout


async def _service(root: Path, account: str, tmp_path: Path, work_root: str):
    url = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    settings = BridgeSettings(**{**dev_cluster_overrides(root), "database": {"url": url}})
    settings.sessions.work_root = work_root
    settings.slurm.job_tag_prefix = f"foldertest-{uuid.uuid4().hex[:6]}:"
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    async with db.unit_of_work() as s:
        await accounts.ensure_domain(s, "default")
        await accounts.ensure_policy(s, "default")
        g = await accounts.create_group(s, name="default", slurm_account=account)
        u = await accounts.create_user(s, email="f@x.org", unix_user="alice")
        await accounts.add_member(s, g, u)
        kp = await accounts.create_keypair(s, u)
    auth = AuthContext(kp.access_key, u.uuid, u.email, u.username, "user", "default", "alice", False, "default", 100)
    slurm = build_slurm_client(settings)
    runner = build_runner(settings)
    return db, slurm, SessionService(db, slurm, runner, ImageResolver(runner, "/srv/images", {}, db), EventBus(),
                                     settings), auth, settings


def request() -> SessionRequest:
    return SessionRequest(image="python", name="fold-" + uuid.uuid4().hex[:4], kind="interactive",
                          enqueue_only=True, resources={"mem": "256m"})


@pytest.mark.parametrize("plant", ["folder", "symlink"])
async def test_a_user_folder_made_by_someone_else_is_refused(cluster, account, tmp_path, plant):
    work_root = f"/srv/shared/t-{uuid.uuid4().hex[:8]}"
    await in_root(cluster, "install", "-d", "-m", "1777", work_root)
    if plant == "folder":   # bob gets there first, open to all, as a trap
        await in_root(cluster, "mkdir", "-m", "0777", f"{work_root}/alice", user="bob")
    else:                   # or points alice's folder at one of his own
        await in_root(cluster, "mkdir", "-m", "0777", f"{work_root}/bob-trap", user="bob")
        await in_root(cluster, "ln", "-s", f"{work_root}/bob-trap", f"{work_root}/alice", user="bob")
    db, slurm, service, auth, settings = await _service(cluster, account, tmp_path, work_root)
    try:
        with pytest.raises(GenericForbidden) as refused:
            await service.create(auth, request())
        assert f"{work_root}/alice" in refused.value.msg
        assert "belongs to bob" in refused.value.msg or "symbolic link" in refused.value.msg
        # nothing left behind: no session row, no job
        assert (await service.page(auth, offset=0, limit=10))[1] == 0
        assert settings.slurm.job_tag_prefix not in await in_root(cluster, "squeue", "-h", "-o", "%k")
    finally:
        await slurm.aclose()
        await db.dispose()
        await in_root(cluster, "rm", "-rf", work_root)


async def test_the_users_own_folder_is_made_closed_to_others(cluster, account, tmp_path):
    work_root = f"/srv/shared/t-{uuid.uuid4().hex[:8]}"
    await in_root(cluster, "install", "-d", "-m", "1777", work_root)
    db, slurm, service, auth, settings = await _service(cluster, account, tmp_path, work_root)
    req = request()
    try:
        body, created = await service.create(auth, req)
        assert created
        row = await service.resolve(auth, body["sessionId"])
        for path in (f"{work_root}/alice", row.work_dir, f"{row.work_dir}/.bridge"):
            st = (cluster / path.lstrip("/")).stat()
            assert (st.st_uid, st.st_mode & 0o777) == (1001, 0o700), path
    finally:
        await in_root(cluster, "scancel", "--name", f"bai-{req.name}", check=False)
        await slurm.aclose()
        await db.dispose()
        await in_root(cluster, "rm", "-rf", work_root)
