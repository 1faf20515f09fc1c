"""Integration fixtures: the real dev cluster (bai-bridge dev-cluster up), never started by the tests.

With BRIDGE_TEST_REQUIRE_CLUSTER=1 (set by scripts/test.sh and CI) a missing cluster fails the run
instead of skipping it. Every job a test submits carries this run's tag; leftovers are cancelled.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.adapters.runner import LocalRunner
from bridge.adapters.slurm.accounting import CliSlurmAccounting
from bridge.adapters.slurm.base import JobInfo, JobState, SlurmClient
from bridge.adapters.slurm.factory import build_slurm_client
from bridge.config import BridgeSettings, dev_cluster_overrides

ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))
RUN = uuid.uuid4().hex[:6]
TAG = f"bridge-test:{RUN}"
DRIVERS = ["cli-local", "cli-ssh", "rest"]


def cluster_up() -> bool:
    try:
        done = subprocess.run(["chroot", str(ROOT), "scontrol", "ping"], capture_output=True, timeout=20)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def cluster() -> Path:
    if not cluster_up():
        msg = f"the dev cluster at {ROOT} is not running (bai-bridge dev-cluster up)"
        if os.environ.get("BRIDGE_TEST_REQUIRE_CLUSTER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return ROOT


@pytest.fixture(scope="session")
def settings(cluster) -> BridgeSettings:
    return BridgeSettings(**dev_cluster_overrides(cluster))


@pytest.fixture(scope="session")
def admin_runner(settings) -> LocalRunner:
    return LocalRunner(settings.slurm.cli.prefix, settings.slurm.cli.user_switch)


@pytest.fixture(scope="session")
def accounting(settings, admin_runner) -> CliSlurmAccounting:
    return CliSlurmAccounting(admin_runner, cluster=settings.slurm.cluster)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="session")
def account(accounting) -> str:
    """A Slurm account of this test run, with alice and bob in it."""
    name = f"t{RUN}"
    run(accounting.ensure_account(name, description="bridge integration tests"))
    for user in ("alice", "bob"):
        run(accounting.ensure_association(user, name))
    return name


@pytest.fixture(scope="session", autouse=True)
def cancel_leftovers():
    yield
    if not cluster_up():
        return
    out = subprocess.run(["chroot", str(ROOT), "squeue", "-h", "-o", "%i %k"], capture_output=True, text=True).stdout
    ids = [line.split()[0] for line in out.splitlines() if TAG in line]
    if ids:
        subprocess.run(["chroot", str(ROOT), "scancel", *ids], capture_output=True)


@pytest.fixture(params=DRIVERS)
async def slurm(request, settings):
    driver, _, transport = request.param.partition("-")
    client = build_slurm_client(settings, driver, transport or None)
    yield client
    await client.aclose()


async def wait_job(
    slurm: SlurmClient, job_id: str, until: Callable[[JobInfo], bool], timeout_s: float = 60
) -> JobInfo:
    """Poll squeue (then accounting, once the job left the queue) until `until(job)` holds."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        found = await slurm.jobs([job_id])
        if not found:
            found = await slurm.history([job_id])
        if found:
            last = found[0]
            if until(last):
                return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached the expected state; last seen: {last}")


def finished(j: JobInfo) -> bool:
    return j.state.is_finished


def state_is(*states: JobState) -> Callable[[JobInfo], bool]:
    return lambda j: j.state in states


def output(path: str) -> str:
    p = ROOT / path.lstrip("/")
    for _ in range(50):
        if p.exists() and p.stat().st_size:
            break
        time.sleep(0.1)
    return p.read_text()
