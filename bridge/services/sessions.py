"""Compute sessions as Slurm batch jobs: create (checks first, then one tagged submission), look up by
name or id, list a page, destroy, logs, rename, match, dependency graph.

Order of a creation, so that a crash never leaves an orphan: every check runs before anything is
written; the session row is committed (PENDING, no job yet) before sbatch; the job carries the session's
tag in its comment; the job id is recorded after. `reconcile()` (bridge.services.session_reconcile) settles
the rows a crash left behind.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from bridge.adapters import outbound
from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import (
    DomainRow,
    GroupMemberRow,
    GroupRow,
    KeypairResourcePolicyRow,
    KeypairRow,
    SessionDependencyRow,
    SessionRow,
    UserRow,
)
from bridge.adapters.runner import CommandRunner
from bridge.adapters.slurm.base import NodeInfo, PartitionInfo, SlurmClient, gres_count
from bridge.config import BridgeSettings
from bridge.domain import cluster, destinations, session_checks, slurm_notice
from bridge.domain.auth import AuthContext
from bridge.domain.ids import normalize_uuid
from bridge.domain.metrics import GatewayMetrics
from bridge.domain.resources import (
    SlotRequest,
    occupied,
    parse_slots,
)
from bridge.domain.session import ACTIVE_STATUSES, DEFERRED, SessionRequest, SessionResult, SessionStatus
from bridge.domain.session_checks import check_session_name
from bridge.errors import (
    BridgeError,
    GenericForbidden,
    InvalidAPIParameters,
    SchedulerUnavailable,
    ServerFrozen,
    SessionAlreadyExists,
)
from bridge.services import (
    image_pull,
    quotas,
    service_ports,
    session_queries,
    session_scrub,
    session_submit,
    settings_store,
)
from bridge.services.events import EventBus, SessionEvent
from bridge.services.folders import FolderService
from bridge.services.image_pull import ImagePuller
from bridge.services.images import Image, ImageResolver
from bridge.services.resource_groups import ResourceGroups
from bridge.services.session_queries import SessionRelations
from bridge.services.session_reconcile import reconcile, runs_for, set_status
from bridge.services.slurm_facts import SlurmFacts

# importers of this module find these here, as before the split
__all__ = ["DEFERRED", "SessionService", "SessionStatus", "aware", "check_session_name", "reconcile", "set_status"]

logger = logging.getLogger(__name__)

def aware(d: datetime | None) -> datetime | None:
    return d if d is None or d.tzinfo else d.replace(tzinfo=UTC)


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

    async def check_fits(self, partition: str, slots: SlotRequest, size: int = 1,
                         mode: str = cluster.SINGLE_NODE) -> None:
        """Refuse, naming the slot, a kernel that no node of the resource group could ever hold (sbatch would
        only say "Requested node configuration is not available"): a single-node cluster's kernels all on one
        node, a multi-node cluster's on as many nodes as it has kernels. Busy or down nodes count: this is
        about size, not about now. Without node information the check is left to Slurm."""
        try:
            nodes = await self.facts_nodes.get()
        except BridgeError as e:
            logger.warning("node sizes unavailable, leaving the fit to Slurm: %s", e)
            return
        mine = [n for n in nodes if partition in n.partitions]
        if not mine:
            return
        biggest = {"cpu": max(n.cpus for n in mine), "mem": max(n.memory_mb for n in mine),
                   "cuda.device": max(gres_count(n.gres, "gpu") for n in mine),
                   "cuda.shares": max(gres_count(n.gres, "shard") for n in mine)}
        per_node = size if mode == cluster.SINGLE_NODE else 1
        asked = {"cpu": slots.cpu, "mem": slots.mem_mib, "cuda.device": slots.gpus, "cuda.shares": slots.shards}
        units = {"cpu": "CPUs", "mem": "MiB of memory", "cuda.device": "GPUs", "cuda.shares": "GPU shards"}
        for key, want in asked.items():
            if want * per_node > biggest[key]:
                held = f" ({per_node} kernels of {want}: a single-node cluster's kernels share one node)" \
                    if per_node > 1 else ""
                raise InvalidAPIParameters(f"resources.{key}: no node of resource group {partition} has "
                                           f"{want * per_node} {units[key]}{held} (the largest has {biggest[key]})")
        if mode == cluster.MULTI_NODE and size > len(mine):
            raise InvalidAPIParameters(f"clusterSize: a multi-node cluster of {size} kernels needs {size} nodes; "
                                       f"resource group {partition} has {len(mine)}")

    # ---- create ----------------------------------------------------------------------------------------

    async def create(self, auth: AuthContext, req: SessionRequest) -> tuple[dict[str, Any], bool]:
        """(response body, created). Raises before writing anything if any check fails."""
        owner_ctx = await self.owner_key(auth, req.owner_access_key)
        access_key = owner_ctx.access_key if isinstance(owner_ctx, AuthContext) else owner_ctx[0]
        checked = session_checks.check_request(
            req, default_mem=self.settings.sessions.default_mem, shards_per_gpu=self.settings.sessions.shards_per_gpu,
            kernel_network=self.settings.sessions.kernel_network,
            registry_image=lambda ref: image_pull.parse(ref) is not None)
        req, name, environ, slots = checked.req, checked.name, checked.environ, checked.slots
        role_slots, heterogeneous, want = checked.role_slots, checked.heterogeneous, checked.want
        try:
            preopen = service_ports.check_preopen(req.preopen_ports)
        except ValueError as e:
            raise InvalidAPIParameters(str(e)) from None
        now = datetime.now(UTC)
        starts_at = session_checks.check_schedule(req, now)
        if req.callback_url:
            await outbound.check_url(req.callback_url, self.callback_networks, "callback_url")

        async with self.db.unit_of_work() as s:
            kp = await s.get(KeypairRow, access_key)
            owner = await s.get(UserRow, kp.user) if kp else None
            if kp is None or owner is None:
                raise InvalidAPIParameters("owner_access_key: no such keypair")
            if req.domain != owner.domain_name:
                raise InvalidAPIParameters(f"domain: the owner belongs to domain {owner.domain_name}, not {req.domain}")
            group = (await s.execute(select(GroupRow).where(
                GroupRow.domain_name == owner.domain_name, GroupRow.name == req.group))).scalar_one_or_none()
            if group is None or not group.is_active:
                raise InvalidAPIParameters(f"group: no active project {req.group!r} in domain {owner.domain_name}")
            if await s.get(GroupMemberRow, (group.id, owner.uuid)) is None:
                raise GenericForbidden(f"the owner is not a member of project {req.group}")
            existing = await self._admit(s, kp, group, owner.domain_name, name, req.cluster_size, want)
            if existing is not None:
                if req.reuse_if_exists:
                    return self.create_response(existing, created=False), False
                raise SessionAlreadyExists(f"an active session named {name} exists",
                                           data={"existingSessionId": existing.id})
            partition = await self.resource_groups.choose(
                s, req.scaling_group, self.settings.slurm.default_partition, domain=owner.domain_name,
                group_id=group.id, access_key=access_key)
            stored_bootstrap = kp.bootstrap_script   # the keypair's, when the request brings none
            policy = await s.get(KeypairResourcePolicyRow, kp.resource_policy)
            deps = await self._dependencies(s, access_key, req.dependencies)
        for r in req.roles:
            await self.check_fits(partition, role_slots[r.role], r.replicas, req.cluster_mode)
        await self.check_fits(partition, slots if not req.roles else role_slots["main"], req.cluster_size,
                              req.cluster_mode)
        remote = image_pull.parse(req.image)
        pull: tuple[image_pull.RemoteRef, str, asyncio.Task[str] | None] | None = None
        image: Image | None = None
        if remote is not None:   # a registry reference: pulled now, unless that digest is in the cache
            if self.puller is None or not self.puller.allowed_on_create(remote):
                raise InvalidAPIParameters(f"image: this site does not pull from {remote.registry} when a session is "
                                           "created; ask an admin to import the image")
            digest, image = await self.puller.cached(remote)
            if image is None:   # started now, or 429 past the user's pull limit
                pull = (remote, digest, self.puller.start(remote, digest, user=str(owner.uuid)))
        if pull is None:
            image = image or await self.images.lookup(req.image, user=owner.unix_user)
            image.check_resources(slots)

        roles_data: list[dict[str, Any]] = []
        for r in req.roles:   # each role's image, found now (cluster templates name local images)
            found = image if r.image == req.image and image is not None else \
                await self.images.lookup(r.image, user=owner.unix_user)
            found.check_resources(role_slots[r.role])
            roles_data.append({"role": r.role, "replicas": r.replicas, "image": r.image, "image_path": found.path,
                               "resources": role_slots[r.role].as_slots()})
        binds = [[m.source, m.target, m.mode] for m in await self.folders.mounts(
            owner.uuid, list(req.mounts), req.mount_map, group.id)] if self.folders is not None else []
        session_id = new_session_id()
        first = SessionStatus.PULLING if pull else SessionStatus.PENDING
        work_dir = f"{self.settings.sessions.work_root}/{owner.unix_user}/{session_id}"
        row = SessionRow(
            id=session_id, name=name, access_key=access_key, user_uuid=owner.uuid, domain_name=owner.domain_name,
            group_id=group.id, unix_user=owner.unix_user, slurm_account=group.slurm_account, partition=partition,
            image=req.image, image_path=image.path if image else "", architecture=req.architecture, type=req.kind,
            tag=req.tag,
            startup_command=req.startup_command, bootstrap_script=req.bootstrap_script or stored_bootstrap or None,
            environ=environ,
            mounts=list(req.mounts), resources=slots.as_slots(), resource_opts=dict(req.resource_opts or {}),
            cluster_size=req.cluster_size, cluster_mode=req.cluster_mode, starts_at=starts_at,
            batch_timeout=req.batch_timeout, callback_url=req.callback_url, status=first.value,
            status_info=f"pulling {pull[0].name} ({pull[1][:19]}...)" if pull else None,
            status_history={first.value: now.isoformat()}, job_tag=self.tag(session_id, owner.unix_user),
            work_dir=work_dir, kernel_secret=secrets.token_urlsafe(32) if req.kind == "interactive" else None,
            service_ports=service_ports.parse(image.labels.get("ai.backend.service-ports"), session_id, preopen)
            if req.kind == "interactive" and image else [],
            status_data={**({"preopen_ports": list(preopen)} if preopen else {}),
                         **({"binds": binds} if binds else {}),
                         **({"roles": roles_data, "heterogeneous": heterogeneous} if roles_data else {})},
        )
        # admitted again, one creation at a time, in the transaction that adds the row: two creations at once
        # must not both fit under a quota that holds only one (the first look above answers bad requests early)
        async with self._admission, self.db.unit_of_work() as s:
            locked_kp = await s.get(KeypairRow, access_key, with_for_update=True)
            locked_group = await s.get(GroupRow, group.id, with_for_update=True)
            if locked_kp is None or locked_group is None:
                raise InvalidAPIParameters("the keypair or the project went away meanwhile")
            if await self._admit(s, locked_kp, locked_group, owner.domain_name, name, req.cluster_size,
                                 want) is not None:
                raise SessionAlreadyExists(f"an active session named {name} exists")
            s.add(row)
            await s.flush()  # the session row first: the dependency rows refer to it
            for dep_id, _ in deps:
                s.add(SessionDependencyRow(session_id=session_id, depends_on=dep_id))
        lifetime = policy.max_session_lifetime if policy else 0
        if pull is not None:   # PULLING: submitted once the image is in the cache
            task = asyncio.create_task(self._pull_then_submit(session_id, *pull, slots, [j for _, j in deps], lifetime))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            self.publish(row, "session_enqueued")
            row = await self.wait_until_started(row.id, req.max_wait_s) if not req.enqueue_only else row
            return self.create_response(row, created=True), True
        try:
            job_id = await self._submit(row, slots, [j for _, j in deps], policy_lifetime=lifetime)
        except SchedulerUnavailable as e:
            # accepted: submitted once the scheduler answers again, exactly once (answered at once, PENDING,
            # even to a request that would have waited: the outage may last longer than anyone waits)
            if req.enqueue_only or self.settings.sessions.defer_when_unavailable:
                row = await self._defer(session_id, [j for _, j in deps], lifetime, e)
                return self.create_response(row, created=True), True
            await self._forget(session_id)
            raise
        except BaseException:
            await self._forget(session_id)
            raise
        async with self.db.unit_of_work() as s:
            fresh = await s.get(SessionRow, session_id)
            fresh.job_id = job_id  # type: ignore[union-attr]
            row = fresh  # type: ignore[assignment]
        self.publish(row, "session_enqueued")
        self.wake_watcher.set()
        if not req.enqueue_only:
            row = await self.wait_until_started(row.id, req.max_wait_s)
        return self.create_response(row, created=True), True

    async def _admit(self, s: Any, kp: KeypairRow, group: GroupRow, domain: str, name: str, cluster_size: int,
                     want: dict[str, str]) -> SessionRow | None:
        """The checks a new session must pass against what is held now: an unfinished session of that name
        (returned), the freeze, the keypair policy's counts, and the keypair's, project's and domain's totals."""
        existing: SessionRow | None = (await s.execute(select(SessionRow).where(
            SessionRow.access_key == kp.access_key, SessionRow.name == name,
            SessionRow.status.in_([x.value for x in ACTIVE_STATUSES])))).scalars().first()
        if existing is not None:
            return existing
        if await settings_store.frozen(s):
            raise ServerFrozen("the gateway is frozen for maintenance: no new sessions until an admin lets it "
                               "run again")
        policy = await s.get(KeypairResourcePolicyRow, kp.resource_policy)
        await quotas.check_policy(s, policy, kp.access_key, cluster_size)
        await quotas.check(s, access_key=kp.access_key, policy=policy, group=group,
                           domain=await s.get(DomainRow, domain), want=occupied(want))
        return None

    async def _forget(self, session_id: str) -> None:
        """No half-created session stays behind when creation fails."""
        async with self.db.unit_of_work() as s:
            dead = await s.get(SessionRow, session_id)
            if dead is not None:
                await s.delete(dead)

    # ---- sessions accepted while the scheduler was unreachable ----------------------------------------

    async def _defer(self, session_id: str, dep_jobs: list[str | None], lifetime: int,
                     why: SchedulerUnavailable) -> SessionRow:
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionRow, session_id)
            assert row is not None
            row.status_info = f"scheduler unreachable ({why.daemon}): submitted when it answers again"
            row.status_data = {**(row.status_data or {}), DEFERRED: {"deps": [j for j in dep_jobs if j],
                                                                    "lifetime": lifetime}}
        logger.warning("session %s accepted while %s is unreachable: submitted later", session_id, why.daemon)
        self.publish(row, "session_enqueued")
        return row

    async def deferred(self) -> list[SessionRow]:
        async with self.db.unit_of_work() as s:
            rows = (await s.execute(select(SessionRow).where(
                SessionRow.status == SessionStatus.PENDING.value, SessionRow.job_id.is_(None)))).scalars()
            return [r for r in rows if DEFERRED in (r.status_data or {})]

    async def submit_deferred(self) -> int:
        """Submit the sessions accepted while the scheduler was unreachable, each exactly once: a job that
        already carries a session's tag (an sbatch that went through although it seemed to fail) is adopted.
        Returns how many were submitted or adopted; raises SchedulerUnavailable while it still is."""
        waiting = await self.deferred()
        if not waiting:
            return 0
        tagged = {j.comment: j for j in await self.slurm.jobs() if j.comment}
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
                    slots = parse_slots(row.resources, shards_per_gpu=self.settings.sessions.shards_per_gpu)
                    job_id = await self._submit(row, slots, list(plan.get("deps") or []),
                                                policy_lifetime=int(plan.get("lifetime") or 0))
                except SchedulerUnavailable:
                    raise
                except (BridgeError, ValueError) as e:
                    await self._fail_deferred(row.id, getattr(e, "msg", str(e)))
                    continue
            async with self.db.unit_of_work() as s:
                fresh = await s.get(SessionRow, row.id, with_for_update=True)
                assert fresh is not None
                fresh.job_id = job_id
                fresh.status_data = {k: v for k, v in (fresh.status_data or {}).items() if k != DEFERRED}
                destroyed = fresh.status != SessionStatus.PENDING.value
                if not destroyed:
                    fresh.status_info = None
                row = fresh
            if destroyed:   # destroyed while sbatch ran: no orphan job
                await self.slurm.cancel([job_id])
                continue
            done += 1
            self.publish(row, "session_pending")
        return done

    async def _fail_deferred(self, session_id: str, reason: str) -> None:
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionRow, session_id)
            if row is None or row.status != SessionStatus.PENDING.value:
                return
            set_status(row, SessionStatus.ERROR, reason[:500])
            row.result = SessionResult.FAILURE.value
            row.status_data = {k: v for k, v in (row.status_data or {}).items() if k != DEFERRED}
        self.publish(row, "session_failure")
        self.publish(row, "session_terminated")

    async def _pull_then_submit(self, session_id: str, ref: image_pull.RemoteRef, digest: str,
                                task: asyncio.Task[str] | None, slots: SlotRequest, dep_jobs: list[str | None],
                                lifetime: int) -> None:
        """The rest of a PULLING session's creation: the pull, the image's checks, then sbatch. A failure ends
        the session in ERROR with the reason; a session destroyed meanwhile is not submitted (or cancelled)."""
        assert self.puller is not None
        try:
            pulled = await self.puller.pull(ref, digest, task=task)
            image = Image.from_row(pulled)
            image.check_resources(slots)
        except BridgeError as e:
            await self._fail_start(session_id, e.msg)
            return
        except Exception as e:  # noqa: BLE001 - whatever went wrong, the session must not stay PULLING
            logger.exception("pull for session %s", session_id)
            await self._fail_start(session_id, f"image pull failed: {type(e).__name__}")
            return
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionRow, session_id)
            if row is None or row.status != SessionStatus.PULLING.value:
                return
            row.image_path = image.path
            if row.type == "interactive":
                row.service_ports = service_ports.parse(image.labels.get("ai.backend.service-ports"), session_id,
                                                        tuple((row.status_data or {}).get("preopen_ports") or ()))
        try:
            job_id = await self._submit(row, slots, dep_jobs, policy_lifetime=lifetime)
        except BridgeError as e:
            await self._fail_start(session_id, e.msg)
            return
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionRow, session_id)
            assert row is not None
            row.job_id = job_id
            destroyed = row.status != SessionStatus.PULLING.value
            if not destroyed:
                set_status(row, SessionStatus.PENDING, None)
        if destroyed:   # destroyed while sbatch ran: no orphan job
            await self.slurm.cancel([job_id])
            return
        self.publish(row, "session_pending")
        self.wake_watcher.set()

    async def _fail_start(self, session_id: str, reason: str) -> None:
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionRow, session_id)
            if row is None or row.status != SessionStatus.PULLING.value:
                return
            set_status(row, SessionStatus.ERROR, reason[:500])
            row.result = SessionResult.FAILURE.value
        logger.warning("session %s could not start: %s", session_id, reason)
        self.publish(row, "session_failure")
        self.publish(row, "session_terminated")

    def tag(self, session_id: str, unix_user: str) -> str:
        """The job comment that ties a job to its session, signed for job_submit.lua (domain.slurm_notice)."""
        return slurm_notice.signed_tag(self.settings.slurm.notify_secret,
                                       f"{self.settings.slurm.job_tag_prefix}{session_id}", unix_user)

    @staticmethod
    def create_response(row: SessionRow, *, created: bool) -> dict[str, Any]:
        return {"sessionId": row.id, "sessionName": row.name, "status": row.status,
                "statusInfo": row.status_info, "servicePorts": list(row.service_ports or []), "created": created}

    async def _dependencies(self, s: Any, access_key: str, refs: Sequence[str]) -> list[tuple[str, str | None]]:
        """(session id, job id or None when already succeeded) of each dependency, owned by the same key."""
        out: list[tuple[str, str | None]] = []
        for ref in refs:
            sid = normalize_uuid(ref)
            q = select(SessionRow).where(SessionRow.access_key == access_key,
                                         SessionRow.id == sid if sid else SessionRow.name == ref)
            dep = (await s.execute(q.order_by(SessionRow.created_at.desc()))).scalars().first()
            if dep is None:
                raise InvalidAPIParameters(f"dependencies: no session {ref!r} of yours")
            failed = dep.result == SessionResult.FAILURE.value
            if dep.status in (SessionStatus.ERROR, SessionStatus.CANCELLED) or failed:
                raise InvalidAPIParameters(f"dependencies: session {ref} ended without success ({dep.status})")
            if dep.job_id is None:
                raise InvalidAPIParameters(f"dependencies: session {ref} has no job yet")
            out.append((dep.id, dep.job_id))
        return out

    async def _submit(self, row: SessionRow, slots: SlotRequest, dep_jobs: list[str | None],
                      policy_lifetime: int) -> str:
        """Every submission goes through here (creation, a pull's end, a deferred one, restart)."""
        return await session_submit.submit(self, row, slots, dep_jobs, policy_lifetime)

    log_path = staticmethod(session_submit.log_path)

    async def wait_until_started(self, session_id: str, max_wait_s: int) -> SessionRow:
        """Block until the session runs or ends (Backend.AI's enqueueOnly=false); 0 means the server's cap."""
        limit = min(max_wait_s or self.settings.sessions.max_wait_s, self.settings.sessions.max_wait_s)
        deadline = time.monotonic() + limit
        async with self.events.subscribe() as q:
            while True:
                async with self.db.unit_of_work() as s:
                    row = await s.get(SessionRow, session_id)
                if row is None or row.status == SessionStatus.RUNNING or SessionStatus(row.status).is_terminal:
                    return row  # type: ignore[return-value]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return row
                try:
                    async with asyncio.timeout(min(remaining, 5.0)):
                        while (await q.get()).session_id != session_id:
                            pass
                except TimeoutError:
                    pass

    def publish(self, row: SessionRow, name: str, **extra: Any) -> None:
        started, created = aware(getattr(row, "started_at", None)), aware(getattr(row, "created_at", None))
        if name == "session_started" and started is not None and created is not None:   # (or a snapshot's)
            self.metrics.create_to_running.observe(max((started - created).total_seconds(), 0.0))
        self.events.publish(SessionEvent(
            name=name, session_id=row.id, session_name=row.name, access_key=row.access_key,
            group_id=row.group_id, domain_name=row.domain_name, status=row.status, reason=row.status_info,
            result=row.result if name in ("session_terminated", "session_success", "session_failure") else None,
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
            fresh.termination_requested = True
            if fresh.job_id is None:
                set_status(fresh, SessionStatus.CANCELLED, "user-requested")
            else:
                set_status(fresh, SessionStatus.TERMINATING, "user-requested")
            row = fresh
        if row.job_id:
            # the owner cancels their own job; `forced` uses the gateway's administrative identity
            await self.slurm.cancel([row.job_id], user=None if forced else row.unix_user)
        self.publish(row, "session_terminating" if row.job_id else "session_cancelled")
        self.wake_watcher.set()
        return {"stats": {}, "status": row.status}

    async def terminate_all(self, reason: str) -> int:
        """End every unfinished session (a forced freeze): ONE scancel, with the gateway's administrative
        identity, for all their jobs; each keeps `reason` as its status_info. Returns how many."""
        async with self.db.unit_of_work() as s:
            rows = list((await s.execute(select(SessionRow).where(
                SessionRow.status.in_([x.value for x in ACTIVE_STATUSES])).with_for_update())).scalars())
            for row in rows:
                row.termination_requested = True
                row.status_data = {**(row.status_data or {}), "termination_reason": reason}
                set_status(row, SessionStatus.TERMINATING if row.job_id else SessionStatus.CANCELLED, reason)
        jobs = [r.job_id for r in rows if r.job_id]
        if jobs:
            await self.slurm.cancel(jobs)
        for row in rows:
            self.publish(row, "session_terminating" if row.job_id else "session_cancelled")
        self.wake_watcher.set()
        return len(rows)

    async def restart(self, auth: AuthContext, ref: str, owner_access_key: str | None = None) -> None:
        """Restart the kernel: a fresh job (same session, same tag) replaces the old one, which is cancelled
        after the new one is recorded, so the watcher never sees the session without a job."""
        row = await self.resolve(auth, ref, owner_access_key)
        if SessionStatus(row.status) not in (SessionStatus.RUNNING, SessionStatus.PENDING):
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
            fresh.job_id = new_job
            set_status(fresh, SessionStatus.RESTARTING, "user-requested")
            row = fresh
        if old_job:
            await self.slurm.cancel([old_job], user=row.unix_user)
        self.publish(row, "session_restarting")
        self.wake_watcher.set()

    async def rename(self, auth: AuthContext, ref: str, new_name: str) -> None:
        new_name = check_session_name(new_name)
        row = await self.resolve(auth, ref)
        async with self.db.unit_of_work() as s:
            clash = (await s.execute(select(SessionRow.id).where(
                SessionRow.access_key == row.access_key, SessionRow.name == new_name, SessionRow.id != row.id,
                SessionRow.status.in_([x.value for x in ACTIVE_STATUSES])))).first()
            if clash is not None:
                raise SessionAlreadyExists(f"an active session named {new_name} exists",
                                           data={"existingSessionId": clash[0]})
            fresh = await s.get(SessionRow, row.id)
            fresh.name = new_name  # type: ignore[union-attr]


def new_session_id() -> str:
    import uuid

    return str(uuid.uuid4())
