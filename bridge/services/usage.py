"""Usage and statistics of sessions (`/resource/usage/*`, `/resource/stats/*`), from Slurm accounting.

What a session was *given* comes from its row (its slots times its kernels); what it *used* (CPU time, peak
memory, bytes read and written, elapsed time) comes from Slurm accounting for its job, read for all the
sessions of a request in one `history()` call. Accounting records of finished jobs no longer change, so
their usage is kept in memory; `forget()` (POST /resource/recalculate-usage) drops it, and the next request
reads accounting again. Sessions still running are read each time. docs/usage.md.

The answers follow the shapes of Backend.AI manager 23.09: a list of projects with `g_*` totals and one
`c_infos` entry per session for the usage endpoints, and 2880 bins of 15 minutes over the last 30 days
for the statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import and_, or_, select

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import GroupRow, SessionRow, UserRow
from bridge.adapters.slurm.base import SlurmClient
from bridge.domain.jobs import JobUsage
from bridge.domain.resources import occupied, parse_binary_size
from bridge.domain.session import SessionStatus
from bridge.errors import InvalidAPIParameters

logger = logging.getLogger(__name__)

# sessions that were given resources: ended ones that had a job (CANCELLED ones never started), live ones
ENDED_STATUSES = (SessionStatus.TERMINATED, SessionStatus.ERROR)
LIVE_STATUSES = (SessionStatus.RUNNING, SessionStatus.RESTARTING, SessionStatus.TERMINATING)

BIN_S = 900                 # the statistics' time bins: 15 minutes
BINS = 30 * 24 * 4          # over 30 days
MAX_PERIOD = timedelta(days=100)
CACHE_LIMIT = 100_000       # finished jobs whose usage is kept


def _aware(d: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes; the gateway stores UTC."""
    return d if d is None or d.tzinfo else d.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One session as the usage endpoints need it: its row's facts and the names next to them."""

    id: str
    name: str
    job_id: str | None
    access_key: str
    domain_name: str
    group_id: str
    group_name: str
    email: str
    full_name: str
    image: str
    status: str
    status_info: str | None
    status_changed: datetime | None
    status_history: dict[str, Any]
    cluster_mode: str
    cluster_size: int
    nodes: tuple[str, ...]
    mounts: tuple[str, ...]
    resources: dict[str, Any]
    resource_opts: dict[str, Any]
    created_at: datetime
    terminated_at: datetime | None
    usage: JobUsage = field(default_factory=JobUsage)


# ---- pure builders of the answers -------------------------------------------------------------------------

def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def allocated(rec: UsageRecord) -> tuple[float, int, Decimal, int]:
    """(CPUs, memory bytes, GPUs (devices or fractional shares), shared memory bytes) a session held."""
    kernels = max(rec.cluster_size, 1)
    try:
        held = occupied(rec.resources, kernels)
    except ValueError:
        held = {}
    gpus = Decimal(int(held.get("cuda.device", 0)))
    if "cuda.shares" in rec.resources:
        gpus = _decimal(rec.resources["cuda.shares"]) * kernels
    shmem = rec.resource_opts.get("shmem")
    try:
        shmem_bytes = parse_binary_size(shmem if isinstance(shmem, int) else str(shmem)) if shmem else 0
    except ValueError:
        shmem_bytes = 0
    return float(held.get("cpu", 0)), int(held.get("mem", 0)), gpus, shmem_bytes


def container_info(rec: UsageRecord, tz: tzinfo = UTC) -> dict[str, Any]:
    """One `c_infos` entry: a session (the gateway runs one Slurm job per session, not one per kernel)."""
    cpu, mem, gpus, shmem = allocated(rec)
    created, ended = _aware(rec.created_at), _aware(rec.terminated_at)
    assert created is not None
    used_time = str(ended - created) if ended else None
    used_days = (ended.astimezone(tz).toordinal() - created.astimezone(tz).toordinal() + 1) if ended else None
    return {
        "id": rec.id,
        "session_id": rec.id,
        "container_id": rec.job_id,                      # the Slurm job that ran the session
        "domain_name": rec.domain_name,
        "group_id": rec.group_id,
        "group_name": rec.group_name,
        "name": rec.name,
        "access_key": rec.access_key,
        "email": rec.email,
        "full_name": rec.full_name,
        "agent": ",".join(rec.nodes) or None,            # the nodes it ran on
        "cpu_allocated": cpu,
        "cpu_used": float(rec.usage.cpu_time_ms),        # msec of CPU time, as the agents' cpu_used counts it
        "mem_allocated": mem,
        "mem_used": rec.usage.max_rss_bytes,
        "shared_memory": shmem,
        "disk_allocated": 0,
        "disk_used": 0,                                  # Slurm accounts no scratch space
        "io_read": rec.usage.disk_read_bytes,
        "io_write": rec.usage.disk_write_bytes,
        "used_time": used_time,
        "used_days": used_days,
        "device_type": [],
        "smp": 0.0,
        "gpu_mem_allocated": 0.0,
        "gpu_allocated": float(gpus),
        "nfs": sorted(set(rec.mounts)) or None,
        "image_id": rec.image,
        "image_name": rec.image,
        "created_at": str(created),
        "terminated_at": str(ended),
        "status": rec.status,
        "status_info": rec.status_info,
        "status_changed": str(_aware(rec.status_changed)),
        "status_history": rec.status_history or {},
        "cluster_mode": rec.cluster_mode,
    }


