"""Notices from Slurm's PrologSlurmctld/EpilogSlurmctld (slurm_plugins/bridge_notify.py) that a job started or
ended: HMAC-SHA256 with the site's notify secret over the job id, the event and a timestamp. A notice only
makes the watcher look at Slurm now; what the look finds is Slurm's answer, never the notice's."""

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
