"""Compute-session rules: statuses and their transitions, names, and how a Slurm job state becomes one.

Backend.AI words live here next to Slurm's only in `status_from_job`, the one place they meet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from bridge.domain.jobs import JobInfo, JobState


class SessionStatus(StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    PREPARING = "PREPARING"
    PULLING = "PULLING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    CANCELLED = "CANCELLED"
    ERROR = "ERROR"

    @property
    def is_terminal(self) -> bool:
        return self in (SessionStatus.TERMINATED, SessionStatus.CANCELLED, SessionStatus.ERROR)


ACTIVE_STATUSES = tuple(s for s in SessionStatus if not s.is_terminal)
TERMINAL_STATUSES = tuple(s for s in SessionStatus if s.is_terminal)

# status_data key of a session accepted while the scheduler was unreachable: what its submission needs later
DEFERRED = "deferred_submit"


class SessionResult(StrEnum):
    UNDEFINED = "UNDEFINED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{2,62}[A-Za-z0-9])?\Z")


def check_name(name: str) -> str:
    """Backend.AI session names: 4 to 64 characters, letters, digits, `-`, `_`, `.`; alphanumeric ends."""
    if not _NAME.match(name) or len(name) < 4:
        raise ValueError("a session name has 4 to 64 letters, digits, '-', '_' or '.', "
                         "and starts and ends with a letter or digit")
    return name


@dataclass(frozen=True, slots=True)
class Observed:
    """What the watcher concludes from one look at a job."""

    status: SessionStatus
    status_info: str | None
    result: SessionResult = SessionResult.UNDEFINED
    exit_code: int | None = None


def status_from_job(job: JobInfo, *, kind: str, termination_requested: bool, ever_ran: bool,
                    termination_reason: str = "user-requested") -> Observed:
    """Map a Slurm job (from squeue or sacct) onto a session status, status_info and batch result.
    `termination_reason`: why the gateway ended it (a destroy, or an idle check such as idle-timeout)."""
    state = job.state
    if state is JobState.PENDING:
        return Observed(SessionStatus.PENDING, job.reason)
    if state in (JobState.RUNNING, JobState.SUSPENDED):
        return Observed(SessionStatus.RUNNING, None if state is JobState.RUNNING else "suspended")
    if state is JobState.COMPLETING:
        return Observed(SessionStatus.TERMINATING, termination_reason if termination_requested else None)
    if state is JobState.REQUEUED:
        return Observed(SessionStatus.RESTARTING, "requeued")
    code = job.exit_code
    if state is JobState.COMPLETED:
        result = SessionResult.SUCCESS if kind == "batch" else SessionResult.UNDEFINED
        return Observed(SessionStatus.TERMINATED, "self-terminated", result, code)
    if state is JobState.CANCELLED:
        if termination_requested:
            status = SessionStatus.TERMINATED if ever_ran or job.start_time else SessionStatus.CANCELLED
            return Observed(status, termination_reason, _failure_if_batch(kind), code)
        return Observed(SessionStatus.CANCELLED if not job.start_time else SessionStatus.TERMINATED,
                        "cancelled-by-scheduler" if job.reason is None else f"cancelled: {job.reason}",
                        _failure_if_batch(kind), code)
    if state is JobState.FAILED:
        info = "self-terminated" if ever_ran or job.start_time else "failed-to-start"
        return Observed(SessionStatus.TERMINATED, info, _failure_if_batch(kind), code)
    if state in (JobState.TIMEOUT, JobState.DEADLINE):
        return Observed(SessionStatus.TERMINATED, "timeout", _failure_if_batch(kind), code)
    if state is JobState.OUT_OF_MEMORY:
        return Observed(SessionStatus.TERMINATED, "out-of-memory", _failure_if_batch(kind), code)
    if state is JobState.PREEMPTED:
        return Observed(SessionStatus.TERMINATED, "preempted", _failure_if_batch(kind), code)
    # NODE_FAIL, BOOT_FAIL, UNKNOWN
    return Observed(SessionStatus.ERROR, f"slurm: {state.value.lower()}", _failure_if_batch(kind), code)


def _failure_if_batch(kind: str) -> SessionResult:
    return SessionResult.FAILURE if kind == "batch" else SessionResult.UNDEFINED



@dataclass(frozen=True, slots=True)
class RoleSpec:
    """One role of a cluster made from a cluster template: its kernels' count, image and resources."""

    role: str
    replicas: int
    image: str
    resources: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """A validated-shape create request (values still to be checked against accounts, images and Slurm)."""

    image: str
    name: str | None = None
    kind: str = "interactive"
    group: str = "default"
    domain: str = "default"
    resources: dict[str, object] | None = None
    resource_opts: dict[str, object] | None = None
    scaling_group: str | None = None
    preopen_ports: tuple[int, ...] = ()
    environ: dict[str, str] | None = None
    mounts: tuple[str, ...] = ()
    mount_map: dict[str, str] = field(default_factory=dict)   # folder name -> where it appears in the kernel
    cluster_size: int = 1
    cluster_mode: str = "single-node"
    startup_command: str | None = None
    bootstrap_script: str | None = None
    starts_at: str | None = None
    dependencies: tuple[str, ...] = ()
    callback_url: str | None = None
    tag: str | None = None
    owner_access_key: str | None = None
    batch_timeout: int | None = None
    enqueue_only: bool = False
    max_wait_s: int = 0
    reuse_if_exists: bool = True
    architecture: str = "x86_64"
    roles: tuple[RoleSpec, ...] = ()    # a cluster template's roles (main first); () for a plain cluster
