"""Launching a session: the request's checks (bridge.domain.session_checks), the admission against the
freeze and the quotas, the fit on the resource group's nodes, the image (pulled first for a registry
reference: the session is PULLING meanwhile), then the submission (bridge.services.session_submit), and the
wait until it runs when the request asks for it.

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
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.exc import IntegrityError

from bridge.adapters import outbound
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
from bridge.adapters.slurm.base import gres_count
from bridge.domain import cluster, session_checks
from bridge.domain.auth import AuthContext
from bridge.domain.ids import normalize_uuid
from bridge.domain.resources import SlotRequest, occupied
from bridge.domain.session import ACTIVE_STATUSES, SessionRequest, SessionResult, SessionStatus
from bridge.domain.transitions import Current, EventName, GatewayEvent, Happening, transition
from bridge.errors import (
    BridgeError,
    GenericForbidden,
    InvalidAPIParameters,
    SchedulerUnavailable,
    ServerFrozen,
    SessionAlreadyExists,
)
from bridge.services import image_pull, quotas, service_ports, session_deferred, settings_store
from bridge.services.images import Image
from bridge.services.session_reconcile import fail_unstarted, set_status

if TYPE_CHECKING:
    from bridge.services.sessions import SessionService

logger = logging.getLogger(__name__)

async def create(service: SessionService, auth: AuthContext, req: SessionRequest) -> tuple[dict[str, Any], bool]:
    """(response body, created). Raises before writing anything if any check fails."""
    owner_ctx = await service.owner_key(auth, req.owner_access_key)
    access_key = owner_ctx.access_key if isinstance(owner_ctx, AuthContext) else owner_ctx[0]
    checked = session_checks.check_request(
        req, default_mem=service.settings.sessions.default_mem, shards_per_gpu=service.settings.sessions.shards_per_gpu,
        kernel_network=service.settings.sessions.kernel_network,
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
        await outbound.check_url(req.callback_url, service.callback_networks, "callback_url")

    async with service.db.unit_of_work() as s:
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
        existing = await _admit(s, kp, group, owner.domain_name, name, req.cluster_size, want)
        if existing is not None:
            if req.reuse_if_exists:
                return create_response(existing, created=False), False
            raise SessionAlreadyExists(f"an active session named {name} exists",
                                       data={"existingSessionId": existing.id})
        partition = await service.resource_groups.choose(
               s, req.scaling_group, service.settings.slurm.default_partition, domain=owner.domain_name,
               group_id=group.id, access_key=access_key)
        stored_bootstrap = kp.bootstrap_script   # the keypair's, when the request brings none
        policy = await s.get(KeypairResourcePolicyRow, kp.resource_policy)
        deps = await _dependencies(s, access_key, req.dependencies)
    for r in req.roles:
        await check_fits(service, partition, role_slots[r.role], r.replicas, req.cluster_mode)
    await check_fits(service, partition, slots if not req.roles else role_slots["main"], req.cluster_size,
                          req.cluster_mode)
    remote = image_pull.parse(req.image)
    pull: tuple[image_pull.RemoteRef, str, asyncio.Task[str] | None] | None = None
    image: Image | None = None
    if remote is not None:   # a registry reference: pulled now, unless that digest is in the cache
        if service.puller is None or not service.puller.allowed_on_create(remote):
            raise InvalidAPIParameters(f"image: this site does not pull from {remote.registry} when a session is "
                                       "created; ask an admin to import the image")
        digest, image = await service.puller.cached(remote)
        if image is None:   # started now, or 429 past the user's pull limit
            pull = (remote, digest, service.puller.start(remote, digest, user=str(owner.uuid)))
    if pull is None:
        image = image or await service.images.lookup(req.image, user=owner.unix_user)
        image.check_resources(slots)

    roles_data: list[dict[str, Any]] = []
    for r in req.roles:   # each role's image, found now (cluster templates name local images)
        found = image if r.image == req.image and image is not None else \
            await service.images.lookup(r.image, user=owner.unix_user)
        found.check_resources(role_slots[r.role])
        roles_data.append({"role": r.role, "replicas": r.replicas, "image": r.image, "image_path": found.path,
                           "resources": role_slots[r.role].as_slots()})
    binds = [[m.source, m.target, m.mode] for m in await service.folders.mounts(
           owner.uuid, list(req.mounts), req.mount_map, group.id)] if service.folders is not None else []
    session_id = new_session_id()
    first = SessionStatus.PULLING if pull else SessionStatus.PENDING
    work_dir = f"{service.settings.sessions.work_root}/{owner.unix_user}/{session_id}"
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
        status_history={first.value: now.isoformat()}, job_tag=service.tag(session_id, owner.unix_user),
        work_dir=work_dir, kernel_secret=secrets.token_urlsafe(32) if req.kind == "interactive" else None,
        service_ports=service_ports.parse(image.labels.get("ai.backend.service-ports"), session_id, preopen)
        if req.kind == "interactive" and image else [],
        status_data={**({"preopen_ports": list(preopen)} if preopen else {}),
                     **({"binds": binds} if binds else {}),
                     **({"roles": roles_data, "heterogeneous": heterogeneous} if roles_data else {})},
    )
    # admitted again, one creation at a time, in the transaction that adds the row: two creations at once
    # must not both fit under a quota that holds only one (the first look above answers bad requests early)
    holder: str | None = None   # the unfinished session that took the name meanwhile, if one did
    try:
        async with service._admission, service.db.unit_of_work() as s:
            locked_kp = await s.get(KeypairRow, access_key, with_for_update=True)
            locked_group = await s.get(GroupRow, group.id, with_for_update=True)
            if locked_kp is None or locked_group is None:
                raise InvalidAPIParameters("the keypair or the project went away meanwhile")
            taken = await _admit(s, locked_kp, locked_group, owner.domain_name, name, req.cluster_size, want)
            if taken is not None:
                holder = taken.id
            else:
                s.add(row)
                await s.flush()  # the session row first: the dependency rows refer to it
                for dep_id, _ in deps:
                    s.add(SessionDependencyRow(session_id=session_id, depends_on=dep_id))
    except IntegrityError:
        # the database's own rule (uq_sessions_active_name): another gateway process admitted a session of
        # that name between this one's check and its insert
        holder = await active_named(service, access_key, name)
        if holder is None:
            raise
    if holder is not None:   # answered as the first look answers a clash
        if req.reuse_if_exists:
            async with service.db.unit_of_work() as s:
                existing = await s.get(SessionRow, holder)
            if existing is not None:
                return create_response(existing, created=False), False
        raise SessionAlreadyExists(f"an active session named {name} exists", data={"existingSessionId": holder})
    lifetime = policy.max_session_lifetime if policy else 0
    if pull is not None:   # PULLING: submitted once the image is in the cache
        task = asyncio.create_task(_pull_then_submit(service, session_id, *pull, slots, [j for _, j in deps], lifetime))
        service._background.add(task)
        task.add_done_callback(service._background.discard)
        service.publish(row, EventName.SESSION_ENQUEUED)
        row = await wait_until_started(service, row.id, req.max_wait_s) if not req.enqueue_only else row
        return create_response(row, created=True), True
    try:
        job_id = await service._submit(row, slots, [j for _, j in deps], policy_lifetime=lifetime)
    except SchedulerUnavailable as e:
        # accepted: submitted once the scheduler answers again, exactly once (answered at once, PENDING,
        # even to a request that would have waited: the outage may last longer than anyone waits)
        if req.enqueue_only or service.settings.sessions.defer_when_unavailable:
            row = await session_deferred.defer(service, session_id, [j for _, j in deps], lifetime, e)
            return create_response(row, created=True), True
        await _forget(service, session_id)
        raise
    except BaseException:
        await _forget(service, session_id)
        raise
    async with service.db.unit_of_work() as s:
        fresh = await s.get(SessionRow, session_id)
        fresh.job_id = job_id  # type: ignore[union-attr]
        row = fresh  # type: ignore[assignment]
    service.publish(row, EventName.SESSION_ENQUEUED)
    service.wake_watcher.set()
    if not req.enqueue_only:
        row = await wait_until_started(service, row.id, req.max_wait_s)
    return create_response(row, created=True), True


async def active_named(service: SessionService, access_key: str, name: str, but: str | None = None) -> str | None:
    """The id of the keypair's unfinished session of that name (other than `but`), if there is one."""
    async with service.db.unit_of_work() as s:
        found = (await s.execute(select(SessionRow.id).where(
            _holds_name(access_key, name), SessionRow.id != (but or "")))).first()
    return found[0] if found else None


