"""A Slurm job as the gateway's rules see it: its state and what Slurm says about it. Plain values; the
Slurm adapters (bridge/adapters/slurm) build them from squeue, sacct or slurmrestd."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class JobState(StrEnum):
    """Slurm base job states (squeue/sacct `job_state`, without flags)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    REQUEUED = "REQUEUED"
    RESIZING = "RESIZING"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: str | Sequence[str] | None) -> JobState:
        """Accept '"RUNNING"', 'CANCELLED by 1001', or the list form of data_parser >= v0.0.40."""
        if value is None:
            return cls.UNKNOWN
        if not isinstance(value, str):
            for item in value:
                if item in cls.__members__:
                    return cls(item)
            return cls.UNKNOWN
        head = value.split()[0].rstrip("+") if value.strip() else ""
        head = _FLAG_STATES.get(head, head)
        return cls(head) if head in cls.__members__ else cls.UNKNOWN

    @property
    def is_finished(self) -> bool:
        return self not in _ACTIVE_STATES


# squeue's %T prints a flag instead of the base state while the flag is set: CONFIGURING is an allocated job
# whose PrologSlurmctld (or node boot) is still running, which --json lists as ["RUNNING", "CONFIGURING"]
_FLAG_STATES = {"CONFIGURING": "RUNNING"}

_ACTIVE_STATES = frozenset(
    {JobState.PENDING, JobState.RUNNING, JobState.SUSPENDED, JobState.COMPLETING, JobState.REQUEUED,
     JobState.RESIZING}
)


@dataclass(frozen=True, slots=True)
class JobUsage:
    """What a job used, as Slurm accounting (sacct / slurmdbd) recorded it; zero where nothing was gathered
    (`JobAcctGatherType=jobacct_gather/none` records no CPU time, memory or I/O)."""

    elapsed_s: int = 0           # wall time from start to end (or until now, while it runs)
    cpu_time_ms: int = 0         # user + system CPU time of all its steps (sacct TotalCPU)
    max_rss_bytes: int = 0       # the largest resident set of any task of any step (sacct MaxRSS)
    disk_read_bytes: int = 0     # bytes read from file systems by all steps (TRESUsageInTot fs/disk)
    disk_write_bytes: int = 0    # bytes written (TRESUsageOutTot fs/disk)

    def __add__(self, other: JobUsage) -> JobUsage:
        """The usage of two parts of one allocation (the components of a heterogeneous job)."""
        return JobUsage(max(self.elapsed_s, other.elapsed_s), self.cpu_time_ms + other.cpu_time_ms,
                        max(self.max_rss_bytes, other.max_rss_bytes),
                        self.disk_read_bytes + other.disk_read_bytes, self.disk_write_bytes + other.disk_write_bytes)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What Slurm says about one job (from squeue, sacct or their REST equivalents)."""

    job_id: str
    name: str
    state: JobState
    reason: str | None = None
    user: str | None = None
    account: str | None = None
    partition: str | None = None
    comment: str | None = None
    nodes: tuple[str, ...] = ()
    exit_code: int | None = None
    signal: int | None = None
    submit_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    het_job_id: str | None = None
    het_job_offset: int | None = None
    tres_alloc: Mapping[str, str] = field(default_factory=dict)
    stdout: str | None = None
    usage: JobUsage | None = None                # from accounting only (history); squeue reports none
