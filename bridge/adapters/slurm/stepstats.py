"""What running jobs use, read in one batch: ONE `sstat` for every running job (live utilization). sstat
has no --json (24.11), so it is read in `-P` (pipe-separated) form with byte counts unconverted. What
ended jobs used comes from accounting, through `SlurmClient.history` (JobInfo.usage).

sstat reads the step statistics that slurmstepd gathers (JobAcctGatherType other than
jobacct_gather/none); it answers for the jobs' owners, root and SlurmUser, and prints an error line, not a
failure, for a job that has no step running. Steps (batch, extern, srun steps) are summed per job.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from bridge.adapters.runner import CommandRunner
from bridge.domain.utilization import Usage
from bridge.errors import SlurmError

SSTAT_FIELDS = "JobID,TRESUsageInTot,TRESUsageInMax,TRESUsageOutTot"


def _tres(value: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value.split(",") if "=" in item)


def cpu_seconds(value: str | None) -> float | None:
    """Slurm's CPU time: [D-]HH:MM:SS, MM:SS(.mmm), or plain seconds; None when absent or nonsense."""
    if not value:
        return None
    days = 0
    if "-" in value:
        d, _, value = value.partition("-")
        if not d.isdigit():
            return None
        days = int(d)
    try:
        parts = [float(p) for p in value.split(":")]
    except ValueError:
        return None
    if not parts or len(parts) > 3 or any(p < 0 for p in parts):
        return None
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return days * 86400 + seconds


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def _job_of(step_id: str) -> str:
    """'123.batch' / '123.0' / '123+1.0' -> '123' (a het job's components count for the job)."""
    return step_id.split(".")[0].split("+")[0].split("_")[0]


def _add(total: Usage | None, step: Usage) -> Usage:
    if total is None:
        return step
    def plus(a: float | int | None, b: float | int | None) -> float | int | None:
        return b if a is None else a if b is None else a + b
    return Usage(
        cpu_s=total.cpu_s + step.cpu_s, mem_bytes=total.mem_bytes + step.mem_bytes,
        mem_max_bytes=total.mem_max_bytes + step.mem_max_bytes,
        io_read_bytes=total.io_read_bytes + step.io_read_bytes,
        io_write_bytes=total.io_write_bytes + step.io_write_bytes,
        gpu_util_pct=plus(total.gpu_util_pct, step.gpu_util_pct),
        gpu_mem_bytes=plus(total.gpu_mem_bytes, step.gpu_mem_bytes),   # type: ignore[arg-type]
        at=max(total.at, step.at))


def _step_usage(tot: str, peak: str, out: str, at: float, cpu_override: float | None = None) -> Usage | None:
    t, m, o = _tres(tot), _tres(peak), _tres(out)
    if not t:   # jobacct_gather/none: nothing gathered
        return None
    cpu = cpu_override if cpu_override is not None else cpu_seconds(t.get("cpu"))
    if cpu is None and "mem" not in t:
        return None
    # jobacct_gather/none leaves AveCPU-style garbage (a negative or huge time) and no mem: not measured
    if cpu is None or cpu > 10 * 365 * 86400:
        return None
    gpu_util = _int(t.get("gres/gpuutil"))
    mem = _int(t.get("mem")) or 0
    return Usage(cpu_s=cpu, mem_bytes=mem, mem_max_bytes=max(_int(m.get("mem")) or 0, mem),
                 io_read_bytes=_int(t.get("fs/disk")) or 0, io_write_bytes=_int(o.get("fs/disk")) or 0,
                 gpu_util_pct=float(gpu_util) if gpu_util is not None else None,
                 gpu_mem_bytes=_int(t.get("gres/gpumem")), at=at)


def usage_from_sstat(text: str, at: float) -> dict[str, Usage]:
    """`sstat -a -P -n --noconvert -o JobID,TRESUsageInTot,TRESUsageInMax,TRESUsageOutTot` -> job id -> Usage."""
    jobs: dict[str, Usage] = {}
    for line in text.splitlines():
        cols = line.split("|")
        if len(cols) < 4 or not cols[0][:1].isdigit():
            continue
        step = _step_usage(cols[1], cols[2], cols[3], at)
        if step is not None:
            job = _job_of(cols[0])
            jobs[job] = _add(jobs.get(job), step)
    return jobs


class SlurmStepStats:
    def __init__(self, runner: CommandRunner, *, bin_dir: str = "", timeout_s: float = 60.0) -> None:
        self.runner, self.bin_dir, self.timeout_s = runner, bin_dir, timeout_s
        self.calls = 0

    def _bin(self, name: str) -> str:
        return f"{self.bin_dir.rstrip('/')}/{name}" if self.bin_dir else name

    async def _run(self, argv: list[str], user: str | None) -> str:
        self.calls += 1
        done = await self.runner.run(argv, user=user, timeout_s=self.timeout_s)
        if not done.ok:
            raise SlurmError(f"{argv[0].rsplit('/', 1)[-1]} failed (rc={done.rc}): {done.stderr.strip()[:300]}")
        return done.stdout

    async def running(self, job_ids: Sequence[str], *, user: str | None = None) -> dict[str, Usage]:
        """Live usage of running jobs, ONE sstat call; a job without a running step is simply absent."""
        if not job_ids:
            return {}
        out = await self._run([self._bin("sstat"), "-a", "-P", "-n", "--noconvert", "-o", SSTAT_FIELDS,
                               "-j", ",".join(_unique(job_ids))], user)
        return usage_from_sstat(out, time.time())


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(i for i in ids if i))
