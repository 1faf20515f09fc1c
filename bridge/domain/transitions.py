"""The one transition rule of a session: from its current status and what was observed (one look at its
Slurm job, as `status_from_job` reads it, or something the gateway did), the new status, the result and
the events to publish, in order; or None: no change (a terminal status never changes).

The event names are the exact strings Backend.AI clients read from `GET /events/session` (SSE) and from
callbacks; `EventName` is a StrEnum, so a member is its wire string.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bridge.domain.session import Observed, SessionResult, SessionStatus


class EventName(StrEnum):
    """Session lifecycle events, as the clients see them."""

    SESSION_ENQUEUED = "session_enqueued"
    SESSION_PENDING = "session_pending"
    SESSION_SCHEDULED = "session_scheduled"
    SESSION_PREPARING = "session_preparing"
    SESSION_STARTED = "session_started"
    SESSION_RESTARTING = "session_restarting"
    SESSION_TERMINATING = "session_terminating"
    SESSION_TERMINATED = "session_terminated"
    SESSION_CANCELLED = "session_cancelled"
    SESSION_SUCCESS = "session_success"
    SESSION_FAILURE = "session_failure"
    KERNEL_STARTED = "kernel_started"


# a session's circuits are cut on these (the tunnels); its end hooks run on all but TERMINATING
ENDED = frozenset({EventName.SESSION_TERMINATING, EventName.SESSION_TERMINATED, EventName.SESSION_CANCELLED,
                   EventName.SESSION_FAILURE, EventName.SESSION_SUCCESS})
# the last event about a session: an SSE stream about it ends after it (`server_close`)
FINAL = frozenset({EventName.SESSION_TERMINATED, EventName.SESSION_CANCELLED})
# the events whose payload carries the session's result, and those that always carry its exit code
WITH_RESULT = frozenset({EventName.SESSION_TERMINATED, EventName.SESSION_SUCCESS, EventName.SESSION_FAILURE})
WITH_EXIT_CODE = frozenset({EventName.SESSION_SUCCESS, EventName.SESSION_FAILURE})

# events a status change seen in Slurm emits, in order (the clients wait for started / success / failure /
# terminated)
_ENTERED: dict[SessionStatus, tuple[EventName, ...]] = {
    SessionStatus.RUNNING: (EventName.SESSION_SCHEDULED, EventName.SESSION_PREPARING, EventName.SESSION_STARTED),
    SessionStatus.TERMINATING: (EventName.SESSION_TERMINATING,),
    SessionStatus.RESTARTING: (EventName.SESSION_RESTARTING,),
    SessionStatus.CANCELLED: (EventName.SESSION_CANCELLED,),
    SessionStatus.ERROR: (EventName.SESSION_FAILURE, EventName.SESSION_TERMINATED),
}
_OUTCOME: dict[SessionResult, tuple[EventName, ...]] = {
    SessionResult.SUCCESS: (EventName.SESSION_SUCCESS,), SessionResult.FAILURE: (EventName.SESSION_FAILURE,)}

# a job unknown to squeue and sacct for `lost_after_s` (the watcher)
LOST = Observed(SessionStatus.ERROR, "lost: the job is unknown to squeue and sacct")


class Happening(StrEnum):
    """What the gateway itself did to a session."""

    ENQUEUED = "enqueued"              # accepted: submitted, pulling its image first, or deferred (an outage)
    SUBMITTED = "submitted"            # its job reached Slurm at last (after the pull, or the outage)
    TERMINATE = "terminate"            # a destroy or a forced freeze: scancel its job, or cancel it if it has none
    IDLE_TERMINATE = "idle_terminate"  # an idle check ends a running session
    RESTART = "restart"                # a fresh job replaces the running or pending one
    START_FAILED = "start_failed"      # its pull, or its deferred submission, failed
    ABANDONED = "abandoned"            # found at start-up without a job: the gateway stopped before sbatch


@dataclass(frozen=True, slots=True)
class GatewayEvent:
    what: Happening
    reason: str | None = None          # the status_info it leaves (ENQUEUED: None keeps the current one)


@dataclass(frozen=True, slots=True)
class Current:
    """What the rule needs of a session as it is now."""

    status: SessionStatus
    status_info: str | None = None
    has_job: bool = False              # a Slurm job id is recorded
    scheduled: bool = False            # Slurm has reported its job's start time (scheduled_at)


@dataclass(frozen=True, slots=True)
class Transition:
    status: SessionStatus
    status_info: str | None
    events: tuple[EventName, ...] = ()
    result: SessionResult | None = None   # set with exit_code when the session ends; None: left as it is
    exit_code: int | None = None


def transition(current: Current, observed: Observed | GatewayEvent) -> Transition | None:
    """The new status, result and events of a session; None: nothing changes (and nothing is published)."""
    if current.status.is_terminal:
        return None
    if isinstance(observed, GatewayEvent):
        return _gateway(current, observed)
    return _slurm(current, observed)


def _slurm(current: Current, seen: Observed) -> Transition | None:
    before, after = current.status, seen.status
    if before is SessionStatus.TERMINATING and after in (SessionStatus.RUNNING, SessionStatus.PENDING):
        return None  # scancel is on its way; keep showing TERMINATING
    if before is SessionStatus.RESTARTING and after is SessionStatus.PENDING:
        return None  # the replacement job waits for its turn; still restarting
    if (before, current.status_info) == (after, seen.status_info):
        return None
    result, code = (seen.result, seen.exit_code) if after.is_terminal else (None, None)
    events: tuple[EventName, ...]
    if after is before:
        events = (EventName.SESSION_PENDING,) if after is SessionStatus.PENDING else ()  # a new pending reason
    elif after is SessionStatus.TERMINATED:
        # a job that ran and ended between two looks still reports that it started
        ran_unseen = before not in (SessionStatus.RUNNING, SessionStatus.TERMINATING) and current.scheduled
        events = (*(_ENTERED[SessionStatus.RUNNING] if ran_unseen else ()), *_OUTCOME.get(seen.result, ()),
                  EventName.SESSION_TERMINATED)
    else:
        events = _ENTERED.get(after, ())
    return Transition(after, seen.status_info, events, result, code)


def _gateway(current: Current, ev: GatewayEvent) -> Transition | None:
    status, what = current.status, ev.what
    if what is Happening.ENQUEUED:
        info = current.status_info if ev.reason is None else ev.reason
        return Transition(status, info, (EventName.SESSION_ENQUEUED,))
    if what is Happening.SUBMITTED:
        if status not in (SessionStatus.PULLING, SessionStatus.PENDING):
            return None  # destroyed while sbatch ran: its job is cancelled, no orphan
        return Transition(SessionStatus.PENDING, None, (EventName.SESSION_PENDING,))
    if what is Happening.TERMINATE:
        if current.has_job:
            return Transition(SessionStatus.TERMINATING, ev.reason, (EventName.SESSION_TERMINATING,))
        return Transition(SessionStatus.CANCELLED, ev.reason, (EventName.SESSION_CANCELLED,))
    if what is Happening.IDLE_TERMINATE:
        if status is not SessionStatus.RUNNING:
            return None
        return Transition(SessionStatus.TERMINATING, ev.reason, (EventName.SESSION_TERMINATING,))
    if what is Happening.RESTART:
        if status not in (SessionStatus.RUNNING, SessionStatus.PENDING):
            return None
        return Transition(SessionStatus.RESTARTING, ev.reason, (EventName.SESSION_RESTARTING,))
    if what is Happening.START_FAILED:
        return Transition(SessionStatus.ERROR, (ev.reason or "")[:500],
                          (EventName.SESSION_FAILURE, EventName.SESSION_TERMINATED), SessionResult.FAILURE)
    # ABANDONED: ended without an event (nobody waits for a session the gateway forgot in a crash)
    if current.has_job:
        return None
    info = ("failed-to-start: the gateway stopped during the image pull" if status is SessionStatus.PULLING
            else "failed-to-start: the gateway stopped before sbatch")
    return Transition(SessionStatus.CANCELLED, info)


def final_event(status: SessionStatus) -> EventName:
    """The event that tells a late listener how an ended session ended (SSE)."""
    return EventName.SESSION_CANCELLED if status is SessionStatus.CANCELLED else EventName.SESSION_TERMINATED
