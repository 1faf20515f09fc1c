"""The pure parts of the usage service: periods, allocation, per-project sums, time bins, the usage cache."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bridge.domain.jobs import JobInfo, JobState, JobUsage
from bridge.errors import InvalidAPIParameters
from bridge.services import usage
from bridge.services.usage import UsageRecord, UsageService

T0 = datetime(2026, 8, 1, tzinfo=UTC)


def record(**kw) -> UsageRecord:
    base = dict(id="s1", name="n", job_id="1", access_key="AK", domain_name="default", group_id="g1",
                group_name="default", email="a@x", full_name="", image="img", status="TERMINATED",
                status_info=None, status_changed=T0, status_history={}, cluster_mode="single-node",
                cluster_size=1, nodes=("n1",), mounts=(), resources={"cpu": "2", "mem": "1073741824"},
                resource_opts={}, created_at=T0, terminated_at=T0 + timedelta(hours=1))
    base.update(kw)
    return UsageRecord(**base)


def test_month_period_rolls_over_the_year_and_follows_the_zone():
    assert usage.month_period("202612") == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    kst = timezone(timedelta(hours=9))
    start, end = usage.month_period("202602", kst)
    assert start == datetime(2026, 2, 1, tzinfo=kst) and end == datetime(2026, 3, 1, tzinfo=kst)
    for bad in ("2026", "202613", "2026-1", "2026011"):
        with pytest.raises(InvalidAPIParameters):
            usage.month_period(bad)


def test_day_period_takes_100_days_at_most_and_includes_the_end_day():
    start, end = usage.day_period("20260101", "20260410")          # 100 days
    assert end - start == timedelta(days=100)
    assert usage.day_period("20260101", "20260101")[1] == datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(InvalidAPIParameters, match="100 days"):
        usage.day_period("20260101", "20260411")
    with pytest.raises(InvalidAPIParameters, match="later"):
        usage.day_period("20260102", "20260101")


def test_allocation_counts_kernels_and_fractional_gpus():
    cpu, mem, gpus, shm = usage.allocated(record(cluster_size=3, resource_opts={"shmem": "1g"}))
    assert (cpu, mem, gpus, shm) == (6.0, 3 * 1024**3, 0, 1024**3)
    assert usage.allocated(record(resources={"cpu": "1", "mem": "1g", "cuda.shares": "0.5"}))[2] == 0.5
    assert usage.allocated(record(resources={"cpu": "1", "mem": "1g", "cuda.device": "2"}))[2] == 2


def test_per_group_sums_every_g_total():
    a = record(usage=JobUsage(10, 100, 5, 1, 2))
    b = record(id="s2", usage=JobUsage(10, 50, 7, 3, 4))
    c = record(id="s3", group_id="g2", group_name="other")
    [g1, g2] = usage.per_group([a, b, c])
    assert (g1["g_cpu_used"], g1["g_mem_used"], g1["g_io_read"], g1["g_io_write"]) == (150.0, 12, 4, 6)
    assert g1["g_cpu_allocated"] == 4.0 and len(g1["c_infos"]) == 2 and g2["g_name"] == "other"


def test_time_bins_clip_sessions_that_began_before_the_window():
    start = T0
    early = record(created_at=T0 - timedelta(days=2), terminated_at=T0 + timedelta(minutes=20))
    bins = usage.time_bins([early, record(terminated_at=None)], start)
    assert len(bins) == usage.BINS and bins[1]["date"] - bins[0]["date"] == 900
    assert [b["num_sessions"]["value"] for b in bins[:3]] == [1, 1, 0]


class Slurm:
    def __init__(self, records):
        self.records, self.calls = records, []

    async def history(self, job_ids, *, user=None):
        self.calls.append(list(job_ids))
        return [r for r in self.records if r.job_id in job_ids or r.het_job_id in job_ids]


async def test_usage_reads_accounting_once_and_keeps_only_finished_jobs():
    done = JobInfo("1", "x", JobState.COMPLETED, usage=JobUsage(cpu_time_ms=5))
    het = [JobInfo("2", "x", JobState.COMPLETED, het_job_id="2", usage=JobUsage(cpu_time_ms=1)),
           JobInfo("3", "x", JobState.RUNNING, het_job_id="2", usage=JobUsage(cpu_time_ms=2))]
    slurm = Slurm([done, *het])
    svc = UsageService(None, slurm)  # type: ignore[arg-type]
    got = await svc.usage(["1", "2", "1", "9"])
    assert slurm.calls == [["1", "2", "9"]]
    assert got == {"1": JobUsage(cpu_time_ms=5), "2": JobUsage(cpu_time_ms=3)}
    await svc.usage(["1", "2"])
    assert slurm.calls[-1] == ["2"]                  # a component still runs: read again
    slurm.records = [done, *het[:1], replace(het[1], state=JobState.COMPLETED)]
    await svc.usage(["2"])
    assert await svc.usage(["1", "2"]) and len(slurm.calls) == 3
    assert svc.forget() == 2
    await svc.usage(["1"])
    assert slurm.calls[-1] == ["1"]
