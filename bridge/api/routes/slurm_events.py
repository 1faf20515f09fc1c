"""`POST /slurm/job-event`: Slurm's notice that a job started or ended (slurm_plugins/bridge_notify.py, signed
with `slurm.notify_secret`, not by a keypair). It wakes the shared watcher, which then asks Slurm."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from bridge.domain import slurm_notice
from bridge.errors import AuthorizationFailed

router = APIRouter()
logger = logging.getLogger(__name__)


class JobEvent(BaseModel):
    job_id: str
    event: str
    t: int


@router.post("/slurm/job-event")
async def job_event(request: Request, notice: JobEvent) -> dict[str, Any]:
    secret = request.app.state.settings.slurm.notify_secret
    if not slurm_notice.valid(secret, notice.job_id, notice.event, notice.t,
                              request.headers.get("X-Bridge-Notify", ""), time.time()):
        raise AuthorizationFailed("not a notice signed with this gateway's slurm.notify_secret")
    logger.debug("Slurm notice: job %s %s", notice.job_id, notice.event)
    request.app.state.sessions.wake_watcher.set()
    return {"ok": True}
