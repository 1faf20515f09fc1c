"""history()'s usage (JobInfo.usage) against what `sacct` prints for the same job, with every driver."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from bridge.adapters.slurm.base import JobSpec
from tests.e2e.test_usage_rest import sacct
from tests.integration.conftest import TAG, finished, wait_job

pytestmark = pytest.mark.cluster


async def test_usage_of_a_finished_job_matches_sacct(slurm, account):
    name = "u-" + uuid.uuid4().hex[:6]
    script = ("#!/bin/bash\nawk 'BEGIN{for(i=0;i<300000;i++)s+=i}'\n"
              "srun --ntasks=1 dd if=/dev/zero of=/tmp/$SLURM_JOB_ID.u bs=64k count=16 2>/dev/null\n"
              "rm -f /tmp/$SLURM_JOB_ID.u\n")
    job_id = await slurm.submit(JobSpec(name=name, script=script, account=account, comment=TAG,
                                        stdout=f"/tmp/{name}-%j.out"), user="alice")
    await wait_job(slurm, job_id, finished)
    deadline = time.monotonic() + 30      # slurmdbd records the end a moment after slurmctld
    while True:
        [record] = [r for r in await slurm.history([job_id]) if r.job_id == job_id]
        if (record.state.is_finished and record.end_time) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    expected = sacct(job_id)
    assert record.usage is not None
    assert record.usage.elapsed_s == expected["elapsed"]
    assert record.usage.cpu_time_ms == expected["cpu"]
    assert record.usage.max_rss_bytes == expected["rss"]
    assert (record.usage.disk_read_bytes, record.usage.disk_write_bytes) == (expected["read"], expected["write"])
