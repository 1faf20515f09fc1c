"""The SlurmClient contract (tests/support/slurm_contract.py) against the real adapters on the dev cluster: the
`slurm` fixture of tests/integration/conftest.py gives each driver (CLI local, CLI over SSH, REST); without a
cluster these skip, or fail under BRIDGE_TEST_REQUIRE_CLUSTER=1, as the rest of this tier. The fake Slurm
passes the same tests in the unit tier (tests/unit/test_slurm_contract.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.adapters.slurm.base import JobInfo, JobState, SlurmClient
from tests.integration.conftest import TAG, finished, state_is, wait_job
from tests.support.slurm_contract import SlurmContract

pytestmark = pytest.mark.cluster


class ClusterSteer:
    node, tag = "n4", TAG   # n4, as test_slurm_client's drain test: the others keep taking jobs

    def __init__(self, account: str) -> None:
        self.account = account

    async def running(self, slurm: SlurmClient, job_id: str) -> JobInfo:
        return await wait_job(slurm, job_id, state_is(JobState.RUNNING))

    async def finished(self, slurm: SlurmClient, job_id: str) -> JobInfo:
        return await wait_job(slurm, job_id, finished)

    async def accounted(self, slurm: SlurmClient, job_id: str) -> list[JobInfo]:
        """Accounting records come a little after the job ends (slurmdbd): wait for them."""
        deadline = time.monotonic() + 60
        while True:
            found = await slurm.history([job_id])
            if found and all(j.state.is_finished for j in found) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)


class TestRealSlurm(SlurmContract):
    @pytest.fixture
    def steer(self, account: str) -> ClusterSteer:
        return ClusterSteer(account)