def _holds_name(access_key: str, name: str) -> ColumnElement[bool]:
    """The keypair's unfinished sessions of that name: what uq_sessions_active_name allows one of."""
    return and_(SessionRow.access_key == access_key, SessionRow.name == name,
                SessionRow.status.in_([x.value for x in ACTIVE_STATUSES]))


async def _admit(s: Any, kp: KeypairRow, group: GroupRow, domain: str, name: str, cluster_size: int,
                 want: dict[str, str]) -> SessionRow | None:
    """The checks a new session must pass against what is held now: an unfinished session of that name
    (returned), the freeze, the keypair policy's counts, and the keypair's, project's and domain's totals."""
    existing: SessionRow | None = (await s.execute(select(SessionRow).where(
        _holds_name(kp.access_key, name)))).scalars().first()
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


async def _forget(service: SessionService, session_id: str) -> None:
    """No half-created session stays behind when creation fails."""
    async with service.db.unit_of_work() as s:
        dead = await s.get(SessionRow, session_id)
        if dead is not None:
            await s.delete(dead)


async def _dependencies(s: Any, access_key: str, refs: Sequence[str]) -> list[tuple[str, str | None]]:
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


async def check_fits(service: SessionService, partition: str, slots: SlotRequest, size: int = 1,
                     mode: str = cluster.SINGLE_NODE) -> None:
    """Refuse, naming the slot, a kernel that no node of the resource group could ever hold (sbatch would
    only say "Requested node configuration is not available"): a single-node cluster's kernels all on one
    node, a multi-node cluster's on as many nodes as it has kernels. Busy or down nodes count: this is
    about size, not about now. Without node information the check is left to Slurm."""
    try:
        nodes = await service.facts_nodes.get()
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


