"""Reading sessions: one by name or id (and its kernels), what a caller may see, a page of a listing and
what it shows beside it, counts by status, name matches, the dependency graph, and a kernel's log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select

from bridge.adapters.db.tables import GroupRow, KeypairRow, SessionDependencyRow, SessionRow, UserRow
from bridge.domain import cluster
from bridge.domain.auth import AuthContext
from bridge.domain.ids import normalize_uuid
from bridge.domain.session import ACTIVE_STATUSES, SessionStatus
from bridge.errors import GenericForbidden, InvalidAPIParameters, SessionNotFound, TooManySessionsMatched

if TYPE_CHECKING:
    from bridge.services.sessions import SessionService

# the columns a session listing may be ordered by
ORDER_KEYS = frozenset({"created_at", "name", "status", "status_changed", "terminated_at", "type", "image"})


def may_see(auth: AuthContext, row: SessionRow) -> bool:
    """Who may see a session: its owner, and the admins of its domain. To anyone else it does not exist."""
    return row.access_key == auth.access_key or auth.can_manage_domain(row.domain_name)


@dataclass
class SessionRelations:
    """What a listing shows next to its sessions: project names, owner emails, the sessions each depends on."""
    group_names: dict[str, str] = field(default_factory=dict)
    user_emails: dict[str, str] = field(default_factory=dict)
    dependencies: dict[str, list[SessionRow]] = field(default_factory=dict)


def kernel_of(row: SessionRow, ref: str | None) -> cluster.Kernel | None:
    """One of the session's kernels, by its id or host name; None names main1."""
    return cluster.find(row.id, row.cluster_size, row.cluster_mode, ref, cluster.role_plan(row.status_data))


async def owner_key(service: SessionService, auth: AuthContext,
                    owner_access_key: str | None) -> AuthContext | tuple[str, str]:
    """The access key whose sessions a request acts on: the caller's, or (admins) another one."""
    if not owner_access_key or owner_access_key == auth.access_key:
        return auth
    async with service.db.unit_of_work() as s:
        kp = await s.get(KeypairRow, owner_access_key)
        owner = await s.get(UserRow, kp.user) if kp else None
    if kp is None or owner is None:
        raise InvalidAPIParameters("owner_access_key: no such keypair")
    if not auth.may_act_for(owner.uuid, owner.role, owner.domain_name):
        raise GenericForbidden("you may act only for accounts of your domain whose role is below yours")
    return (kp.access_key, owner.uuid)


async def resolve(service: SessionService, auth: AuthContext, ref: str,
                  owner_access_key: str | None = None) -> SessionRow:
    """A session by UUID (any owner the caller may see) or by name (the owner's; active ones first)."""
    owner = await service.owner_key(auth, owner_access_key)
    access_key = owner.access_key if isinstance(owner, AuthContext) else owner[0]
    sid = normalize_uuid(ref)
    async with service.db.unit_of_work() as s:
        if sid is not None:
            row = await s.get(SessionRow, sid)
            # another user's session is "not found", not "forbidden": ids are not to be probed
            if row is not None and (row.access_key == access_key or may_see(auth, row)):
                if row.access_key != access_key:   # an admin's look at someone else's: not above them
                    owner_row = await s.get(UserRow, row.user_uuid)
                    if owner_row is None or not auth.may_act_for(owner_row.uuid, owner_row.role,
                                                                 owner_row.domain_name):
                        raise GenericForbidden("this session's owner is not below you in rank")
                return row
        rows = list((await s.execute(
            select(SessionRow).where(SessionRow.access_key == access_key, SessionRow.name == ref)
            .order_by(SessionRow.created_at.desc()))).scalars())
    if not rows:
        raise SessionNotFound(f"no session named or with id {ref!r}")
    active = [r for r in rows if not SessionStatus(r.status).is_terminal]
    if len(active) > 1:
        raise TooManySessionsMatched(
            f"{len(active)} sessions are named {ref}", data={"matches": [
                {"id": r.id, "name": r.name, "status": r.status} for r in active]})
    return active[0] if active else rows[0]


async def resolve_kernel(service: SessionService, auth: AuthContext, ref: str, owner_access_key: str | None = None,
                         kernel_ref: str | None = None) -> tuple[SessionRow, cluster.Kernel]:
    """A session and one of its kernels: `ref` names the session (its main kernel) or a sub kernel by its
    id (what `compute_session { containers { id } }` lists); `kernel_ref` then picks another kernel."""
    try:
        row = await service.resolve(auth, ref, owner_access_key)
    except SessionNotFound:
        sid = normalize_uuid(ref)
        owner_id = await _session_of_kernel(service, sid) if sid else None
        if sid is None or owner_id is None:
            raise
        row = await service.resolve(auth, owner_id, owner_access_key)
        if kernel_of(row, sid) is None:
            raise
        kernel_ref = kernel_ref or sid
    kernel = kernel_of(row, kernel_ref)
    if kernel is None:
        raise InvalidAPIParameters(f"kernel_id: session {row.name} has no kernel {kernel_ref}")
    return row, kernel


async def _session_of_kernel(service: SessionService, kernel_id: str) -> str | None:
    """The id of the cluster session a sub kernel's id belongs to (bridge.domain.cluster.kernel_id)."""
    async with service.db.unit_of_work() as s:
        return (await s.execute(select(SessionRow.id).where(
            SessionRow.id.startswith(kernel_id[:-4], autoescape=True), SessionRow.cluster_size > 1))).scalar()


async def visible_kernel(service: SessionService, auth: AuthContext,
                         kernel_id: str) -> tuple[SessionRow, cluster.Kernel] | None:
    """A kernel by its id and its session, or None when there is none or the caller may not see it."""
    sid = normalize_uuid(kernel_id)
    if sid is None:
        return None
    row = await service.visible(auth, sid) or await service.visible(auth, await _session_of_kernel(service, sid) or "")
    kernel = kernel_of(row, sid) if row else None
    return (row, kernel) if row is not None and kernel is not None else None


