"""The one Slurm watcher: every tick, ONE squeue call for all live sessions' jobs, and ONE sacct call for
those that left the queue; never a poll per session. It turns what it sees into session statuses and
events, backs off while nothing changes, and wakes up at once when a session is created or destroyed.

A job missing from squeue is not assumed finished: only accounting says how it ended. If neither knows
it for `lost_after_s`, the session is marked ERROR (lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bridge.adapters.callbacks import CallbackSender, HttpCallbacks
from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import SessionRow, utcnow
from bridge.adapters.outbound import RefusedDestination
from bridge.adapters.slurm.base import JobInfo, SlurmClient
from bridge.domain.destinations import Network
from bridge.domain.session import ACTIVE_STATUSES, Observed, SessionStatus, status_from_job
from bridge.domain.transitions import LOST, Current, Transition, transition
from bridge.errors import CallbackFailed, SchedulerUnavailable
from bridge.services.sessions import SessionService, aware, set_status

logger = logging.getLogger(__name__)

HOT_WINDOW_S = 60  # a session created this recently and still pending is watched at the floor interval


class SessionWatcher:
    def __init__(self, db: Database, slurm: SlurmClient, sessions: SessionService, *, floor_s: float,
                 max_s: float, lost_after_s: float, clock: Callable[[], float] = time.monotonic,
                 callbacks: CallbackSender | None = None) -> None:
        self.db, self.slurm, self.sessions = db, slurm, sessions
        self.callbacks: CallbackSender = callbacks or HttpCallbacks()
        self.floor_s, self.max_s, self.lost_after_s = floor_s, max_s, lost_after_s
        self.clock = clock
        self.interval_s = floor_s
        self.burst_s = min(0.1, floor_s)
        self.ticks = 0
        self.slurm_calls = 0
        self._missing_since: dict[tuple[str, str], float] = {}   # (session, job) -> first missed
        self.hot = False  # a session is starting or stopping: keep looking at the floor interval
        self._deferred_next, self._deferred_wait = 0.0, 1.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="slurm-watcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        last_error = None
        while True:
            try:
                changed = await self.tick()
                last_error = None
            except SchedulerUnavailable as e:   # an outage: logged once where it is seen (services/health)
                logger.debug("watcher: %s", e)
                changed, self.hot = False, False
            except Exception as e:  # database busy, ...: log once per kind of failure, back off, keep watching
                if str(e) != last_error:
                    logger.warning("watcher tick failed: %s", e)
                last_error, changed, self.hot = str(e), False, False
            self.interval_s = self.next_interval(changed or self.hot)
            wake = self.sessions.wake_watcher
            try:
                async with asyncio.timeout(self.interval_s):
                    await wake.wait()
                self.interval_s = self.burst_s / 2  # created or destroyed: look now, then after 0.1, 0.2 s...
            except TimeoutError:
                pass
            wake.clear()

    def next_interval(self, hot: bool) -> float:
        """After a wake-up: burst_s, doubling up to floor_s while sessions start or stop (a job that starts
        at once is seen within ~0.1 s, in a handful of batched calls); idle: doubling up to max_s."""
        if hot:
            return min(self.interval_s * 2, self.floor_s) if self.interval_s < self.floor_s else self.floor_s
        return min(max(self.interval_s, self.floor_s) * 2, self.max_s)

    async def _submit_deferred(self) -> None:
        """Sessions accepted while the scheduler was unreachable: submitted as soon as it answers, tried
        again after 1 s, 2 s, 4 s... up to 30 s while it does not."""
        if self.clock() < self._deferred_next:
            return
        try:
            n = await self.sessions.submit_deferred()
            self._deferred_wait = 1.0
            if n:
                logger.info("submitted %d session(s) accepted while the scheduler was unreachable", n)
        except SchedulerUnavailable:
            self._deferred_wait = min(self._deferred_wait * 2, 30.0)
        self._deferred_next = self.clock() + self._deferred_wait

    async def tick(self) -> bool:
        """One look at Slurm for every live session; True if any session changed."""
        t0 = time.perf_counter()
        try:
            return await self._tick()
        finally:
            self.sessions.metrics.watcher_tick.observe(time.perf_counter() - t0)

    async def _tick(self) -> bool:
        self.ticks += 1
        await self._submit_deferred()
        async with self.db.unit_of_work() as s:   # the columns a tick reads, not whole rows (JSON decoding)
            live = list((await s.execute(select(*LOOK_COLUMNS).where(
                SessionRow.status.in_([x.value for x in ACTIVE_STATUSES]),
                SessionRow.job_id.is_not(None)))).all())
        if not live:
            self.hot = False
            return False
        fresh = utcnow() - timedelta(seconds=HOT_WINDOW_S)
        self.hot = any(r.status in (SessionStatus.TERMINATING, SessionStatus.RESTARTING) or (
            r.status == SessionStatus.PENDING and aware(r.created_at) > fresh) for r in live)  # type: ignore[operator]
        ids = [r.job_id for r in live if r.job_id]
        self.slurm_calls += 1
        seen = {j.job_id: j for j in await self.slurm.job_states(ids)}
        ended = [j.job_id for j in seen.values() if j.state.is_finished]
        if ended:   # their exit codes and the rest: a full read of those few
            self.slurm_calls += 1
            seen.update({j.job_id: j for j in await self.slurm.jobs(ended)})
        missing = [i for i in ids if i not in seen]
        accounting = True
        if missing:
            self.slurm_calls += 1
            try:
                for j in await self.slurm.history(missing):
                    if j.het_job_offset in (None, 0):
                        seen[j.job_id] = j
            except SchedulerUnavailable:   # slurmdbd away: what left squeue is unknown until it answers
                accounting = False
        changed = False
        now = self.clock()
        for row in live:
            job_id = row.job_id or ""
            job = seen.get(job_id)
            if job is None:
                if not accounting:   # not "lost" while nobody could say: its clock starts again afterwards
                    self._missing_since.pop((row.id, job_id), None)
                    continue
                first = self._missing_since.setdefault((row.id, job_id), now)
                if now - first > self.lost_after_s:
                    changed |= await self._apply(row.id, job_id, None)
                continue
            self._missing_since.pop((row.id, job_id), None)
            if news(row, job):   # one transaction per session whose job changed, none for the others
                changed |= await self._apply(row.id, job_id, job)
        current = {(row.id, row.job_id or "") for row in live}   # a replaced or ended job's clock goes
        self._missing_since = {k: v for k, v in self._missing_since.items() if k in current}
        return changed

    async def _apply(self, session_id: str, job_id: str, job: JobInfo | None) -> bool:
        """Write what Slurm said of `job_id` to the session, unless the session has moved on to another job
        since the look (a restart replaced it): the old job's end is not the session's."""
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionRow, session_id, with_for_update=True)
            if row is None or SessionStatus(row.status).is_terminal or row.job_id != job_id:
                return False
            before = SessionStatus(row.status)
            if job is None:
                seen = LOST
            else:
                seen = observed(row, job)
                if job.nodes:
                    row.nodes = list(job.nodes)
                if job.start_time and row.scheduled_at is None and seen.status is not SessionStatus.PENDING:
                    row.scheduled_at = aware(job.start_time)
            # the one rule (domain.transitions): TERMINATING and RESTARTING hold, terminal never changes
            change = transition(Current(before, row.status_info, has_job=True,
                                        scheduled=row.scheduled_at is not None), seen)
            if change is None:
                return False
            set_status(row, change.status, change.status_info)
            if change.result is not None:   # it ended
                row.result = change.result.value
                row.exit_code = change.exit_code
            snapshot = _Snapshot(row)
        self._emit(snapshot, before, change)
        return True

    def _emit(self, row: Any, before: SessionStatus, change: Transition) -> None:
        for name in change.events:
            self.sessions.publish(row, name)
        if change.status is not before and row.callback_url:
            event = change.events[-1] if change.events else change.status.value.lower()
            asyncio.create_task(_callback(self.callbacks, row.callback_url, row.id, event,
                                          self.sessions.callback_networks))


# what a tick needs of each live session (`news`, the hot check); the rest is read only for the changed ones
LOOK_COLUMNS = (SessionRow.id, SessionRow.job_id, SessionRow.status, SessionRow.status_info, SessionRow.type,
                SessionRow.termination_requested, SessionRow.started_at, SessionRow.scheduled_at,
                SessionRow.created_at, SessionRow.nodes, SessionRow.status_data)


def observed(row: Any, job: JobInfo) -> Observed:
    return status_from_job(job, kind=row.type, termination_requested=row.termination_requested,
                           ever_ran=row.started_at is not None,
                           termination_reason=(row.status_data or {}).get("termination_reason") or "user-requested")


def news(row: Any, job: JobInfo) -> bool:
    """Whether what Slurm says of the job would change the session as read at the tick's start (its status,
    status_info, nodes or scheduled time): the others are left alone, without a transaction each."""
    seen = observed(row, job)
    if job.nodes and list(job.nodes) != list(row.nodes or []):
        return True
    if job.start_time and row.scheduled_at is None and seen.status is not SessionStatus.PENDING:
        return True
    return (row.status, row.status_info) != (seen.status.value, seen.status_info)


class _Snapshot:
    """The fields events and callbacks need, copied while the row is still attached."""

    def __init__(self, row: SessionRow) -> None:
        for f in ("id", "name", "access_key", "group_id", "domain_name", "status", "status_info", "result",
                  "exit_code", "callback_url", "started_at", "scheduled_at", "created_at"):
            setattr(self, f, getattr(row, f))


async def _callback(sender: CallbackSender, url: str, session_id: str, event: str,
                    allowed: Sequence[Network]) -> None:
    body = {"type": "session_lifecycle", "event": event, "session_id": session_id, "when": utcnow().isoformat()}
    try:
        await sender.send(url, body, allowed)
    except (CallbackFailed, RefusedDestination) as e:
        logger.info("callback to %s failed: %s", url, e.__cause__ or e)