_SUMMED = ("cpu_allocated", "cpu_used", "mem_allocated", "mem_used", "shared_memory", "disk_allocated",
           "disk_used", "io_read", "io_write", "smp", "gpu_mem_allocated", "gpu_allocated")


def per_group(records: Iterable[UsageRecord], tz: tzinfo = UTC) -> list[dict[str, Any]]:
    """The usage answer: one entry per project, in the order its first session comes, with the sums."""
    groups: dict[str, dict[str, Any]] = {}
    for rec in records:
        c = container_info(rec, tz)
        g = groups.get(rec.group_id)
        if g is None:
            g = groups[rec.group_id] = {"domain_name": rec.domain_name, "g_id": rec.group_id,
                                        "g_name": rec.group_name}
            for key in _SUMMED:
                g["g_" + key] = c[key]
            g["g_device_type"] = list(c["device_type"])
            g["c_infos"] = [c]
            continue
        for key in _SUMMED:
            g["g_" + key] += c[key]
        g["g_device_type"] = sorted(set(g["g_device_type"]) | set(c["device_type"]))
        g["c_infos"].append(c)
    return list(groups.values())


_METRICS = (("num_sessions", "count"), ("cpu_allocated", "count"), ("mem_allocated", "bytes"),
            ("gpu_allocated", "count"), ("io_read_bytes", "bytes"), ("io_write_bytes", "bytes"),
            ("disk_used", "bytes"))