async def _pull_then_submit(service: SessionService, session_id: str, ref: image_pull.RemoteRef, digest: str,
                            task: asyncio.Task[str] | None, slots: SlotRequest, dep_jobs: list[str | None],
                            lifetime: int) -> None:
    """The rest of a PULLING session's creation: the pull, the image's checks, then sbatch. A failure ends
    the session in ERROR with the reason; a session destroyed meanwhile is not submitted (or cancelled)."""
    assert service.puller is not None
    try:
        pulled = await service.puller.pull(ref, digest, task=task)
        image = Image.from_row(pulled)
        image.check_resources(slots)
    except BridgeError as e:
        await fail_unstarted(service, session_id, e.msg, was=SessionStatus.PULLING)
        return
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the session must not stay PULLING
        logger.exception("pull for session %s", session_id)
        await fail_unstarted(service, session_id, f"image pull failed: {type(e).__name__}", was=SessionStatus.PULLING)
        return
    async with service.db.unit_of_work() as s:
        row = await s.get(SessionRow, session_id)
        if row is None or row.status != SessionStatus.PULLING.value:
            return
        row.image_path = image.path
        if row.type == "interactive":
            row.service_ports = service_ports.parse(image.labels.get("ai.backend.service-ports"), session_id,
                                                    tuple((row.status_data or {}).get("preopen_ports") or ()))
    try:
        job_id = await service._submit(row, slots, dep_jobs, policy_lifetime=lifetime)
    except BridgeError as e:
        await fail_unstarted(service, session_id, e.msg, was=SessionStatus.PULLING)
        return
    async with service.db.unit_of_work() as s:
        row = await s.get(SessionRow, session_id)
        assert row is not None
        row.job_id = job_id
        # destroyed while sbatch ran (no longer PULLING): None, and its job is cancelled (no orphan)
        change = transition(Current(SessionStatus(row.status), row.status_info, has_job=True),
                            GatewayEvent(Happening.SUBMITTED))
        if change is not None:
            set_status(row, change.status, change.status_info)
    if change is None:
        await service.slurm.cancel([job_id])
        return
    for name in change.events:
        service.publish(row, name)
    service.wake_watcher.set()


async def wait_until_started(service: SessionService, session_id: str, max_wait_s: int) -> SessionRow:
    """Block until the session runs or ends (Backend.AI's enqueueOnly=false); 0 means the server's cap."""
    limit = min(max_wait_s or service.settings.sessions.max_wait_s, service.settings.sessions.max_wait_s)
    deadline = time.monotonic() + limit
    async with service.events.subscribe() as q:
        while True:
            async with service.db.unit_of_work() as s:
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


def create_response(row: SessionRow, *, created: bool) -> dict[str, Any]:
    return {"sessionId": row.id, "sessionName": row.name, "status": row.status,
            "statusInfo": row.status_info, "servicePorts": list(row.service_ports or []), "created": created}


def new_session_id() -> str:
    import uuid

    return str(uuid.uuid4())
