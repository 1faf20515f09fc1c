"""Compute sessions through the real backend.ai CLI (22.3.2 and 23.9.10) on the real Slurm cluster."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_admin_cli import ok

pytestmark = pytest.mark.cluster
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def row(client, who, name, *args):
    """The `ps` line of a session (ps lists active ones by default; pass --status ALL for the rest)."""
    p = client.run(who, "ps", *args)
    if p.returncode != 0 and "NoItems" in p.stderr:
        return None  # 23.9.10 ends an empty listing with a NoItems error, against any server
    for line in ok(p).splitlines():
        if line.split()[:1] == [name]:
            return line
    return None


def wait_row(client, who, name, pattern, timeout=60):
    deadline = time.monotonic() + timeout
    line = None
    while time.monotonic() < deadline:
        line = row(client, who, name, "--status", "ALL")
        if line and re.search(pattern, line):
            return line
        time.sleep(0.5)
    raise AssertionError(f"{name} never matched {pattern!r}; last: {line}")


def test_interactive_session_lifecycle(client):
    name = unique("it")
    out = ok(client.run("alice", "session", "create", "python", "-t", name, "-r", "cpu=1", "-r", "mem=256m"))
    assert "is created and ready" in out
    sid = UUID.search(out).group(0)
    line = row(client, "alice", name)
    assert line and "RUNNING" in line and "interactive" in line and sid in line
    assert row(client, "bob", name) is None  # bob does not see alice's session
    info = ok(client.run("alice", "session", "info", sid))
    assert name in info and "RUNNING" in info and "main" in info
    denied = client.run("bob", "session", "info", sid)
    assert "There is no such compute session" in denied.stdout + denied.stderr
    logs = ok(client.run("alice", "session", "logs", name))
    assert f"[bridge] session {sid}" in logs and "as alice" in logs

    proc = client.popen("alice", "session", "events", name)
    time.sleep(1.5)
    assert "Done" in ok(client.run("alice", "session", "rm", name))
    out, _ = proc.communicate(timeout=60)
    assert "session_terminated" in out and "server_close" in out and name in out
    assert "TERMINATED" in wait_row(client, "alice", name, "TERMINATED") and "user-requested" in row(
        client, "alice", name, "--status", "ALL")
    assert row(client, "alice", name) is None  # gone from the default (active) listing


def test_batch_sessions_report_success_and_failure(client):
    good, bad = unique("ok"), unique("bad")
    ok(client.run("alice", "session", "create", "python", "-t", good, "--type", "batch",
                  "-c", "python3 -c 'print(6*7)'"))
    ok(client.run("alice", "session", "create", "python", "-t", bad, "--type", "batch", "-c", "echo oops; exit 3"))
    assert re.search(r"TERMINATED\s+self-terminated.*SUCCESS", wait_row(client, "alice", good, "SUCCESS"))
    assert re.search(r"TERMINATED\s+self-terminated.*FAILURE", wait_row(client, "alice", bad, "FAILURE"))
    assert "42" in ok(client.run("alice", "session", "logs", good))
    assert "exited with 3" in ok(client.run("alice", "session", "logs", bad))


def test_dependent_session_waits_for_its_dependency(client):
    first, second = unique("dep1"), unique("dep2")
    ok(client.run("alice", "session", "create", "python", "-t", first, "--type", "batch", "--enqueue-only",
                  "-c", "sleep 4; date +%s.%N > /home/work/first-done"))
    ok(client.run("alice", "session", "create", "python", "-t", second, "--type", "batch", "--enqueue-only",
                  "--depends", first, "-c", "date +%s.%N"))
    assert "Dependency" in wait_row(client, "alice", second, r"PENDING\s+Dependency", timeout=20)
    wait_row(client, "alice", second, "SUCCESS", timeout=90)
    assert "SUCCESS" in row(client, "alice", first, "--status", "ALL")


def test_the_project_quota_refuses_up_front_what_the_gateway_knows_and_slurm_holds_the_rest(client, gateway):
    """Project `quota-<v>` is a Slurm account with GrpTRES=cpu=2. Over the quota with the gateway's own
    sessions: refused at once, naming the limit. Over it because of a job submitted around the gateway (which
    only Slurm knows of): the session waits, PENDING with Slurm's reason, and runs once that job ends."""
    from tests.e2e.conftest import limited_project

    project = limited_project(client, gateway)
    a, b = unique("qa"), unique("qb")
    ok(client.run("alice", "session", "create", "python", "-t", a, "-g", project, "-r", "cpu=2"))
    p = client.run("alice", "session", "create", "python", "-t", b, "-g", project, "-r", "cpu=1", "--enqueue-only")
    assert p.returncode != 0 and f"project {project} allows 2 cpu in total" in p.stdout + p.stderr
    ok(client.run("alice", "session", "rm", a))
    wait_row(client, "alice", a, "TERMINATED", timeout=60)   # ended: it holds nothing any more
    root = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))
    outside = subprocess.run(["chroot", str(root), "runuser", "-u", "alice", "--", "sbatch", "--parsable", "-A",
                              project, "-c", "2", "-o", "/dev/null", "--chdir", "/tmp", "--wrap", "sleep 300"],
                             capture_output=True, text=True)
    assert outside.returncode == 0, outside.stderr
    try:
        wait_job_running(root, outside.stdout.strip())
        out = ok(client.run("alice", "session", "create", "python", "-t", b, "-g", project, "-r", "cpu=1",
                            "--enqueue-only"))
        assert "enqueued" in out
        assert "AssocGrpCpuLimit" in wait_row(client, "alice", b, r"PENDING\s+AssocGrpCpuLimit", timeout=30)
    finally:
        subprocess.run(["chroot", str(root), "scancel", outside.stdout.strip()], capture_output=True)
    wait_row(client, "alice", b, "RUNNING", timeout=60)
    ok(client.run("alice", "session", "rm", b))


def wait_job_running(root: Path, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(["chroot", str(root), "squeue", "-h", "-j", job_id, "-o", "%t"],
                               capture_output=True, text=True).stdout.strip()
        if state == "R":
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never ran")


def test_bad_requests_are_refused_with_the_field_named(client):
    p = client.run("alice", "session", "create", "python", "-t", unique("x"), "-r", "cpu=lots")
    assert "resources.cpu" in p.stdout + p.stderr
    p = client.run("alice", "session", "create", "no-such-image", "-t", unique("x"))
    assert "unknown image" in p.stdout + p.stderr
    p = client.run("alice", "session", "create", "python", "-t", unique("x"), "--scaling-group", "nope")
    assert "scaling_group" in p.stdout + p.stderr
    p = client.run("alice", "session", "create", "python", "-t", "x")
    assert "name" in p.stdout + p.stderr
    p = client.run("alice", "session", "create", "python", "-t", unique("x"), "-r", "cuda.device=3")
    assert "no node of resource group debug has 3 GPUs (the largest has 2)" in p.stdout + p.stderr
    p = client.run("alice", "session", "create", "python", "-t", unique("x"), "-r", "cuda.shares=1.5")
    assert "more than one GPU" in p.stdout + p.stderr
