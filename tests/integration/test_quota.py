"""Association limits are Slurm's own: a job over the project's quota pends with Slurm's reason."""

from __future__ import annotations

import uuid

import pytest

from bridge.adapters.slurm.base import JobSpec, JobState
from tests.integration.conftest import RUN, TAG, run, state_is, wait_job

pytestmark = pytest.mark.cluster


@pytest.fixture
def limited_account(accounting):
    name = f"q{RUN}{uuid.uuid4().hex[:3]}"
    run(accounting.ensure_account(name))
    run(accounting.ensure_association("alice", name))
    run(accounting.set_account_limits(name, grp_tres={"cpu": 2}, grp_jobs=5))
    return name


@pytest.mark.parametrize("slurm", ["cli-local", "rest"], indirect=True)
async def test_second_job_over_the_cpu_quota_pends_with_the_slurm_reason(slurm, accounting, limited_account):
    assert (await accounting.account_limits(limited_account))["GrpTRES"] == "cpu=2"
    job = dict(script="#!/bin/bash\nsleep 300\n", account=limited_account, comment=TAG)
    first = await slurm.submit(JobSpec(name="q1", cpus_per_task=2, **job), user="alice")
    await wait_job(slurm, first, state_is(JobState.RUNNING))
    second = await slurm.submit(JobSpec(name="q2", cpus_per_task=1, **job), user="alice")
    pending = await wait_job(slurm, second, lambda j: j.state is JobState.PENDING and j.reason is not None
                             and j.reason not in ("None", "Priority", "Resources"), timeout_s=30)
    assert pending.reason == "AssocGrpCpuLimit"
    await slurm.cancel([first])
    running = await wait_job(slurm, second, state_is(JobState.RUNNING), timeout_s=60)
    assert running.state is JobState.RUNNING
    await slurm.cancel([second])
