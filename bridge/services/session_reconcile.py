"""Sessions and their Slurm jobs kept in agreement: whether a job is a session's own, a session's status
change as it is recorded, and the settling at start-up of what a crash left (tagged jobs adopted or
cancelled, sessions that never reached Slurm ended)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from bridge.adapters.db.tables import SessionRow, utcnow
from bridge.domain import slurm_notice
from bridge.domain.jobs import JobInfo
from bridge.domain.session import ACTIVE_STATUSES, DEFERRED, SessionStatus
from bridge.domain.transitions import Current, GatewayEvent, Happening, transition

if TYPE_CHECKING:
    from bridge.services.sessions import SessionService

logger = logging.getLogger(__name__)


def runs_for(row: SessionRow, job: JobInfo) -> bool:
    """Whether `job` is the session's own: the very tag the gateway gave it (signed where a notify secret is
    set: no one else can make it), on a job of the session's user. A tag copied onto another job is not."""
    return job.comment == row.job_tag and job.user in (None, row.unix_user)


def set_status(row: SessionRow, status: SessionStatus, info: str | None) -> bool:
    """Record a status change (and its time in status_history); False if nothing changed."""
    if row.status == status.value and row.status_info == info:
        return False
    now = utcnow()
    if row.status != status.value:
        row.status_history = {**(row.status_history or {}), status.value: now.isoformat()}
        row.status_changed = now
        if status is SessionStatus.RUNNING and row.started_at is None:
            row.started_at = now
        if status.is_terminal and row.terminated_at is None:
            row.terminated_at = now
    row.status = status.value
    row.status_info = info
    return True


async def fail_unstarted(service: SessionService, session_id: str, reason: str, *, was: SessionStatus) -> None:
    """A session that could not start (its pull, or its submission once the scheduler was back, failed):
    ERROR with the reason, unless it has moved on meanwhile (is no longer `was`)."""
    async with service.db.unit_of_work() as s:
        row = await s.get(SessionRow, session_id)
        if row is None or row.status != was.value:
            return
        change = transition(Current(was, row.status_info), GatewayEvent(Happening.START_FAILED, reason))
        if change is None:
            return
        set_status(row, change.status, change.status_info)
        row.result = change.result.value if change.result else row.result
        row.status_data = {k: v for k, v in (row.status_data or {}).items() if k != DEFERRED}
    logger.warning("session %s could not start: %s", session_id, reason)
    for name in change.events:
        service.publish(row, name)


async def reconcile(service: SessionService) -> dict[str, int]:
    """Settle what a crash left: adopt tagged jobs of sessions whose job id was never recorded, end the
    sessions that never reached Slurm, and cancel tagged jobs that belong to no live session."""
    prefix = service.settings.slurm.job_tag_prefix
    by_session: dict[str, list[JobInfo]] = {}   # a session's tag may be on more than one job (copied by a user)
    for j in await service.slurm.jobs():
        sid = slurm_notice.session_of(j.comment, prefix)
        if sid is not None:
            by_session.setdefault(sid, []).append(j)
    counts = {"adopted": 0, "never_submitted": 0, "cancelled_orphans": 0}
    async with service.db.unit_of_work() as s:
        rows = {r.id: r for r in (await s.execute(select(SessionRow).where(
            SessionRow.id.in_(list(by_session)) | (SessionRow.job_id.is_(None) & SessionRow.status.in_(
                [x.value for x in ACTIVE_STATUSES]))))).scalars()}
        for row in rows.values():
            if row.job_id is None and not SessionStatus(row.status).is_terminal:
                # adopted only if it is the very tag the gateway gave it (signed: no one else can make it) on
                # the session's own user's job
                job = next((j for j in by_session.get(row.id, []) if runs_for(row, j)), None)
                if job is not None:
                    row.job_id = job.job_id
                    counts["adopted"] += 1
                elif DEFERRED in (row.status_data or {}):
                    continue   # waits for the scheduler: the watcher submits it (or adopts its job)
                else:   # ended without an event (domain.transitions: ABANDONED)
                    change = transition(Current(SessionStatus(row.status), row.status_info),
                                        GatewayEvent(Happening.ABANDONED))
                    if change is not None:
                        set_status(row, change.status, change.status_info)
                    counts["never_submitted"] += 1
    orphans = [j for sid, found in by_session.items() for j in found if not j.state.is_finished and (
        sid not in rows or SessionStatus(rows[sid].status).is_terminal)]
    for job in orphans:
        await service.slurm.cancel([job.job_id])
        counts["cancelled_orphans"] += 1
    if any(counts.values()):
        logger.warning("reconciled sessions with Slurm: %s", counts)
    service.wake_watcher.set()
    return counts
