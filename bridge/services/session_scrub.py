"""What the gateway put in a session's folder for its kernel and sshd, removed once the session has ended
(the user's files stay); a batch cluster's failed kernel named first."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bridge.adapters.db.tables import SessionRow
from bridge.domain import cluster
from bridge.domain.session import SessionResult, SessionStatus
from bridge.domain.transitions import EventName
from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.services.sessions import SessionService

logger = logging.getLogger(__name__)


# what the gateway put in a session's folder for its kernel and sshd: no use once the session has ended
# (and the kernel runner's socket of a private kernel network, which a job killed outright leaves behind)
CREDENTIALS = ("id_container", ".bridge/secret", ".bridge/authorized_keys", ".bridge/sshd", ".bridge/cluster",
               ".bridge/runner.sock")


async def scrub(service: SessionService, session_id: str) -> None:
    """Remove an ended session's credentials from its folder (as its user); the user's files stay. A batch
    cluster session that failed because of one kernel names that kernel in its status_info first."""
    async with service.db.unit_of_work() as s:
        row = await s.get(SessionRow, session_id)
    if row is None or not SessionStatus(row.status).is_terminal:
        return
    if row.cluster_size > 1 and row.result == SessionResult.FAILURE.value:
        try:
            await _name_failed_kernel(service, row)
        except BridgeError as e:   # the credentials go whatever the marker did
            logger.warning("session %s: cannot read which kernel failed: %s", session_id, e)
    paths = [f"{row.work_dir}/{name}" for name in CREDENTIALS] + [f"{row.work_dir}.job.sh"]
    done = await service.runner.run(["rm", "-rf", "--", *paths], user=row.unix_user,
                                    timeout_s=service.settings.slurm.command_timeout_s)
    if not done.ok:
        logger.warning("could not remove the credentials of session %s: %s", session_id, done.stderr[:200])


async def _name_failed_kernel(service: SessionService, row: SessionRow) -> None:
    """The job leaves `<kernel> <exit code or 'timeout'>` in .bridge/cluster/failed when a kernel ended the
    session (the job's own exit code cannot say which)."""
    # the user's own file: a regular file only (not a FIFO that blocks), its first bytes, a short wait
    seen = await service.runner.run(["sh", "-c", '[ -f "$1" ] && [ ! -L "$1" ] && head -c 256 -- "$1"', "sh",
                                     f"{row.work_dir}/.bridge/cluster/failed"], user=row.unix_user, timeout_s=5)
    found = cluster.failed_kernel(seen.stdout) if seen.ok else None
    if found is None:
        return
    async with service.db.unit_of_work() as s:
        fresh = await s.get(SessionRow, row.id, with_for_update=True)
        if fresh is not None:
            fresh.status_info = found[:256]


async def scrub_ended(service: SessionService) -> None:
    """Scrub every session as it ends (a background task of the app's)."""
    async with service.events.subscribe() as q:
        while True:
            event = await q.get()
            if event.name == EventName.SESSION_TERMINATED:
                try:
                    await service.scrub(event.session_id)
                except Exception:  # noqa: BLE001 - one failure must not end the scrubbing of others
                    logger.exception("scrubbing session %s", event.session_id)
