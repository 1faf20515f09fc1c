"""Slurm tells the gateway that a job started or ended (slurm_plugins/bridge_notify.py as PrologSlurmctld and
EpilogSlurmctld): a gateway whose watcher looks rarely still sees its session RUNNING and then ended within
moments of Slurm, long before its next look."""

from __future__ import annotations

import time
import uuid

import pytest

from bridge.devcluster.devenv import read_env
from tests.e2e.test_session_rest import Api
from tests.integration.test_dev_env import bai_bridge, free_port

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def slow_watcher(gateway, tmp_path_factory):
    """A gateway of its own whose watcher looks at Slurm once a minute at most (after a creation: at 0.1, 0.2,
    0.4 ... 6.4, 12.8, 25.6 s), so what it sees sooner came through a notice. (`gateway`: the dev cluster runs.)"""
    work = tmp_path_factory.mktemp("slow")
    state = work / "state"
    slow = {"BRIDGE_SESSIONS__WATCHER_FLOOR_S": "60", "BRIDGE_SESSIONS__WATCHER_MAX_S": "60"}
    up = bai_bridge("dev", "up", "--state-dir", str(state), "--port", str(free_port()), "--no-first-job",
                    "--no-webui", cwd=work, env=slow)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield read_env(state / "env")
    finally:
        bai_bridge("dev", "down", "--state-dir", str(state), cwd=work)


def _until(api: Api, name: str, statuses: set[str], start: float, limit: float) -> float:
    while time.monotonic() - start < limit:
        if api("GET", f"/session/{name}").json().get("status") in statuses:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{name} did not reach {statuses} within {limit} s")


def test_job_start_and_end_reach_the_gateway_before_its_next_look(slow_watcher):
    api = Api(slow_watcher)
    name = "notice-" + uuid.uuid4().hex[:6]
    start = time.monotonic()
    r = api("POST", "/session", {"name": name, "image": "python", "type": "batch", "enqueueOnly": True,
                                 "startupCommand": "sleep 2", "starts_at": "8s"})
    assert r.status_code == 201, r.text
    # Slurm starts the job 8-10 s after the creation; without a notice the watcher would next look at 12.8 s
    running = _until(api, name, {"RUNNING", "TERMINATED"}, start, 12.0)
    # it ends 2 s later; without a notice the watcher would next look at 25.6 s
    ended = _until(api, name, {"TERMINATED"}, start, 24.0)
    assert ended - running < 10, (running, ended)
