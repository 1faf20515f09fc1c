"""Slurm tells the gateway that a job started or ended (slurm_plugins/bridge_notify.py as PrologSlurmctld and
EpilogSlurmctld): a gateway whose watcher looks rarely still sees its session RUNNING within moments of Slurm
starting the job, long before its next look."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from bridge.devcluster.devenv import read_env
from tests.e2e.test_session_rest import Api
from tests.integration.test_dev_env import bai_bridge, free_port

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def slow_watcher(gateway, tmp_path_factory):
    """A gateway of its own whose watcher looks at Slurm every ten minutes at most (after a creation: at 0.1,
    0.2, 0.4 ... 25.6, 51.2, 102.4 s), so what it sees between came through a notice. (`gateway`: the dev cluster
    runs.)"""
    work = tmp_path_factory.mktemp("slow")
    state = work / "state"
    slow = {"BRIDGE_SESSIONS__WATCHER_FLOOR_S": "600", "BRIDGE_SESSIONS__WATCHER_MAX_S": "600"}
    up = bai_bridge("dev", "up", "--state-dir", str(state), "--port", str(free_port()), "--no-first-job",
                    "--no-webui", cwd=work, env=slow)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        yield read_env(state / "env")
    finally:
        bai_bridge("dev", "down", "--state-dir", str(state), cwd=work)


def _until(api: Api, name: str, statuses: set[str], limit: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if api("GET", f"/session/{name}").json().get("status") in statuses:
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"{name} did not reach {statuses} within {limit} s")


def _slurm_started(job_id: str, limit: float) -> float:
    """When Slurm itself says the job runs (or ran): the test's own look, every 0.1 s."""
    root = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")
    start = time.monotonic()
    while time.monotonic() - start < limit:
        state = subprocess.run(["chroot", root, "squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                               text=True).stdout.strip()
        if state and state not in ("PENDING", "CONFIGURING"):
            return time.monotonic()
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not start within {limit} s")


def test_job_start_reaches_the_gateway_before_its_next_look(slow_watcher):
    api = Api(slow_watcher)
    name = "notice-" + uuid.uuid4().hex[:6]
    created = time.monotonic()
    r = api("POST", "/session", {"name": name, "image": "python", "type": "batch", "enqueueOnly": True,
                                 "startupCommand": "sleep 2", "starts_at": "38s"})
    assert r.status_code == 201, r.text
    job_id = api("GET", f"/session/{name}").json()["containerId"]
    # Slurm starts the job 38 s or more after the creation (later when the cluster is busy); the watcher looked
    # at 0.1 ... 25.6 s and looks next at 51.2 s, then 102.4 s: seeing it RUNNING within moments of Slurm
    # takes the notice
    started = _slurm_started(job_id, 300)
    seen = _until(api, name, {"RUNNING", "TERMINATED"}, 60)
    assert seen - started < 3.0, f"seen {seen - started:.1f} s after Slurm started it ({started - created:.1f} s)"
    _until(api, name, {"TERMINATED"}, 120)


def _sbatch(user: str, comment: str) -> subprocess.CompletedProcess[str]:
    root = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")
    return subprocess.run(["chroot", root, "runuser", "-u", user, "--", "sbatch", "--parsable", "-A", "default",
                           "--chdir=/tmp", "-o", "/dev/null", "--mem=64M", f"--comment={comment}", "--wrap", "true"],
                          capture_output=True, text=True, timeout=60)


def test_a_sessions_job_names_it_to_admins_and_a_false_claim_is_refused(gateway):
    """slurm_plugins/job_submit.lua in the real slurmctld: the gateway's signed job tag becomes the job's admin
    comment (which users cannot set); a job that claims a session with a tag that does not check is refused
    at submission, whoever sends it."""
    root = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")
    api = Api(gateway)
    name = "tagged-" + uuid.uuid4().hex[:6]
    r = api("POST", "/session", {"name": name, "image": "python", "type": "batch", "enqueueOnly": True,
                                 "startupCommand": "sleep 60"})
    assert r.status_code == 201, r.text
    info = api("GET", f"/session/{name}").json()
    sid, job_id = info["sessionId"], info["containerId"]
    try:
        shown = subprocess.run(["chroot", root, "scontrol", "show", "job", "-o", job_id], capture_output=True,
                               text=True).stdout
        assert f"AdminComment=bridge session {sid} " in shown, shown
        tag = subprocess.run(["chroot", root, "squeue", "-h", "-j", job_id, "-o", "%k"], capture_output=True,
                             text=True).stdout.strip()
        prefix = tag[:tag.index(sid)]
        assert tag.startswith(prefix + sid + ".") and len(tag.rsplit(".", 1)[1]) == 32
        for user, comment in (("alice", f"{prefix}{uuid.uuid4()}.{'0' * 32}"),   # a session made up
                              ("alice", f"{prefix}{uuid.uuid4()}"),               # unsigned
                              ("bob", tag)):                                     # alice's tag, copied by bob
            refused = _sbatch(user, comment)
            assert refused.returncode != 0 and "bridge:" in refused.stderr, (user, comment, refused.stdout)
        plain = _sbatch("alice", "my own notes")   # any other comment: untouched
        assert plain.returncode == 0, plain.stderr
        subprocess.run(["chroot", root, "scancel", plain.stdout.strip().split(";")[0]], capture_output=True)
    finally:
        api("DELETE", f"/session/{name}")
