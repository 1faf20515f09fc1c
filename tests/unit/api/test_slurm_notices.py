"""Slurm's job start/end notices (slurm_plugins/bridge_notify.py -> POST /slurm/job-event): signed with the site's
notify secret; a good one wakes the shared watcher, anything else is refused and wakes nothing."""

import importlib.util
import json
import time
from pathlib import Path

from bridge.domain import slurm_notice

PLUGIN = Path(__file__).resolve().parents[3] / "slurm_plugins" / "bridge_notify.py"


def plugin():
    spec = importlib.util.spec_from_file_location("bridge_notify", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plugin_signs_as_the_gateway_checks():
    t = int(time.time())
    sig = plugin().signature("s3cret", "4242", "start", t)
    assert slurm_notice.valid("s3cret", "4242", "start", t, sig, time.time())
    assert not slurm_notice.valid("other", "4242", "start", t, sig, time.time())
    assert not slurm_notice.valid("s3cret", "4243", "start", t, sig, time.time())
    assert not slurm_notice.valid("s3cret", "4242", "end", t, sig, time.time())
    assert not slurm_notice.valid("s3cret", "4242", "start", t, sig, time.time() + 301)   # stale
    assert not slurm_notice.valid("", "4242", "start", t, plugin().signature("", "4242", "start", t), time.time())


def test_the_plugin_finds_the_gateways_whose_tag_the_job_carries(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text(json.dumps({"prefix": "bridge-a:", "url": "http://a", "secret": "x"}))
    (tmp_path / "b.json").write_text(json.dumps({"prefix": "bridge-b:", "url": "http://b", "secret": "y"}))
    (tmp_path / "junk.json").write_text("{not json")
    module = plugin()
    monkeypatch.setattr(module, "CONF_DIR", str(tmp_path))
    assert [c["url"] for c in module.targets("bridge-b:1234-abcd")] == ["http://b"]
    assert module.targets("someone else's job") == [] and module.targets("") == []


async def _post(gw, body, signature):
    return await gw.http.post("/slurm/job-event", json=body, headers={"X-Bridge-Notify": signature})


async def test_a_signed_notice_wakes_the_watcher_and_nothing_else_does(gw):
    gw.app.state.settings.slurm.notify_secret = "s3cret"
    wake = gw.app.state.sessions.wake_watcher
    t = int(time.time())
    wake.clear()
    notice = {"job_id": "77", "event": "start", "t": t}
    bad = await _post(gw, notice, "0" * 64)
    assert bad.status_code == 401 and bad.json()["type"].endswith("unauthorized") and not wake.is_set()
    forged = await _post(gw, notice, slurm_notice.signature("guess", "77", "start", t))
    assert forged.status_code == 401 and not wake.is_set()
    good = await _post(gw, notice, slurm_notice.signature("s3cret", "77", "start", t))
    assert good.status_code == 200 and wake.is_set()


async def test_notices_are_off_without_a_secret(gw):
    gw.app.state.settings.slurm.notify_secret = ""
    t = int(time.time())
    r = await _post(gw, {"job_id": "77", "event": "start", "t": t}, slurm_notice.signature("", "77", "start", t))
    assert r.status_code == 401
