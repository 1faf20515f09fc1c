"""An in-memory Slurm: every method of the `SlurmClient` Protocol (bridge/adapters/slurm/base.py), with plain
semantics that tests can steer.

- `submit` gives increasing job ids and records the specs; a list of specs is one heterogeneous job whose
  components take consecutive ids (the leader's is the job's), as slurmctld numbers them. A job starts PENDING.
- `set_state` is the test's hand on the scheduler: RUNNING gives it nodes and a start time, a final state an
  end time (and an exit code); `forget` lets a job leave slurmctld's memory (`jobs` no longer lists it,
  `history` still does).
- `cancel` marks an active job CANCELLED; unknown or finished jobs are no error (as scancel); with a signal
  it only records the signal.
- `jobs` / `job_states` answer one entry per job (a heterogeneous job's components merged, nodes together);
  `history` one record per component, as sacct does; unknown ids are simply absent.
- `partitions` / `nodes` come from the constructor (a debug and a gpu partition, node n1, by default);
  `set_nodes_schedulable` drains or resumes known nodes and raises SlurmError for an unknown one.
- `accounts`: when given, a submission charged to another account is refused (SlurmRejected "Invalid account"),
  as sbatch refuses it; so is a partition the cluster does not have.

Checked against the Protocol by mypy (the assignment at the end; pyproject's mypy files list this module) and
at run time (tests/unit/test_slurm_contract.py compares the signatures).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bridge.adapters.slurm.base import JobInfo, JobSpec, JobState, NodeInfo, PartitionInfo, SlurmClient
from bridge.errors import SlurmError, SlurmRejected

PARTITIONS: tuple[PartitionInfo, ...] = (
    PartitionInfo("debug", "UP", ("n1", "n2"), 8, 2, None),
    PartitionInfo("gpu", "UP", ("n2",), 4, 1, 60),
)
NODES: tuple[NodeInfo, ...] = (
    NodeInfo("n1", ("IDLE",), 4, 0, 4000, 0, "gpu:2", "gpu:0", ("debug",), "127.0.0.1"),
)


@dataclass
class FakeJob:
    """One submitted job (all its components) and what the test said happened to it."""

    job_id: str
    specs: list[JobSpec]
    user: str
    state: JobState = JobState.PENDING
    reason: str | None = None
    nodes: tuple[str, ...] = ()
    exit_code: int | None = None
    submit_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    start_time: datetime | None = None
    end_time: datetime | None = None
    in_queue: bool = True                 # still known to slurmctld (squeue)
    signals: list[str] = field(default_factory=list)

    def component_ids(self) -> list[str]:
        return [str(int(self.job_id) + i) for i in range(len(self.specs))]


class FakeSlurm:
    # class-level defaults too, so that a subclass that does not call __init__ still reads partitions and nodes
    partition_list: list[PartitionInfo] = list(PARTITIONS)
    node_list: list[NodeInfo] = list(NODES)

    def __init__(self, partitions: Iterable[PartitionInfo] | None = None, nodes: Iterable[NodeInfo] | None = None,
                 *, accounts: Iterable[str] | None = None, first_job_id: int = 1000) -> None:
        self.partition_list = list(PARTITIONS if partitions is None else partitions)
        self.node_list = list(NODES if nodes is None else nodes)
        self.accounts = None if accounts is None else set(accounts)
        self.next_id = first_job_id
        self.job_table: dict[str, FakeJob] = {}
        self.cancelled: list[str] = []          # ids cancelled (without a signal), in order
        self.drained: dict[str, str] = {}       # node -> reason
        self.closed = False

    # ---- the test's hand ----

    def job(self, job_id: str) -> FakeJob:
        try:
            return self.job_table[job_id]
        except KeyError:
            raise SlurmError(f"Invalid job id specified: {job_id}") from None

    @property
    def submissions(self) -> list[FakeJob]:
        return list(self.job_table.values())

    def set_state(self, job_id: str, state: JobState, *, reason: str | None = None,
                  nodes: Sequence[str] | None = None, exit_code: int | None = None) -> FakeJob:
        j = self.job(job_id)
        now = datetime.now(UTC)
        j.state, j.reason = state, reason
        if state is JobState.RUNNING and j.start_time is None:
            j.start_time = now
            j.nodes = tuple(nodes) if nodes is not None else tuple(
                n.name for n in self.node_list[:max(1, sum(s.nodes for s in j.specs))])
        elif nodes is not None:
            j.nodes = tuple(nodes)
        if state.is_finished:
            j.end_time = j.end_time or now
            j.exit_code = exit_code if exit_code is not None else (0 if state is JobState.COMPLETED else 1)
        return j

    def forget(self, job_id: str) -> None:
        """The job leaves slurmctld's memory (MinJobAge passed): only accounting knows it now."""
        self.job(job_id).in_queue = False

    # ---- the Protocol ----

    async def submit(self, spec: JobSpec | Sequence[JobSpec], *, user: str) -> str:
        specs = [spec] if isinstance(spec, JobSpec) else list(spec)
        if not specs:
            raise SlurmRejected("no job component to submit")
        known = {p.name for p in self.partition_list}
        for s in specs:
            if self.accounts is not None and s.account is not None and s.account not in self.accounts:
                raise SlurmRejected("Invalid account or account/partition combination specified")
            if s.partition is not None and s.partition not in known:
                raise SlurmRejected("invalid partition specified")
        job_id = str(self.next_id)
        self.next_id += len(specs)
        self.job_table[job_id] = FakeJob(job_id, specs, user)
        return job_id

    async def cancel(self, job_ids: Sequence[str], *, user: str | None = None, signal: str | None = None) -> None:
        for job_id in job_ids:
            j = self.job_table.get(job_id)
            if j is None:
                continue                     # scancel: "Invalid job id" is no failure
            if signal:
                j.signals.append(signal)
                continue
            self.cancelled.append(job_id)
            if not j.state.is_finished:
                self.set_state(job_id, JobState.CANCELLED, exit_code=0)

    async def jobs(self, job_ids: Sequence[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        if job_ids is not None and not job_ids:
            return []
        wanted = None if job_ids is None else set(job_ids)
        return [self._info(j) for j in self.job_table.values()
                if j.in_queue and (wanted is None or j.job_id in wanted) and (user is None or j.user == user)]

    async def job_states(self, job_ids: Sequence[str]) -> list[JobInfo]:
        return [JobInfo(j.job_id, "", j.state, reason=j.reason, nodes=j.nodes, start_time=j.start_time)
                for j in await self.jobs(job_ids)] if job_ids else []

    async def history(self, job_ids: Sequence[str], *, user: str | None = None) -> list[JobInfo]:
        wanted = set(job_ids)
        out = []
        for j in self.job_table.values():
            if j.job_id not in wanted or (user is not None and j.user != user):
                continue
            if len(j.specs) == 1:
                out.append(self._info(j))
                continue
            for offset, (cid, spec) in enumerate(zip(j.component_ids(), j.specs, strict=True)):
                out.append(dataclasses.replace(self._info(j, spec), job_id=cid, het_job_id=j.job_id,
                                               het_job_offset=offset))
        return out

    async def partitions(self) -> list[PartitionInfo]:
        return list(self.partition_list)

    async def nodes(self) -> list[NodeInfo]:
        return [dataclasses.replace(n, state=(*n.state, "DRAIN")) if n.name in self.drained else n
                for n in self.node_list]

    async def set_nodes_schedulable(self, nodes: Sequence[str], schedulable: bool, *, reason: str = "") -> None:
        known = {n.name for n in self.node_list}
        for name in nodes:
            if name not in known:
                raise SlurmError(f"scontrol update: Invalid node name specified: {name}")
            if schedulable:
                self.drained.pop(name, None)
            else:
                self.drained[name] = reason or "drained through the gateway"

    async def aclose(self) -> None:
        self.closed = True

    def _info(self, j: FakeJob, spec: JobSpec | None = None) -> JobInfo:
        s = spec or j.specs[0]
        het = len(j.specs) > 1
        return JobInfo(
            job_id=j.job_id, name=s.name, state=j.state, reason=j.reason, user=j.user, account=s.account,
            partition=s.partition, comment=s.comment, nodes=j.nodes, exit_code=j.exit_code,
            submit_time=j.submit_time, start_time=j.start_time, end_time=j.end_time,
            het_job_id=j.job_id if het else None, het_job_offset=0 if het else None,
            stdout=s.stdout.replace("%j", j.job_id) if s.stdout else None)


_: SlurmClient = FakeSlurm()   # mypy: the fake has every method of the Protocol, with its signature