async def visible(service: SessionService, auth: AuthContext, session_id: str) -> SessionRow | None:
    """A session by id, or None when there is none or the caller may not see it."""
    sid = normalize_uuid(session_id)
    if sid is None:
        return None
    async with service.db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
    return row if row is not None and may_see(auth, row) else None


async def page(service: SessionService, auth: AuthContext, *, offset: int, limit: int, access_key: str | None = None,
               domain: str | None = None, group_id: str | None = None, statuses: Sequence[str] | None = None,
               order: str = "created_at", ascending: bool = False) -> tuple[list[SessionRow], int]:
    """One page of the sessions the caller may list, and how many there are in all: a user's own; an
    admin's, any owner's (`access_key`) within `domain` (the caller decides which domains it may ask)."""
    if order not in ORDER_KEYS:
        raise InvalidAPIParameters(f"cannot order sessions by {order!r}")
    if access_key and access_key != auth.access_key and not auth.is_admin:
        raise GenericForbidden("only admins may list another user's sessions")
    q = select(SessionRow)
    if not auth.is_admin:
        q = q.where(SessionRow.access_key == auth.access_key)
    elif access_key:
        q = q.where(SessionRow.access_key == access_key)
    if domain and auth.is_admin:
        q = q.where(SessionRow.domain_name == domain)
    if group_id:
        q = q.where(SessionRow.group_id == str(group_id))
    if statuses is not None:
        q = q.where(SessionRow.status.in_(list(statuses)))
    column = getattr(SessionRow, order)
    async with service.db.unit_of_work() as s:
        total = (await s.execute(select(func.count()).select_from(q.subquery()))).scalar() or 0
        rows = list((await s.execute(q.order_by(column.asc() if ascending else column.desc())
                                     .offset(max(offset, 0)).limit(max(limit, 0)))).scalars())
    return rows, total


async def relations(service: SessionService, rows: Sequence[SessionRow]) -> SessionRelations:
    """Project names, owner emails and dependencies of the given sessions (and of what they depend on)."""
    out = SessionRelations()
    if not rows:
        return out
    async with service.db.unit_of_work() as s:
        for sid, dep in (await s.execute(select(SessionDependencyRow.session_id, SessionRow).join(
                SessionRow, SessionRow.id == SessionDependencyRow.depends_on).where(
                SessionDependencyRow.session_id.in_([r.id for r in rows])))).all():
            out.dependencies.setdefault(sid, []).append(dep)
        every = [*rows, *(d for deps in out.dependencies.values() for d in deps)]
        out.group_names = {g.id: g.name for g in (await s.execute(
            select(GroupRow).where(GroupRow.id.in_({r.group_id for r in every})))).scalars()}
        out.user_emails = {u.uuid: u.email for u in (await s.execute(
            select(UserRow).where(UserRow.uuid.in_({r.user_uuid for r in every})))).scalars()}
    return out


async def count_by_status(service: SessionService) -> dict[str, int]:
    """Sessions not yet ended, by status."""
    async with service.db.unit_of_work() as s:
        rows = (await s.execute(select(SessionRow.status, func.count()).where(
            SessionRow.status.in_([x.value for x in ACTIVE_STATUSES])).group_by(SessionRow.status))).all()
    return {status: int(n) for status, n in rows}


async def match(service: SessionService, auth: AuthContext, prefix: str) -> list[dict[str, str]]:
    if not prefix:
        raise InvalidAPIParameters("id: a name or id prefix is required")
    async with service.db.unit_of_work() as s:
        rows = (await s.execute(select(SessionRow).where(
            SessionRow.access_key == auth.access_key,
            or_(SessionRow.id.startswith(prefix.lower(), autoescape=True),
                SessionRow.name.startswith(prefix, autoescape=True)),
            SessionRow.status.in_([x.value for x in ACTIVE_STATUSES]))
            .order_by(SessionRow.created_at))).scalars()
        return [{"id": r.id, "name": r.name, "status": r.status} for r in rows]


async def dependency_graph(service: SessionService, auth: AuthContext, ref: str) -> dict[str, Any]:
    root = await service.resolve(auth, ref)

    async def node(s: Any, row: SessionRow, seen: set[str]) -> dict[str, Any]:
        deps = (await s.execute(select(SessionRow).join(
            SessionDependencyRow, SessionDependencyRow.depends_on == SessionRow.id)
            .where(SessionDependencyRow.session_id == row.id))).scalars().all()
        children = [await node(s, d, seen | {row.id}) for d in deps if d.id not in seen]
        return {"session_id": row.id, "session_name": row.name, "status": row.status,
                "result": row.result, "depends_on": children}

    async with service.db.unit_of_work() as s:
        return await node(s, root, set())


async def logs(service: SessionService, auth: AuthContext, ref: str, owner_access_key: str | None = None,
               max_bytes: int = 4 * 1024 * 1024, kernel_id: str | None = None) -> str:
    """The log of the session's main kernel (the job's output), or of the kernel `kernel_id` names (its id
    or its host name, sub1)."""
    row, kernel = await service.resolve_kernel(auth, ref, owner_access_key, kernel_id)
    done = await service.runner.run(["tail", "-c", str(max_bytes), service.log_path(row, kernel)], user=row.unix_user,
                                    timeout_s=service.settings.slurm.command_timeout_s)
    if not done.ok:
        if "No such file" in done.stderr:
            return ""  # not started yet
        raise InvalidAPIParameters(f"cannot read the session's log: {done.stderr.strip()[:200]}")
    return done.stdout
