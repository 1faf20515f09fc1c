"""Compute sessions as Slurm batch jobs: `SessionService`, the one entry the API, the watcher and the other
services use. It holds what the session modules share and hands each use case to its module:

- bridge.services.session_queries: look up by name or id, list a page, counts, match, dependency graph, logs;
- bridge.services.session_launch: create (checks, admission, pull, submission, the wait until it runs);
- bridge.services.session_deferred: sessions accepted while the scheduler was unreachable;
- bridge.services.session_submit: the session folder staged as its user, the job script, sbatch;
- bridge.services.session_scrub: an ended session's credentials removed from its folder;
- bridge.services.session_reconcile: a job as the session's own, status changes, the start-up settling.

What stays here: destroy, terminate_all, restart and rename, Slurm node drain/resume, events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import KeypairResourcePolicyRow, KeypairRow, SessionDependencyRow, SessionRow
from bridge.adapters.runner import CommandRunner
from bridge.adapters.slurm.base import NodeInfo, PartitionInfo, SlurmClient
from bridge.config import BridgeSettings
from bridge.domain import cluster, destinations, slurm_notice
from bridge.domain.auth import AuthContext
from bridge.domain.metrics import GatewayMetrics
from bridge.domain.resources import SlotRequest, parse_slots
from bridge.domain.session import ACTIVE_STATUSES, DEFERRED, SessionRequest, SessionStatus
from bridge.domain.session_checks import check_session_name
from bridge.domain.transitions import WITH_RESULT, Current, EventName, GatewayEvent, Happening, Transition, transition
from bridge.errors import BridgeError, InvalidAPIParameters, SessionAlreadyExists
from bridge.services import (
    session_deferred,
    session_launch,
    session_queries,
    session_scrub,
    session_submit,
)
from bridge.services.events import EventBus, SessionEvent
from bridge.services.folders import FolderService
from bridge.services.image_pull import ImagePuller
from bridge.services.images import ImageResolver
from bridge.services.resource_groups import ResourceGroups
from bridge.services.session_queries import SessionRelations
from bridge.services.session_reconcile import reconcile, set_status
from bridge.services.slurm_facts import SlurmFacts

# importers of this module find these here, as before the split
__all__ = ["DEFERRED", "SessionService", "SessionStatus", "aware", "check_session_name", "reconcile", "set_status"]


def aware(d: datetime | None) -> datetime | None:
    return d if d is None or d.tzinfo else d.replace(tzinfo=UTC)


logger = logging.getLogger(__name__)

class SessionService:
    def __init__(self, db: Database, slurm: SlurmClient, runner: CommandRunner, images: ImageResolver,
                 events: EventBus, settings: BridgeSettings, metrics: GatewayMetrics | None = None) -> None:
        self.db, self.slurm, self.runner, self.images, self.events = db, slurm, runner, images, events
        self.settings = settings
        self.metrics = metrics or GatewayMetrics()
        self.callback_networks = destinations.networks(settings.sessions.callback_allowed_networks)
        self.wake_watcher: asyncio.Event = asyncio.Event()
        self.puller: ImagePuller | None = None   # set by the app: pulls images named by docker:// or oras://
        self.folders: FolderService | None = None   # set by the app: virtual folders mounted into sessions
        self._background: set[asyncio.Task[None]] = set()
        # partitions and node sizes change rarely; creations ask for them often, and must not stop when
        # slurmdbd does
        self.facts_partitions = SlurmFacts("partitions", lambda: self.slurm.partitions(), PartitionInfo, db)
        # node occupancy feeds check-presets: a few seconds old at most
        self.facts_nodes = SlurmFacts("nodes", lambda: self.slurm.nodes(), NodeInfo, db, ttl_s=5)
        self.resource_groups = ResourceGroups(db, self.facts_partitions)
        self._admission = asyncio.Lock()   # the last quota check and the row it admits, one creation at a time

    # ---- lookups (bridge.services.session_queries) -------------------------------------------------

    async def owner_key(self, auth: AuthContext, owner_access_key: str | None) -> AuthContext | tuple[str, str]:
        return await session_queries.owner_key(self, auth, owner_access_key)

    async def resolve(self, auth: AuthContext, ref: str, owner_access_key: str | None = None) -> SessionRow:
        return await session_queries.resolve(self, auth, ref, owner_access_key)

    async def resolve_kernel(self, auth: AuthContext, ref: str, owner_access_key: str | None = None,
                             kernel_ref: str | None = None) -> tuple[SessionRow, cluster.Kernel]:
        return await session_queries.resolve_kernel(self, auth, ref, owner_access_key, kernel_ref)

    async def visible_kernel(self, auth: AuthContext, kernel_id: str) -> tuple[SessionRow, cluster.Kernel] | None:
        return await session_queries.visible_kernel(self, auth, kernel_id)

    async def visible(self, auth: AuthContext, session_id: str) -> SessionRow | None:
        return await session_queries.visible(self, auth, session_id)

    async def page(self, auth: AuthContext, *, offset: int, limit: int, access_key: str | None = None,
                   domain: str | None = None, group_id: str | None = None, statuses: Sequence[str] | None = None,
                   order: str = "created_at", ascending: bool = False) -> tuple[list[SessionRow], int]:
        return await session_queries.page(self, auth, offset=offset, limit=limit, access_key=access_key,
                                          domain=domain, group_id=group_id, statuses=statuses, order=order,
                                          ascending=ascending)

    async def relations(self, rows: Sequence[SessionRow]) -> SessionRelations:
        return await session_queries.relations(self, rows)

    async def count_by_status(self) -> dict[str, int]:
        return await session_queries.count_by_status(self)

    async def count_active(self) -> int:
        """Sessions not yet ended, over every owner."""
        return sum((await self.count_by_status()).values())

    async def logs(self, auth: AuthContext, ref: str, owner_access_key: str | None = None,
                   max_bytes: int = 4 * 1024 * 1024, kernel_id: str | None = None) -> str:
        return await session_queries.logs(self, auth, ref, owner_access_key, max_bytes, kernel_id)

    async def match(self, auth: AuthContext, prefix: str) -> list[dict[str, str]]:
        return await session_queries.match(self, auth, prefix)

    async def dependency_graph(self, auth: AuthContext, ref: str) -> dict[str, Any]:
        return await session_queries.dependency_graph(self, auth, ref)

    # ---- what runs behind requests; Slurm's partitions and nodes ------------------------------------

    async def aclose(self) -> None:
        """Stop what runs behind requests (image pulls before submission, Slurm reads being refreshed) and
        wait until each has let go."""
        tasks = [*self._background, *(f._refresh for f in (self.facts_partitions, self.facts_nodes) if f._refresh)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def set_nodes_schedulable(self, nodes: list[str], schedulable: bool, *, reason: str) -> None:
        """Drain or resume Slurm nodes (Backend.AI's agents); refused for a node Slurm does not have."""
        known = {n.name for n in await self.facts_nodes.get()}
        unknown = sorted(set(nodes) - known)
        if unknown:
            raise InvalidAPIParameters(f"no Slurm node {', '.join(unknown)}")
        await self.slurm.set_nodes_schedulable(nodes, schedulable, reason=reason)
        self.facts_nodes.stale()

    async def partitions(self) -> set[str]:
        return {p.name for p in await self.facts_partitions.get()}

    # ---- create (bridge.services.session_launch, session_deferred, session_submit) ---------------------

    async def create(self, auth: AuthContext, req: SessionRequest) -> tuple[dict[str, Any], bool]:
        return await session_launch.create(self, auth, req)

    async def check_fits(self, partition: str, slots: SlotRequest, size: int = 1,
                         mode: str = cluster.SINGLE_NODE) -> None:
        await session_launch.check_fits(self, partition, slots, size, mode)

    async def wait_until_started(self, session_id: str, max_wait_s: int) -> SessionRow:
        return await session_launch.wait_until_started(self, session_id, max_wait_s)

    create_response = staticmethod(session_launch.create_response)

    async def deferred(self) -> list[SessionRow]:
        return await session_deferred.deferred(self)

    async def submit_deferred(self) -> int:
        return await session_deferred.submit_deferred(self)

    async def _submit(self, row: SessionRow, slots: SlotRequest, dep_jobs: list[str | None],
                      policy_lifetime: int) -> str:
        """Every submission goes through here (creation, a pull's end, a deferred one, restart)."""
        return await session_submit.submit(self, row, slots, dep_jobs, policy_lifetime)

    log_path = staticmethod(session_submit.log_path)

    def tag(self, session_id: str, unix_user: str) -> str:
        """The job comment that ties a job to its session, signed for job_submit.lua (domain.slurm_notice)."""
        return slurm_notice.signed_tag(self.settings.slurm.notify_secret,
                                       f"{self.settings.slurm.job_tag_prefix}{session_id}", unix_user)

    def publish(self, row: SessionRow, name: EventName, **extra: Any) -> None:
        started, created = aware(getattr(row, "started_at", None)), aware(getattr(row, "created_at", None))
        if name == EventName.SESSION_STARTED and started is not None and created is not None:   # (or a snapshot's)
            self.metrics.create_to_running.observe(max((started - created).total_seconds(), 0.0))
        self.events.publish(SessionEvent(
            name=name, session_id=row.id, session_name=row.name, access_key=row.access_key,
            group_id=row.group_id, domain_name=row.domain_name, status=row.status, reason=row.status_info,
            result=row.result if name in WITH_RESULT else None,
            exit_code=row.exit_code, extra=extra))

    # ---- credentials left in a session's folder (bridge.services.session_scrub) ----------------------

    CREDENTIALS = session_scrub.CREDENTIALS

    async def scrub(self, session_id: str) -> None:
        await session_scrub.scrub(self, session_id)

    async def scrub_ended(self) -> None:
        await session_scrub.scrub_ended(self)

    # ---- operations on one session ------------------------------------------------------------------

    async def destroy(self, auth: AuthContext, ref: str, *, forced: bool = False,
                      owner_access_key: str | None = None) -> dict[str, Any]:
        row = await self.resolve(auth, ref, owner_access_key)
        if SessionStatus(row.status).is_terminal:
            return {"stats": {}, "status": row.status}
        async with self.db.unit_of_work() as s:
            fresh = await s.get(SessionRow, row.id, with_for_update=True)
            assert fresh is not None
            # TERMINATING while its job is cancelled, CANCELLED without one; nothing if the watcher saw it end
            # since the look above (its end stands: neither TERMINATING nor a cancel is written over it)
            ended = transition(Current(SessionStatus(fresh.status), has_job=fresh.job_id is not None),
                               GatewayEvent(Happening.TERMINATE, "user-requested"))
            if ended is None:
                return {"stats": {}, "status": fresh.status}
            change = ended
            fresh.termination_requested = True
            set_status(fresh, change.status, change.status_info)
            row = fresh
        if row.job_id:
            # the owner cancels their own job; `forced` uses the gateway's administrative identity
            await self.slurm.cancel([row.job_id], user=None if forced else row.unix_user)
        for name in change.events:
            self.publish(row, name)
        self.wake_watcher.set()
        return {"stats": {}, "status": row.status}

    async def terminate_all(self, reason: str) -> int:
        """End every unfinished session (a forced freeze): ONE scancel, with the gateway's administrative
        identity, for all their jobs; each keeps `reason` as its status_info. Returns how many."""
        async with self.db.unit_of_work() as s:
            rows = list((await s.execute(select(SessionRow).where(
                SessionRow.status.in_([x.value for x in ACTIVE_STATUSES])).with_for_update())).scalars())
            changes = []
            for row in rows:
                row.termination_requested = True
                row.status_data = {**(row.status_data or {}), "termination_reason": reason}
                change = _gateway(Current(SessionStatus(row.status), has_job=row.job_id is not None),
                                  Happening.TERMINATE, reason)
                set_status(row, change.status, change.status_info)
                changes.append(change)
        jobs = [r.job_id for r in rows if r.job_id]
        if jobs:
            await self.slurm.cancel(jobs)
        for row, change in zip(rows, changes, strict=True):
            for name in change.events:
                self.publish(row, name)
        self.wake_watcher.set()
        return len(rows)

    async def restart(self, auth: AuthContext, ref: str, owner_access_key: str | None = None) -> None:
        """Restart the kernel: a fresh job (same session, same tag) replaces the old one, which is cancelled
        after the new one is recorded, so the watcher never sees the session without a job."""
        row = await self.resolve(auth, ref, owner_access_key)
        change = transition(Current(SessionStatus(row.status), row.status_info, has_job=row.job_id is not None),
                            GatewayEvent(Happening.RESTART, "user-requested"))
        if change is None:
            raise InvalidAPIParameters(f"only a pending or running session can be restarted, not {row.status}")
        try:
            slots = parse_slots(row.resources, shards_per_gpu=self.settings.sessions.shards_per_gpu)
        except ValueError as e:
            raise InvalidAPIParameters(str(e)) from None
        async with self.db.unit_of_work() as s:
            dep_jobs = [d.job_id for d in (await s.execute(select(SessionRow).join(
                SessionDependencyRow, SessionDependencyRow.depends_on == SessionRow.id).where(
                SessionDependencyRow.session_id == row.id, SessionRow.status.in_(
                    [x.value for x in ACTIVE_STATUSES])))).scalars()]
            kp = await s.get(KeypairRow, row.access_key)
            policy = await s.get(KeypairResourcePolicyRow, kp.resource_policy) if kp else None
        old_job = row.job_id
        new_job = await self._submit(row, slots, dep_jobs, policy_lifetime=policy.max_session_lifetime if policy else 0)
        async with self.db.unit_of_work() as s:
            fresh = await s.get(SessionRow, row.id, with_for_update=True)
            assert fresh is not None
            # the session may have ended (its job, a terminate) or restarted again while the new job was
            # submitted: then that stands, and the new job goes
            now = transition(Current(SessionStatus(fresh.status), fresh.status_info, has_job=fresh.job_id is not None),
                             GatewayEvent(Happening.RESTART, "user-requested"))
            superseded = now is None or fresh.job_id != old_job
            if not superseded:
                assert now is not None
                fresh.job_id = new_job
                set_status(fresh, now.status, now.status_info)
                change = now
            row = fresh
        if superseded:
            try:
                await self.slurm.cancel([new_job], user=row.unix_user)
            except BridgeError as e:   # the refusal stands; the job, tagged as the session's, is the watcher's
                logger.warning("session %s: cancelling the superseded job %s failed: %s", row.id, new_job, e)
            raise InvalidAPIParameters(f"the session changed while it was restarting (now {row.status}); "
                                       "nothing was restarted")
        if old_job:
            await self.slurm.cancel([old_job], user=row.unix_user)
        for name in change.events:
            self.publish(row, name)
        self.wake_watcher.set()

    async def rename(self, auth: AuthContext, ref: str, new_name: str) -> None:
        new_name = check_session_name(new_name)
        row = await self.resolve(auth, ref)
        clash = await session_launch.active_named(self, row.access_key, new_name, but=row.id)
        if clash is None:
            try:
                async with self.db.unit_of_work() as s:
                    fresh = await s.get(SessionRow, row.id)
                    fresh.name = new_name  # type: ignore[union-attr]
                return
            except IntegrityError:   # the database's rule: a session took that name meanwhile
                clash = await session_launch.active_named(self, row.access_key, new_name, but=row.id)
                if clash is None:
                    raise
        raise SessionAlreadyExists(f"an active session named {new_name} exists",
                                   data={"existingSessionId": clash})


def _gateway(current: Current, what: Happening, reason: str) -> Transition:
    """The transition of a session known to be live (checked before, or locked as such)."""
    change = transition(current, GatewayEvent(what, reason))
    assert change is not None, (current, what)
    return change
