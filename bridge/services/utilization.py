"""Live utilization and idle checks of every running session, in ONE periodic task (never a timer per
session): each `sessions.stats_interval_s` it reads all running jobs' step statistics in one `sstat` call,
keeps each session's `live_stat` in memory (as Backend.AI keeps it in Redis), runs the idle checks and
terminates the sessions whose check expired (status_info `idle-timeout`, `idle-session-lifetime`,
`idle-utilization`). When a session has ended, one `sacct` call for all that ended gives its `last_stat`,
stored in its status_data. docs/sessions.md#utilization-and-idle-checks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import KeypairResourcePolicyRow, KeypairRow, ScalingGroupRow, SessionRow
from bridge.config import SessionSettings
from bridge.domain import utilization as rules
from bridge.domain.jobs import JobInfo
from bridge.domain.session import SessionStatus
from bridge.domain.transitions import Current, GatewayEvent, Happening, transition
from bridge.domain.utilization import Check, Usage, UtilizationRule, UtilizationSeries
from bridge.errors import BridgeError
from bridge.services.sessions import SessionService, aware, set_status
from bridge.services.tunnels import TunnelRegistry

logger = logging.getLogger(__name__)
CHECKERS = ("network_timeout", "session_lifetime", "utilization")


class UsageReader(Protocol):
    async def running(self, job_ids: Sequence[str], *, user: str | None = None) -> dict[str, Usage]: ...


def ended_usage(jobs: Sequence[JobInfo], at: float) -> dict[str, Usage]:
    """The totals accounting (`SlurmClient.history`, one sacct for all) recorded for ended jobs; a job with
    nothing gathered (jobacct_gather/none: all zero) is left out, as not measured."""
    out = {}
    for job in jobs:
        u = job.usage
        if u is None or not (u.cpu_time_ms or u.max_rss_bytes or u.disk_read_bytes or u.disk_write_bytes):
            continue
        out[job.job_id] = Usage(cpu_s=u.cpu_time_ms / 1000, mem_bytes=0, mem_max_bytes=u.max_rss_bytes,
                                io_read_bytes=u.disk_read_bytes, io_write_bytes=u.disk_write_bytes, at=at)
    return out


@dataclass
class _Live:
    job_id: str
    unix_user: str
    usage: Usage | None = None
    stat: dict[str, Any] | None = None
    kernels: list[dict[str, Any]] = field(default_factory=list)
    series: UtilizationSeries = field(default_factory=UtilizationSeries)
    checks: dict[str, Check] = field(default_factory=dict)
    mem_peak: int = 0


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _shape(row: SessionRow) -> tuple[int, float, int | None, float]:
    """(kernels, CPUs, memory bytes, GPUs) of the whole session: the slots are per kernel."""
    n = max(row.cluster_size or 1, 1)
    r = row.resources or {}
    mem = int(_num(r.get("mem"))) * n or None
    gpus = (_num(r.get("cuda.device")) + _num(r.get("cuda.shares"))) * n
    return n, max(_num(r.get("cpu")), 1.0) * n, mem, gpus


def _stats(row: SessionRow, now: Usage, cpu_rate: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    n, _cpus, mem, gpus = _shape(row)
    session = rules.live_stat(now, cpu_rate=cpu_rate, mem_capacity=mem, gpus=gpus)
    kernels = [rules.live_stat(now, cpu_rate=cpu_rate, mem_capacity=mem, share=n, gpus=gpus)] * n if n > 1 \
        else [session]
    return session, kernels


class UtilizationMonitor:
    def __init__(self, db: Database, sessions: SessionService, reader: UsageReader | None,
                 tunnels: TunnelRegistry | None, settings: SessionSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.sessions, self.reader, self.tunnels = db, sessions, reader, tunnels
        self.settings, self.clock = settings, clock
        self.live: dict[str, _Live] = {}
        self.ticks = 0
        self.terminated = 0
        self._last_error: str | None = None
        idle = settings.idle
        self.rule = UtilizationRule(dict(idle.utilization_thresholds), idle.utilization_window_s,
                                    idle.utilization_grace_s, idle.utilization_operator) \
            if idle.utilization_thresholds else None

    # ---- the one periodic task ----------------------------------------------------------------------

    async def run(self) -> None:
        """Look at every running session every `stats_interval_s`, until cancelled."""
        while True:
            try:
                await self.tick()
            except Exception as e:   # database busy, ...: logged once per kind, the next tick tries again
                if str(e) != self._last_error:
                    logger.warning("utilization monitor tick failed: %s", e)
                self._last_error = str(e)
            await asyncio.sleep(self.settings.stats_interval_s)

    async def tick(self) -> list[tuple[str, str]]:
        """One look at every running session; returns the (session id, reason) it terminated."""
        self.ticks += 1
        async with self.db.unit_of_work() as s:
            rows = list((await s.execute(select(SessionRow).where(
                SessionRow.status == SessionStatus.RUNNING.value, SessionRow.job_id.is_not(None)))).scalars())
            policies = await self._policies(s, {r.access_key for r in rows})
            groups = {g.name: g.scheduler_opts or {} for g in (await s.execute(select(ScalingGroupRow).where(
                ScalingGroupRow.name.in_({r.partition for r in rows})))).scalars()}
        running = {r.id for r in rows}
        await self._finish([sid for sid in self.live if sid not in running])
        for r in rows:
            entry = self.live.get(r.id)
            if entry is None or entry.job_id != r.job_id:   # new, or restarted with a fresh job
                self.live[r.id] = _Live(r.job_id or "", r.unix_user)
        samples = await self._sample(rows)
        now = self.clock()
        ended: list[tuple[str, str]] = []
        for r in rows:
            entry = self.live[r.id]
            since = aware(r.started_at) or aware(r.created_at)
            running_since = since.timestamp() if since else now
            got = samples.get(r.job_id or "")
            if got is not None:
                rate = rules.cpu_rate_ms_per_s(got, entry.usage, running_since)
                entry.mem_peak = max(entry.mem_peak, got.mem_max_bytes, got.mem_bytes)
                got = _with_peak(got, entry.mem_peak)
                entry.stat, entry.kernels = _stats(r, got, rate)
                entry.usage = got
                _n, cpus, mem, gpus = _shape(r)
                if self.rule is not None:
                    entry.series.add(got.at, rules.utilization(got, cpu_rate=rate, cpus=cpus, mem_capacity=mem,
                                                               gpus=gpus), self.rule.window_s)
            entry.checks = self._checks(r, policies.get(r.access_key), entry, now, running_since,
                                        groups.get(r.partition, {}))
            reason = rules.first_expired(entry.checks)
            if reason and await self._terminate(r.id, r.job_id or "", reason):
                ended.append((r.id, reason))
        return ended

    async def _policies(self, s: Any, keys: set[str]) -> dict[str, KeypairResourcePolicyRow]:
        if not keys:
            return {}
        found = await s.execute(select(KeypairRow.access_key, KeypairResourcePolicyRow).join(
            KeypairResourcePolicyRow, KeypairResourcePolicyRow.name == KeypairRow.resource_policy).where(
            KeypairRow.access_key.in_(keys)))
        return {key: policy for key, policy in found.all()}

    async def _sample(self, rows: Sequence[SessionRow]) -> dict[str, Usage]:
        if self.reader is None or not rows:
            return {}
        try:
            if self.settings.stats_as == "owner":
                out: dict[str, Usage] = {}
                for user in sorted({r.unix_user for r in rows}):
                    out.update(await self.reader.running([r.job_id or "" for r in rows if r.unix_user == user],
                                                         user=user))
                return out
            return await self.reader.running([r.job_id or "" for r in rows])
        except BridgeError as e:   # sstat missing or refused: no live figures this time, the checks still run
            if str(e) != self._last_error:
                logger.warning("live utilization unavailable: %s", e)
            self._last_error = str(e)
            return {}

    def _checks(self, row: SessionRow, policy: KeypairResourcePolicyRow | None, entry: _Live, now: float,
                running_since: float, group_opts: dict[str, Any] | None = None) -> dict[str, Check]:
        """`group_opts`: the resource group's scheduler_opts, whose idle_timeout / max_session_lifetime
        (seconds) stand between the keypair policy's and the site's."""
        idle, opts = self.settings.idle, group_opts or {}
        timeout = rules.effective_limit(policy.idle_timeout if policy else None, idle.idle_timeout_s,
                                        _seconds(opts.get("idle_timeout")))
        lifetime = rules.effective_limit(policy.max_session_lifetime if policy else None,
                                         idle.max_session_lifetime_s, _seconds(opts.get("max_session_lifetime")))
        last, open_now = None, 0
        if self.tunnels is not None:
            traffic = self.tunnels.traffic.get(row.id)
            live = [c for c in self.tunnels.open_circuits.values() if c.session_id == row.id]
            open_now = len(live)
            last = max([traffic.last_activity if traffic else 0.0, *(c.last_activity for c in live)]) or None
        _n, _cpus, mem, gpus = _shape(row)
        allocated = ["cpu_util", *(["mem"] if mem else []), *(["cuda_util", "cuda_mem"] if gpus else [])]
        return {
            "network_timeout": rules.network_check(kind=row.type, timeout_s=timeout, now=now,
                                                   running_since=running_since, last_activity=last,
                                                   open_connections=open_now),
            "session_lifetime": rules.lifetime_check(lifetime_s=lifetime, now=now, running_since=running_since),
            "utilization": rules.utilization_check(self.rule, entry.series, now=now, running_since=running_since,
                                                   allocated=allocated),
        }

    async def _terminate(self, session_id: str, job_id: str, reason: str) -> bool:
        """End a session as a destroy does, with the idle check's reason: the watcher keeps the reason when it
        sees the job cancelled (status_data.termination_reason)."""
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionRow, session_id, with_for_update=True)
            if row is None or row.job_id != job_id:
                return False
            change = transition(Current(SessionStatus(row.status), row.status_info, has_job=True),
                                GatewayEvent(Happening.IDLE_TERMINATE, reason))
            if change is None:   # no longer RUNNING
                return False
            row.termination_requested = True
            row.status_data = {**(row.status_data or {}), "termination_reason": reason}
            set_status(row, change.status, change.status_info)
        logger.info("session %s: %s, terminating job %s", session_id, reason, job_id)
        self.terminated += 1
        try:
            await self.sessions.slurm.cancel([job_id], user=row.unix_user)
        except BridgeError as e:   # the session stays TERMINATING; the watcher tells how the job ends
            logger.warning("cancelling job %s of idle session %s: %s", job_id, session_id, e)
        for name in change.events:
            self.sessions.publish(row, name)
        self.sessions.wake_watcher.set()
        return True

    async def _finish(self, session_ids: list[str]) -> None:
        """Sessions that left RUNNING: once they have ended, their last_stat (sacct's totals, else the last
        live figures) is stored and their live entry dropped."""
        if not session_ids:
            return
        async with self.db.unit_of_work() as s:
            rows = {r.id: r for r in (await s.execute(select(SessionRow).where(
                SessionRow.id.in_(session_ids)))).scalars()}
        done = [sid for sid in session_ids if sid not in rows or SessionStatus(rows[sid].status).is_terminal
                or rows[sid].status == SessionStatus.PENDING.value]
        if not done:
            return
        totals: dict[str, Usage] = {}
        jobs = [self.live[sid].job_id for sid in done if sid in rows and self.live[sid].job_id]
        if jobs:
            try:
                totals = ended_usage(await self.sessions.slurm.history(jobs), time.time())
            except BridgeError as e:
                logger.info("last utilization from accounting unavailable: %s", e)
        async with self.db.unit_of_work() as s:
            for sid in done:
                entry = self.live.pop(sid)
                row = await s.get(SessionRow, sid, with_for_update=True)
                if row is None:
                    continue
                stat, kernels = entry.stat, entry.kernels
                total = totals.get(entry.job_id)
                if total is not None:
                    start, end = aware(row.started_at), aware(row.terminated_at)
                    elapsed = (end - start).total_seconds() if start and end else 0.0
                    rate = total.cpu_s * 1000 / elapsed if elapsed > 0 else 0.0
                    stat, kernels = _stats(row, _with_peak(total, max(entry.mem_peak, total.mem_max_bytes)), rate)
                if stat is not None:
                    row.status_data = {**(row.status_data or {}), "last_stat": stat,
                                       **({"kernel_last_stats": kernels} if len(kernels) > 1 else {})}

    # ---- what the API shows -----------------------------------------------------------------------

    def live_stat(self, session_id: str) -> dict[str, Any] | None:
        entry = self.live.get(session_id)
        return entry.stat if entry else None

    def kernel_stats(self, row: SessionRow) -> list[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
        """(live_stat, last_stat) of each kernel of the session."""
        n = max(row.cluster_size or 1, 1)
        entry = self.live.get(row.id)
        live = entry.kernels if entry and entry.kernels else [None] * n
        last = last_stats(row)
        return [(live[i] if i < len(live) else None, last[i] if i < len(last) else None) for i in range(n)]

    def idle_checks(self, row: SessionRow) -> dict[str, Any]:
        """Backend.AI's idle_checks report as of the last tick: {checker: {remaining, remaining_time_type,
        extra}}, remaining in seconds (-1: expired; null: the check does not apply)."""
        entry = self.live.get(row.id)
        if entry is None or not entry.checks or row.status != SessionStatus.RUNNING.value:
            return {name: {"remaining": None, "remaining_time_type": "grace_period" if name == "utilization"
                           else "expire_after", "extra": None} for name in CHECKERS}
        return {name: check.wire() for name, check in entry.checks.items()}


def last_stats(row: SessionRow) -> list[dict[str, Any] | None]:
    """Each kernel's last_stat as stored when the session ended."""
    data = row.status_data or {}
    n = max(row.cluster_size or 1, 1)
    kernels = data.get("kernel_last_stats")
    if isinstance(kernels, list) and len(kernels) == n:
        return list(kernels)
    return [data.get("last_stat")] * n if n == 1 else [None] * n


def _with_peak(u: Usage, peak: int) -> Usage:
    return Usage(cpu_s=u.cpu_s, mem_bytes=u.mem_bytes, mem_max_bytes=max(peak, u.mem_max_bytes),
                 io_read_bytes=u.io_read_bytes, io_write_bytes=u.io_write_bytes, gpu_util_pct=u.gpu_util_pct,
                 gpu_mem_bytes=u.gpu_mem_bytes, at=u.at)


def _seconds(value: Any) -> float | None:
    """A resource group's idle setting (seconds); anything that is not a number is no setting."""
    try:
        return float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
