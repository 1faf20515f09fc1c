"""Sessions accepted while the scheduler was unreachable: recorded PENDING without a job, then submitted
exactly once when it answers again (a job that already carries the session's tag is adopted), or ended in
ERROR when their submission is refused."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from bridge.adapters.db.tables import SessionRow
from bridge.domain.resources import parse_slots
from bridge.domain.session import DEFERRED, SessionStatus
from bridge.domain.transitions import Current, GatewayEvent, Happening, transition
from bridge.errors import BridgeError, SchedulerUnavailable
from bridge.services.session_reconcile import fail_unstarted, runs_for, set_status

if TYPE_CHECKING:
    from bridge.services.sessions import SessionService

logger = logging.getLogger(__name__)


async def defer(service: SessionService, session_id: str, dep_jobs: list[str | None], lifetime: int,
                why: SchedulerUnavailable) -> SessionRow:
    async with service.db.unit_of_work() as s:
        row = await s.get(SessionRow, session_id)
        assert row is not None
        change = transition(Current(SessionStatus(row.status), row.status_info), GatewayEvent(
            Happening.ENQUEUED, f"scheduler unreachable ({why.daemon}): submitted when it answers again"))
        assert change is not None   # a session just created
        set_status(row, change.status, change.status_info)
        row.status_data = {**(row.status_data or {}), DEFERRED: {"deps": [j for j in dep_jobs if j],
                                                                "lifetime": lifetime}}
    logger.warning("session %s accepted while %s is unreachable: submitted later", session_id, why.daemon)
    for name in change.events:
        service.publish(row, name)
    return row


async def deferred(service: SessionService) -> list[SessionRow]:
    async with service.db.unit_of_work() as s:
        rows = (await s.execute(select(SessionRow).where(
            SessionRow.status == SessionStatus.PENDING.value, SessionRow.job_id.is_(None)))).scalars()
        return [r for r in rows if DEFERRED in (r.status_data or {})]


async def submit_deferred(service: SessionService) -> int:
    """Submit the sessions accepted while the scheduler was unreachable, each exactly once: a job that
    already carries a session's tag (an sbatch that went through although it seemed to fail) is adopted.
    Returns how many were submitted or adopted; raises SchedulerUnavailable while it still is."""
    waiting = await deferred(service)
    if not waiting:
        return 0
    tagged = {j.comment: j for j in await service.slurm.jobs() if j.comment}
    done = 0
    for row in waiting:
        plan = (row.status_data or {})[DEFERRED]
        job = tagged.get(row.job_tag)
        if job is not None and not runs_for(row, job):   # a tag copied into another's job
            job = None
        if job is not None:
            job_id = job.job_id
        else:
            try:
                slots = parse_slots(row.resources, shards_per_gpu=service.settings.sessions.shards_per_gpu)
                job_id = await service._submit(row, slots, list(plan.get("deps") or []),
                                               policy_lifetime=int(plan.get("lifetime") or 0))
            except SchedulerUnavailable:
                raise
            except (BridgeError, ValueError) as e:
                await fail_unstarted(service, row.id, getattr(e, "msg", str(e)), was=SessionStatus.PENDING)
                continue
        async with service.db.unit_of_work() as s:
            fresh = await s.get(SessionRow, row.id, with_for_update=True)
            assert fresh is not None
            fresh.job_id = job_id
            fresh.status_data = {k: v for k, v in (fresh.status_data or {}).items() if k != DEFERRED}
            # destroyed while sbatch ran (no longer PENDING): None, and its job is cancelled (no orphan)
            change = transition(Current(SessionStatus(fresh.status), fresh.status_info, has_job=True),
                                GatewayEvent(Happening.SUBMITTED))
            if change is not None:
                set_status(fresh, change.status, change.status_info)
            row = fresh
        if change is None:
            await service.slurm.cancel([job_id])
            continue
        done += 1
        for name in change.events:
            service.publish(row, name)
    return done
