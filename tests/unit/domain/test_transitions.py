"""The one transition rule (bridge.domain.transitions): every current status against every observation the
gateway handles, as a table; and, for the Slurm side, the whole matrix against the rule as the watcher
wrote it before it moved to the domain (`_watcher_rule`, a transcription kept as the oracle)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from bridge.domain.jobs import JobInfo, JobState
from bridge.domain.session import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Observed,
    SessionResult,
    SessionStatus,
    status_from_job,
)
from bridge.domain.transitions import (
    FINAL,
    LOST,
    Current,
    EventName,
    GatewayEvent,
    Happening,
    Transition,
    final_event,
    transition,
)

S, E, R, H = SessionStatus, EventName, SessionResult, Happening
RUNNING_EVENTS = (E.SESSION_SCHEDULED, E.SESSION_PREPARING, E.SESSION_STARTED)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_event_names_are_the_wire_strings():
    assert {e.value for e in EventName} == {
        "session_enqueued", "session_pending", "session_scheduled", "session_preparing", "session_started",
        "session_restarting", "session_terminating", "session_terminated", "session_cancelled",
        "session_success", "session_failure", "kernel_started"}
    assert E.SESSION_STARTED == "session_started" and f"{E.KERNEL_STARTED}" == "kernel_started"
    assert final_event(S.CANCELLED) is E.SESSION_CANCELLED and E.SESSION_CANCELLED in FINAL
    assert final_event(S.TERMINATED) is final_event(S.ERROR) is E.SESSION_TERMINATED


# ---- what Slurm says --------------------------------------------------------------------------------------

def seen(status: S, info: str | None = None, result: R = R.UNDEFINED, code: int | None = None) -> Observed:
    return Observed(status, info, result, code)


@pytest.mark.parametrize(("current", "observed", "expected"), [
    # unchanged: nothing
    (Current(S.PENDING, "Priority"), seen(S.PENDING, "Priority"), None),
    (Current(S.RUNNING), seen(S.RUNNING), None),
    # a new pending reason
    (Current(S.PENDING, "Priority"), seen(S.PENDING, "Resources"),
     Transition(S.PENDING, "Resources", (E.SESSION_PENDING,))),
    # running, suspended, resumed (a new status_info of RUNNING says nothing)
    (Current(S.PENDING, "Priority"), seen(S.RUNNING), Transition(S.RUNNING, None, RUNNING_EVENTS)),
    (Current(S.RUNNING), seen(S.RUNNING, "suspended"), Transition(S.RUNNING, "suspended")),
    (Current(S.RUNNING, "suspended"), seen(S.RUNNING), Transition(S.RUNNING, None)),
    (Current(S.RESTARTING, "requeued"), seen(S.RUNNING), Transition(S.RUNNING, None, RUNNING_EVENTS)),
    (Current(S.RUNNING), seen(S.PENDING, "BeginTime"), Transition(S.PENDING, "BeginTime")),
    # completing, requeued
    (Current(S.RUNNING), seen(S.TERMINATING, "user-requested"),
     Transition(S.TERMINATING, "user-requested", (E.SESSION_TERMINATING,))),
    (Current(S.RUNNING), seen(S.RESTARTING, "requeued"),
     Transition(S.RESTARTING, "requeued", (E.SESSION_RESTARTING,))),
    # TERMINATING stays until the job ends; RESTARTING until the new job runs
    (Current(S.TERMINATING, "user-requested", has_job=True), seen(S.RUNNING), None),
    (Current(S.TERMINATING, "user-requested", has_job=True), seen(S.PENDING, "Priority"), None),
    (Current(S.RESTARTING, "user-requested", has_job=True), seen(S.PENDING, "Priority"), None),
    # ended: outcome, then terminated, with the result and exit code
    (Current(S.RUNNING, scheduled=True), seen(S.TERMINATED, "self-terminated", R.SUCCESS, 0),
     Transition(S.TERMINATED, "self-terminated", (E.SESSION_SUCCESS, E.SESSION_TERMINATED), R.SUCCESS, 0)),
    (Current(S.RUNNING, scheduled=True), seen(S.TERMINATED, "self-terminated", R.FAILURE, 3),
     Transition(S.TERMINATED, "self-terminated", (E.SESSION_FAILURE, E.SESSION_TERMINATED), R.FAILURE, 3)),
    (Current(S.RUNNING, scheduled=True), seen(S.TERMINATED, "self-terminated", R.UNDEFINED, 0),
     Transition(S.TERMINATED, "self-terminated", (E.SESSION_TERMINATED,), R.UNDEFINED, 0)),
    (Current(S.TERMINATING, "user-requested", scheduled=True), seen(S.TERMINATED, "user-requested"),
     Transition(S.TERMINATED, "user-requested", (E.SESSION_TERMINATED,), R.UNDEFINED)),
    # ran and ended between two looks: it still reports that it started
    (Current(S.PENDING, "Priority", scheduled=True), seen(S.TERMINATED, "self-terminated", R.SUCCESS, 0),
     Transition(S.TERMINATED, "self-terminated", (*RUNNING_EVENTS, E.SESSION_SUCCESS, E.SESSION_TERMINATED),
                R.SUCCESS, 0)),
    (Current(S.RESTARTING, "requeued", scheduled=True), seen(S.TERMINATED, "timeout", R.FAILURE, 0),
     Transition(S.TERMINATED, "timeout", (*RUNNING_EVENTS, E.SESSION_FAILURE, E.SESSION_TERMINATED),
                R.FAILURE, 0)),
    # never started
    (Current(S.PENDING, "Priority"), seen(S.TERMINATED, "failed-to-start", R.FAILURE, 1),
     Transition(S.TERMINATED, "failed-to-start", (E.SESSION_FAILURE, E.SESSION_TERMINATED), R.FAILURE, 1)),
    (Current(S.PENDING, "Dependency"), seen(S.CANCELLED, "cancelled: DependencyNeverSatisfied", R.FAILURE),
     Transition(S.CANCELLED, "cancelled: DependencyNeverSatisfied", (E.SESSION_CANCELLED,), R.FAILURE)),
    (Current(S.TERMINATING, "user-requested"), seen(S.CANCELLED, "user-requested"),
     Transition(S.CANCELLED, "user-requested", (E.SESSION_CANCELLED,), R.UNDEFINED)),
    # Slurm lost it, or it is lost to Slurm
    (Current(S.RUNNING), seen(S.ERROR, "slurm: node_fail", R.FAILURE, 1),
     Transition(S.ERROR, "slurm: node_fail", (E.SESSION_FAILURE, E.SESSION_TERMINATED), R.FAILURE, 1)),
    (Current(S.PENDING), LOST, Transition(S.ERROR, LOST.status_info, (E.SESSION_FAILURE, E.SESSION_TERMINATED),
                                          R.UNDEFINED)),
    # terminal statuses never change
    *[(Current(t, "x", has_job=True, scheduled=True), o, None) for t in TERMINAL_STATUSES
      for o in (seen(S.RUNNING), seen(S.PENDING, "p"), seen(S.TERMINATED, "self-terminated", R.SUCCESS, 0), LOST)],
])
def test_slurm_table(current, observed, expected):
    assert transition(current, observed) == expected


def _watcher_rule(before: S, info: str | None, scheduled: bool, o: Observed) -> tuple[bool, tuple[str, ...], object]:
    """SessionWatcher._apply and _emit as they were (the oracle): (changed, event names, result)."""
    if before.is_terminal:
        return False, (), None
    if before is S.TERMINATING and o.status in (S.RUNNING, S.PENDING):
        return False, (), None
    if before is S.RESTARTING and o.status is S.PENDING:
        return False, (), None
    if before.value == o.status.value and info == o.status_info:
        return False, (), None
    result = o.result.value if o.status.is_terminal else None
    after = o.status
    events = {S.RUNNING: ("session_scheduled", "session_preparing", "session_started"),
              S.TERMINATING: ("session_terminating",), S.RESTARTING: ("session_restarting",),
              S.CANCELLED: ("session_cancelled",), S.ERROR: ("session_failure", "session_terminated")}
    if after is before:
        return True, ("session_pending",) if after is S.PENDING else (), result
    if after is S.TERMINATED:
        outcome = {"SUCCESS": ("session_success",), "FAILURE": ("session_failure",)}.get(result or "", ())
        ran_unseen = before not in (S.RUNNING, S.TERMINATING) and scheduled
        return True, (*(events[S.RUNNING] if ran_unseen else ()), *outcome, "session_terminated"), result
    return True, events.get(after, ()), result


def _jobs() -> list[tuple[JobInfo, str, bool, bool]]:
    out = []
    for state, reason, started, kind, requested, ever_ran in itertools.product(
            JobState, (None, "Priority"), (False, True), ("interactive", "batch"), (False, True), (False, True)):
        out.append((JobInfo(job_id="1", name="x", state=state, reason=reason, exit_code=0 if started else None,
                            start_time=T0 if started else None), kind, requested, ever_ran))
    return out


@pytest.mark.parametrize("before", list(SessionStatus))
@pytest.mark.parametrize("info", [None, "Priority", "user-requested", "suspended"])
@pytest.mark.parametrize("scheduled", [False, True])
def test_slurm_matrix_matches_the_watcher_rule(before, info, scheduled):
    """Every status against every job state (and LOST) read every way: the rule the watcher had."""
    observations = [status_from_job(j, kind=k, termination_requested=r, ever_ran=e) for j, k, r, e in _jobs()]
    for o in [*observations, LOST]:
        t = transition(Current(before, info, has_job=True, scheduled=scheduled), o)
        changed, names, result = _watcher_rule(before, info, scheduled, o)
        assert (t is not None) == changed, (before, info, o)
        if t is not None:
            assert (t.status, t.status_info) == (o.status, o.status_info)
            assert tuple(t.events) == names, (before, info, o)
            assert (t.result.value if t.result else None) == result
            assert t.exit_code == (o.exit_code if o.status.is_terminal else None)


# ---- what the gateway does --------------------------------------------------------------------------------

def gw(what: Happening, reason: str | None = None) -> GatewayEvent:
    return GatewayEvent(what, reason)


PULL_STOPPED = "failed-to-start: the gateway stopped during the image pull"
SBATCH_STOPPED = "failed-to-start: the gateway stopped before sbatch"


@pytest.mark.parametrize(("current", "observed", "expected"), [
    # accepted (submitted, pulling first, or deferred with a reason)
    (Current(S.PENDING), gw(H.ENQUEUED), Transition(S.PENDING, None, (E.SESSION_ENQUEUED,))),
    (Current(S.PULLING, "pulling"), gw(H.ENQUEUED), Transition(S.PULLING, "pulling", (E.SESSION_ENQUEUED,))),
    (Current(S.PENDING), gw(H.ENQUEUED, "scheduler unreachable"),
     Transition(S.PENDING, "scheduler unreachable", (E.SESSION_ENQUEUED,))),
    # its job reached Slurm after the pull or the outage; destroyed meanwhile: nothing (the job is cancelled)
    (Current(S.PULLING), gw(H.SUBMITTED), Transition(S.PENDING, None, (E.SESSION_PENDING,))),
    (Current(S.PENDING, "scheduler unreachable"), gw(H.SUBMITTED), Transition(S.PENDING, None, (E.SESSION_PENDING,))),
    (Current(S.RESTARTING), gw(H.SUBMITTED), None),
    (Current(S.TERMINATING), gw(H.SUBMITTED), None),
    (Current(S.CANCELLED), gw(H.SUBMITTED), None),
    # destroy / freeze: scancel a job, cancel a session without one; published even if it was TERMINATING
    *[(Current(s, has_job=True), gw(H.TERMINATE, "user-requested"),
       Transition(S.TERMINATING, "user-requested", (E.SESSION_TERMINATING,))) for s in ACTIVE_STATUSES],
    *[(Current(s), gw(H.TERMINATE, "frozen"), Transition(S.CANCELLED, "frozen", (E.SESSION_CANCELLED,)))
      for s in ACTIVE_STATUSES],
    # idle checks end running sessions only
    (Current(S.RUNNING, has_job=True), gw(H.IDLE_TERMINATE, "idle-timeout"),
     Transition(S.TERMINATING, "idle-timeout", (E.SESSION_TERMINATING,))),
    *[(Current(s, has_job=True), gw(H.IDLE_TERMINATE, "idle-timeout"), None)
      for s in ACTIVE_STATUSES if s is not S.RUNNING],
    # restart: a running or pending session only
    *[(Current(s, has_job=True), gw(H.RESTART, "user-requested"),
       Transition(S.RESTARTING, "user-requested", (E.SESSION_RESTARTING,))) for s in (S.RUNNING, S.PENDING)],
    *[(Current(s, has_job=True), gw(H.RESTART, "user-requested"), None)
      for s in ACTIVE_STATUSES if s not in (S.RUNNING, S.PENDING)],
    # a session that could not start: ERROR, FAILURE, failure then terminated; the reason cut at 500
    *[(Current(s), gw(H.START_FAILED, "pull failed"),
       Transition(S.ERROR, "pull failed", (E.SESSION_FAILURE, E.SESSION_TERMINATED), R.FAILURE))
      for s in (S.PULLING, S.PENDING)],
    (Current(S.PENDING), gw(H.START_FAILED, "x" * 600),
     Transition(S.ERROR, "x" * 500, (E.SESSION_FAILURE, E.SESSION_TERMINATED), R.FAILURE)),
    # found at start-up without a job: cancelled, no event
    (Current(S.PULLING), gw(H.ABANDONED), Transition(S.CANCELLED, PULL_STOPPED)),
    *[(Current(s), gw(H.ABANDONED), Transition(S.CANCELLED, SBATCH_STOPPED)) for s in ACTIVE_STATUSES
      if s is not S.PULLING],
    (Current(S.PENDING, has_job=True), gw(H.ABANDONED), None),
    # terminal statuses never change
    *[(Current(t, "x", has_job=j), gw(h, "r"), None) for t in TERMINAL_STATUSES for h in Happening
      for j in (False, True)],
])
def test_gateway_table(current, observed, expected):
    assert transition(current, observed) == expected
