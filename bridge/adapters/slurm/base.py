"""The `SlurmClient` Protocol and the plain values it takes and returns.

Batch-first: `jobs()` and `history()` answer for many jobs in one Slurm call, so a watcher makes
O(1) calls per tick whatever the number of sessions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bridge.domain.jobs import JobInfo, JobState
from bridge.domain.nodes import NodeInfo as NodeInfo
from bridge.domain.nodes import PartitionInfo as PartitionInfo
from bridge.domain.nodes import gres_count as gres_count

__all__ = ["JobInfo", "JobSpec", "JobState", "NodeInfo", "PartitionInfo", "SlurmClient", "gres_count"]


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One batch job (or one component of a heterogeneous job) as Slurm should run it."""

    name: str
    script: str
    account: str | None = None
    partition: str | None = None
    nodes: int = 1
    ntasks: int = 1
    cpus_per_task: int = 1
    mem_per_node_mb: int | None = None
    gpus_per_node: int = 0
    gres: str | None = None                      # raw gres (e.g. "shard:2"), beside gpus_per_node
    time_limit_min: int | None = None
    begin: datetime | None = None
    dependency: str | None = None                # e.g. "afterok:12:13"
    kill_on_invalid_dependency: bool = True
    comment: str | None = None                   # the gateway's job tag
    workdir: str = "/tmp"
    stdout: str | None = None
    stderr: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)

    def tres_per_node(self) -> str | None:
        parts = []
        if self.gpus_per_node:
            parts.append(f"gres/gpu:{self.gpus_per_node}")
        if self.gres:
            parts.append("gres/" + self.gres.removeprefix("gres/"))
        return ",".join(parts) or None


class SlurmClient(Protocol):
    """Submit, cancel and read Slurm jobs. Every method raises SlurmError (or CommandFailed) on failure."""

    async def submit(self, spec: JobSpec | Sequence[JobSpec], *, user: str) -> str:
        """Submit as `user`; a list of specs is one heterogeneous job. Returns the job id.

        Raises:
            SlurmRejected: Slurm refused the job (invalid account, impossible request...).
        """
        ...

    async def cancel(self, job_ids: Sequence[str], *, user: str | None = None, signal: str | None = None) -> None:
        """Cancel (or signal) jobs; `user` None cancels with the client's administrative identity."""
        ...

    async def jobs(self, job_ids: Sequence[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        """Jobs still known to slurmctld (squeue), in ONE call. None: all jobs (of `user`, if given)."""
        ...

    async def job_states(self, job_ids: Sequence[str]) -> list[JobInfo]:
        """The watcher's look at these jobs, in ONE call: state, reason, nodes and start time only (no exit
        code, user or comment), as cheaply as the transport allows."""
        ...

    async def history(self, job_ids: Sequence[str], *, user: str | None = None) -> list[JobInfo]:
        """Accounting records (sacct / slurmdb) of the given jobs, in ONE call."""
        ...

    async def partitions(self) -> list[PartitionInfo]: ...

    async def nodes(self) -> list[NodeInfo]: ...

    async def set_nodes_schedulable(self, nodes: Sequence[str], schedulable: bool, *, reason: str = "") -> None:
        """Drain nodes (running jobs finish, no new ones start there) or resume them, as Slurm's operator
        (`scontrol update nodename=... state=drain|resume`)."""
        ...

    async def aclose(self) -> None:
        """Release connections (HTTP client, SSH sessions)."""
        ...