def time_bins(records: Iterable[UsageRecord], start: datetime) -> list[dict[str, Any]]:
    """2880 bins of 15 minutes from `start`: in each, the sessions that lived in it and what they held."""
    start_ts = start.timestamp()
    totals: list[dict[str, Any]] = [dict.fromkeys((name for name, _ in _METRICS), 0) for _ in range(BINS)]
    for rec in records:
        created, ended = _aware(rec.created_at), _aware(rec.terminated_at)
        if created is None or ended is None:
            continue
        cpu, mem, gpus, _ = allocated(rec)
        first = max(int((created.timestamp() - start_ts) // BIN_S), 0)
        last = int((ended.timestamp() - start_ts) // BIN_S) + 1
        for t in totals[first:last]:
            t["num_sessions"] += 1
            t["cpu_allocated"] += int(cpu)
            t["mem_allocated"] += mem
            t["gpu_allocated"] += gpus
            t["io_read_bytes"] += rec.usage.disk_read_bytes
            t["io_write_bytes"] += rec.usage.disk_write_bytes
    out = []
    for i, t in enumerate(totals):
        t["gpu_allocated"] = float(t["gpu_allocated"])
        entry: dict[str, Any] = {"date": start_ts + i * BIN_S}
        for name, unit in _METRICS:
            entry[name] = {"value": t[name], "unit_hint": unit}
        out.append(entry)
    return out


def month_period(month: str, tz: tzinfo = UTC) -> tuple[datetime, datetime]:
    """"YYYYMM" -> [first day, first day of the next month) in `tz`."""
    try:
        if len(month) != 6 or not month.isdigit():
            raise ValueError(month)
        start = datetime.strptime(month, "%Y%m").replace(tzinfo=tz)
    except ValueError:
        raise InvalidAPIParameters("Invalid date values") from None
    nxt = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start, datetime(nxt.year, nxt.month, 1, tzinfo=tz)


def day_period(start_date: str, end_date: str, tz: tzinfo = UTC) -> tuple[datetime, datetime]:
    """"YYYYMMDD", "YYYYMMDD" -> [start, the day after end): at most 100 days, end not before start."""
    try:
        if not all(len(d) == 8 and d.isdigit() for d in (start_date, end_date)):
            raise ValueError(start_date)
        start = datetime.strptime(start_date, "%Y%m%d").replace(tzinfo=tz)
        end = datetime.strptime(end_date, "%Y%m%d").replace(tzinfo=tz) + timedelta(days=1)
    except ValueError:
        raise InvalidAPIParameters("Invalid date values") from None
    if end - start > MAX_PERIOD:
        raise InvalidAPIParameters("Cannot query more than 100 days")
    if end <= start:
        raise InvalidAPIParameters("end_date must be later than start_date.")
    return start, end


# ---- the use case -----------------------------------------------------------------------------------------

class UsageService:
    def __init__(self, db: Database, slurm: SlurmClient, *, tz: tzinfo = UTC,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db, self.slurm, self.tz, self.clock = db, slurm, tz, clock
        self._final: dict[str, JobUsage] = {}     # job id -> usage, for jobs accounting reports finished

    def forget(self) -> int:
        """Drop the usage kept for finished jobs: the next answers read accounting again. How many it held."""
        n = len(self._final)
        self._final.clear()
        return n

    async def usage(self, job_ids: Sequence[str]) -> dict[str, JobUsage]:
        """Usage per job id, from accounting in ONE call for every job not known to have finished."""
        wanted = list(dict.fromkeys(j for j in job_ids if j))
        out = {j: self._final[j] for j in wanted if j in self._final}
        ask = [j for j in wanted if j not in out]
        if not ask:
            return out
        asked = set(ask)
        finished: dict[str, bool] = {}
        for rec in await self.slurm.history(ask):
            # a heterogeneous job: its components come as records of their own, under the leader's id
            owner = rec.het_job_id if rec.het_job_id in asked else rec.job_id
            if owner not in asked:
                continue
            part = rec.usage or JobUsage()
            out[owner] = out[owner] + part if owner in out else part
            finished[owner] = finished.get(owner, True) and rec.state.is_finished
        if len(self._final) > CACHE_LIMIT:
            self._final.clear()
        self._final.update({j: out[j] for j, done in finished.items() if done})
        return out

    async def _records(self, where: Any) -> list[UsageRecord]:
        query = (select(SessionRow, GroupRow.name, UserRow.email, UserRow.full_name)
                 .join(GroupRow, GroupRow.id == SessionRow.group_id)
                 .join(UserRow, UserRow.uuid == SessionRow.user_uuid)
                 .where(where))
        async with self.db.unit_of_work() as s:
            rows = (await s.execute(query)).all()
        records = [UsageRecord(
            id=r.id, name=r.name, job_id=r.job_id, access_key=r.access_key, domain_name=r.domain_name,
            group_id=r.group_id, group_name=gname, email=email, full_name=full_name or "", image=r.image,
            status=r.status, status_info=r.status_info, status_changed=r.status_changed,
            status_history=dict(r.status_history or {}), cluster_mode=r.cluster_mode,
            cluster_size=r.cluster_size, nodes=tuple(r.nodes or ()), mounts=tuple(str(m) for m in r.mounts or ()),
            resources=dict(r.resources or {}), resource_opts=dict(r.resource_opts or {}),
            created_at=r.created_at, terminated_at=r.terminated_at,
        ) for r, gname, email, full_name in rows]
        used = await self.usage([r.job_id for r in records if r.job_id])
        records = [_with_usage(r, used.get(r.job_id or "")) for r in records]
        # ended sessions by end time, then the ones still running
        far = datetime.max.replace(tzinfo=UTC)
        records.sort(key=lambda r: (_aware(r.terminated_at) or far, _aware(r.created_at) or far))
        return records

    async def period(self, start: datetime, end: datetime, group_ids: Sequence[str] | None = None
                     ) -> list[dict[str, Any]]:
        """Sessions that held resources during [start, end), per project (`group_ids`: only those)."""
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        where = or_(
            and_(SessionRow.terminated_at >= start, SessionRow.created_at < end,
                 SessionRow.status.in_([s.value for s in ENDED_STATUSES]), SessionRow.job_id.is_not(None)),
            and_(SessionRow.created_at < end, SessionRow.status.in_([s.value for s in LIVE_STATUSES])),
        )
        if group_ids:
            where = and_(where, SessionRow.group_id.in_(list(group_ids)))
        return per_group(await self._records(where), self.tz)

    async def month(self, month: str, group_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return await self.period(*month_period(month, self.tz), group_ids)

    async def days(self, start_date: str, end_date: str, group_id: str | None = None) -> list[dict[str, Any]]:
        start, end = day_period(start_date, end_date, self.tz)
        return await self.period(start, end, [group_id] if group_id else None)

    async def monthly_stats(self, user_uuid: str | None = None) -> list[dict[str, Any]]:
        """15-minute bins over the last 30 days of the sessions that ended in them (of one user, or all)."""
        start = self.clock() - timedelta(days=30)
        where = and_(SessionRow.terminated_at >= start.astimezone(UTC),
                     SessionRow.status.in_([s.value for s in ENDED_STATUSES]), SessionRow.job_id.is_not(None))
        if user_uuid is not None:
            where = and_(where, SessionRow.user_uuid == user_uuid)
        return time_bins(await self._records(where), start)


def _with_usage(rec: UsageRecord, usage: JobUsage | None) -> UsageRecord:
    return rec if usage is None else replace(rec, usage=usage)
