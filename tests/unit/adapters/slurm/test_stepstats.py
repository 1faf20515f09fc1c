"""sstat step statistics as the dev cluster's Slurm 24.11 prints them (jobacct_gather/linux)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.adapters.runner import Completed
from bridge.adapters.slurm.stepstats import SlurmStepStats, cpu_seconds, usage_from_sstat

DATA = Path(__file__).resolve().parents[3] / "data" / "slurm" / "24.11"


def test_sstat_sums_the_steps_of_each_job():
    got = usage_from_sstat((DATA / "sstat.txt").read_text(), at=100.0)
    assert set(got) == {"2205"}                     # 2202 had no step running: an error line, not a row
    u = got["2205"]
    assert u.cpu_s == 21                            # batch 0 s + step 0 21 s (two tasks)
    assert u.mem_bytes == 11415552 + 184844288
    assert u.mem_max_bytes == 11415552 + 184844288  # per-task maxima never exceed the step's total
    assert u.io_read_bytes == 23144 + 72828 and u.io_write_bytes == 6129 + 2
    assert u.gpu_util_pct is None and u.at == 100.0


def test_jobacct_none_garbage_is_not_measured_and_gpus_are_read_where_gathered():
    assert usage_from_sstat("2202.batch|||\n", at=1) == {}
    line = "7.0|cpu=00:01:00,fs/disk=1,mem=100,gres/gpuutil=55,gres/gpumem=2048|mem=100|fs/disk=3\n"
    u = usage_from_sstat(line, at=1)["7"]
    assert (u.cpu_s, u.gpu_util_pct, u.gpu_mem_bytes, u.io_write_bytes) == (60, 55.0, 2048, 3)


@pytest.mark.parametrize("text,seconds", [("00:00:05", 5), ("1-02:00:00", 93600), ("00:59.947", 59.947),
                                          ("12", 12), ("", None), ("x:1", None)])
def test_cpu_seconds(text, seconds):
    assert cpu_seconds(text) == (pytest.approx(seconds) if seconds is not None else None)


async def test_one_sstat_call_for_all_jobs():
    calls = []

    class Runner:
        async def run(self, argv, *, user=None, stdin=None, env=None, timeout_s=None):
            calls.append((list(argv), user))
            return Completed(tuple(argv), 0, (DATA / "sstat.txt").read_text(), "", 0.1)

    stats = SlurmStepStats(Runner(), bin_dir="/opt/slurm/bin")  # type: ignore[arg-type]
    got = await stats.running(["2205", "2202", "2205"])
    assert set(got) == {"2205"} and len(calls) == 1
    argv, user = calls[0]
    assert argv[0] == "/opt/slurm/bin/sstat" and argv[-2:] == ["-j", "2205,2202"] and user is None
    assert await stats.running([]) == {} and len(calls) == 1
