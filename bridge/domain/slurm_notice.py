"""What the gateway and the Slurm plugins (slurm_plugins/) prove to each other with the notify secret.

- Notices from PrologSlurmctld/EpilogSlurmctld (bridge_notify.py) that a job started or ended: HMAC-SHA256
  over the job id, the event and a timestamp. A notice only makes the watcher look at Slurm now; what the
  look finds is Slurm's answer, never the notice's.
- Signed job tags: a session's job comment is "<prefix><session id>.<sig>", sig the first 32 hex digits of
  HMAC-SHA256 over "bridge-tag", the tag and the user, so that job_submit.lua can refuse a job that claims a
  session it does not belong to (another user's tag, or one made up)."""

from __future__ import annotations

import hashlib
import hmac

WINDOW_S = 300
EVENTS = ("start", "end")


def signature(secret: str, job_id: str, event: str, t: int) -> str:
    return hmac.new(secret.encode(), f"{job_id}\n{event}\n{t}".encode(), hashlib.sha256).hexdigest()


def valid(secret: str, job_id: str, event: str, t: int, given: str, now: float) -> bool:
    """A notice signed with `secret`, about a job id of digits (and '+' for a component), recent enough."""
    if not secret or event not in EVENTS or not job_id.replace("+", "").isdigit() or abs(now - t) > WINDOW_S:
        return False
    return hmac.compare_digest(signature(secret, job_id, event, t), given)


TAG_SIG_HEX = 32


def signed_tag(secret: str, tag: str, user: str) -> str:
    """The job comment for a session's tag (unsigned where no secret is set: no plugin can check it)."""
    if not secret:
        return tag
    mac = hmac.new(secret.encode(), f"bridge-tag\n{tag}\n{user}".encode(), hashlib.sha256).hexdigest()
    return f"{tag}.{mac[:TAG_SIG_HEX]}"


def session_of(comment: str | None, prefix: str) -> str | None:
    """The session id a job comment names under this gateway's prefix, signed or not; None for other jobs."""
    if not comment or not comment.startswith(prefix):
        return None
    rest = comment[len(prefix):]
    sid, dot, sig = rest.rpartition(".")
    return sid if dot and len(sig) == TAG_SIG_HEX and all(c in "0123456789abcdef" for c in sig) else rest
