"""Ended sessions' last figures come from accounting (SlurmClient.history), the one sacct parser."""

from __future__ import annotations

from bridge.domain.jobs import JobInfo, JobState, JobUsage
from bridge.services.utilization import ended_usage


def test_accounting_totals_become_usage_and_unmeasured_jobs_are_left_out():
    jobs = [JobInfo("7", "a", JobState.COMPLETED, usage=JobUsage(60, 57438, 196259840, 96000, 6131)),
            JobInfo("8", "b", JobState.COMPLETED, usage=JobUsage(5, 0, 0, 0, 0)),    # jobacct_gather/none
            JobInfo("9", "c", JobState.COMPLETED)]                                   # no accounting record
    got = ended_usage(jobs, at=3.0)
    assert set(got) == {"7"}
    u = got["7"]
    assert (u.cpu_s, u.mem_bytes, u.mem_max_bytes, u.io_read_bytes, u.io_write_bytes, u.at) == (
        57.438, 0, 196259840, 96000, 6131, 3.0)
