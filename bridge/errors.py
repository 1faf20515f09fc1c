"""Every error the gateway raises on purpose, with its Backend.AI problem type, title and HTTP status.

No framework imports here: the API edge (bridge.api.problems) renders these; adapters subclass them.

    BridgeError
    ├── InvalidAPIParameters      400 invalid-api-params
    │   └── PullFailed            400 image-pull-failed (a bad reference, an image the registry does not have,
    │                                 a registry that wants credentials, a pull that failed)
    ├── AuthorizationFailed       401 unauthorized
    ├── GenericForbidden          403 forbidden
    ├── ObjectNotFound            404 object-not-found
    │   ├── SessionNotFound       404 session-not-found
    │   ├── FolderNotFound        404 vfolder-not-found
    │   └── TooManySessionsMatched 404 too-many-sessions-matched (data.matches)
    ├── SessionAlreadyExists      400 session-already-exists (data.existingSessionId)
    ├── FolderAlreadyExists       400 vfolder-already-exists
    ├── ResourceLimitExceeded     406 resource-limit-exceeded (beyond the policy's or the cluster's limits)
    ├── QuotaExceeded             412 quota-exceeded (too many sessions for the keypair's policy)
    ├── TooManyRequests           429 too-many-requests
    ├── ServerMisconfigured       500 server-misconfigured
    └── BackendError              502 backend-error      (an external system failed)
        ├── CommandFailed         a command (local or over SSH) could not run or timed out
        ├── KernelUnavailable     503 kernel-unavailable (the session's kernel runner is not reachable)
        ├── AppUnavailable        502 app-unavailable (a session's web app failed its HTTP exchange)
        ├── CallbackFailed        502 callback-failed (a session's callback_url could not be reached; logged)
        ├── RegistryUnavailable   503 registry-unavailable (an image registry unreachable, timed out or
        │                         answering 5xx; Retry-After)
        └── SlurmError            Slurm refused or failed a request
            ├── SlurmRejected     Slurm rejected a submission (bad account, impossible request...)
            └── SchedulerUnavailable 503 scheduler-unavailable (slurmctld or slurmdbd unreachable;
                                  Retry-After)
"""

from __future__ import annotations

from typing import Any

PROBLEM_TYPE_BASE = "https://api.backend.ai/probs/"


class BridgeError(Exception):
    """Base of all deliberate errors. `msg` is shown to the client; `data` is extra JSON."""

    slug = "internal-server-error"
    title = "Internal server error."
    status = 500

    def __init__(self, msg: str | None = None, *, data: dict[str, Any] | None = None) -> None:
        self.msg = msg or self.title
        self.data = data or {}
        super().__init__(self.msg)

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPE_BASE + self.slug


class InvalidAPIParameters(BridgeError):
    slug, title, status = "invalid-api-params", "Missing or invalid API parameters.", 400


class AuthorizationFailed(BridgeError):
    slug, title, status = "unauthorized", "Credential/signature mismatch.", 401


class GenericForbidden(BridgeError):
    slug, title, status = "forbidden", "Forbidden operation.", 403


class ObjectNotFound(BridgeError):
    slug, title, status = "object-not-found", "No such resource.", 404


class SessionNotFound(ObjectNotFound):
    slug, title = "session-not-found", "No such session."


class FolderNotFound(ObjectNotFound):
    slug, title = "vfolder-not-found", "No such virtual folder."


class TooManySessionsMatched(ObjectNotFound):
    slug, title = "too-many-sessions-matched", "Too many sessions matched."


class SessionAlreadyExists(BridgeError):
    slug, title, status = "session-already-exists", "The session already exists.", 400


class FolderAlreadyExists(BridgeError):
    slug, title, status = "vfolder-already-exists", "The virtual folder already exists with the same name.", 400


class ResourceLimitExceeded(BridgeError):
    slug, title, status = "resource-limit-exceeded", "The requested resources exceed the allowed limits.", 406


class QuotaExceeded(BridgeError):
    slug, title, status = "quota-exceeded", "You have reached your resource limit.", 412


class ServerFrozen(BridgeError):
    slug, title, status = "server-frozen", "The server is frozen due to maintenance.", 503


class TooManyRequests(BridgeError):
    slug, title, status = "too-many-requests", "Too many API requests.", 429


class ServerMisconfigured(BridgeError):
    slug, title, status = "server-misconfigured", "Service misconfigured.", 500


class BackendError(BridgeError):
    slug, title, status = "backend-error", "An external backend failed.", 502


class CommandFailed(BackendError):
    """A command could not be started, timed out, or its transport (SSH) failed."""

    slug, title = "command-failed", "A backend command failed."


class KernelUnavailable(BackendError):
    """The session's in-job kernel runner cannot be reached or failed a request."""

    slug, title, status = "kernel-unavailable", "The session's kernel is not reachable.", 503


class AppUnavailable(BackendError):
    """A session's web app (behind the browser proxy) broke the connection or answered no HTTP."""

    slug, title = "app-unavailable", "The session's app did not answer."


class CallbackFailed(BackendError):
    """A session's lifecycle callback could not be delivered (only logged: no client waits for it)."""

    slug, title = "callback-failed", "The callback could not be delivered."


class PullFailed(InvalidAPIParameters):
    """An image could not be pulled for a reason of the request's: its reference, an image the registry does not
    have, a registry that wants credentials. A registry that is down is RegistryUnavailable instead."""

    slug, title = "image-pull-failed", "The image could not be pulled."


class RegistryUnavailable(BackendError):
    """An image registry could not be reached, timed out or answered 5xx: not the request's fault; retry."""

    slug, title, status = "registry-unavailable", "The image registry is unreachable.", 503
    retry_after_s = 30


class SlurmError(BackendError):
    slug, title = "slurm-error", "Slurm failed the request."


class SchedulerUnavailable(SlurmError):
    """A Slurm daemon (`daemon`: slurmctld, slurmdbd) could not be reached: not the request's fault; retry."""

    slug, title, status = "scheduler-unavailable", "The scheduler is unreachable.", 503
    retry_after_s = 30

    def __init__(self, msg: str | None = None, *, daemon: str = "slurmctld", data: dict[str, Any] | None = None):
        super().__init__(msg, data={"daemon": daemon, **(data or {})})
        self.daemon = daemon


class SlurmRejected(SlurmError):
    """Slurm refused a request it understood (sbatch error, REST error list)."""

    slug, title, status = "slurm-rejected", "Slurm rejected the request.", 400
