"""Resolvers of the admin GraphQL API. Every resolver checks the caller's role before it reads or writes:
a user sees only their own objects, a domain admin their domain, a superadmin everything."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from graphql import GraphQLError, GraphQLResolveInfo

from bridge.api.graphql import wire
from bridge.api.wire.folders import graphql_folder
from bridge.domain.auth import AuthContext
from bridge.errors import BridgeError, FolderNotFound, GenericForbidden, InvalidAPIParameters
from bridge.services import accounts, quotas
from bridge.services.bgtasks import BackgroundTasks
from bridge.services.images import ImageResolver
from bridge.services.images import wire as image_wire
from bridge.services.project_sync import ProjectSync
from bridge.services.records import GroupRow, KeypairRow, SessionRow, UnitOfWork, UnitsOfWork, UserRow
from bridge.services.sessions import SessionService
from bridge.services.unix_users import UnixUsers
from bridge.services.utilization import UtilizationMonitor


@dataclass
class GqlContext:
    auth: AuthContext
    database: UnitsOfWork
    images: ImageResolver
    sessions: SessionService
    projects: ProjectSync
    unix_users: UnixUsers
    utilization: UtilizationMonitor | None = None   # live_stat, last_stat, idle_checks, where the server runs it
    bgtasks: BackgroundTasks = field(default_factory=BackgroundTasks)

    @property
    def accounts(self) -> accounts.AccountService:
        """The account rules, with this gateway's Slurm sync and Unix identities."""
        return accounts.AccountService(self.projects, self.unix_users)

    def db(self) -> AbstractAsyncContextManager[UnitOfWork]:
        """A unit of work of its own for each resolver, handed to the services (a resolver queries nothing
        itself): graphql-core resolves sibling fields concurrently, and a mutation that fails must roll back
        alone."""
        return self.database.unit_of_work()


# what every resolver gets: the executor runs each operation with a GqlContext (executor.execute)
Info: TypeAlias = "GraphQLResolveInfo[GqlContext]"

Resolver = Callable[..., Awaitable[Any]]
QUERIES: dict[str, Resolver] = {}
MUTATIONS: dict[str, Resolver] = {}


def query(fn: Resolver) -> Resolver:
    QUERIES[fn.__name__] = fn
    return fn


def mutation(fn: Resolver) -> Resolver:
    async def wrapped(root: Any, info: Info, **kw: Any) -> Any:
        try:
            return await fn(root, info, **kw)
        except BridgeError as e:
            return {"ok": False, "msg": e.msg}
        except accounts.NotPermitted:
            raise forbidden() from None

    MUTATIONS[fn.__name__] = wrapped
    return wrapped


def ctx(info: Info) -> GqlContext:
    return info.context


def forbidden(what: str = "this operation") -> GraphQLError:
    return GraphQLError(f"Forbidden: you have no permission for {what}")


def require_admin(c: GqlContext, domain: str | None = None) -> None:
    if not accounts.is_admin_of(c.auth, domain):
        raise forbidden()


def require_superadmin(c: GqlContext) -> None:
    try:
        accounts.require_superadmin(c.auth)
    except accounts.NotPermitted:
        raise forbidden() from None


def scope_domain(c: GqlContext, requested: str | None) -> str | None:
    """The domain a listing is limited to: superadmins may pick any (or all), admins get their own."""
    if c.auth.is_superadmin:
        return requested
    return c.auth.domain_name


def paginate(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    if limit < 0 or offset < 0:
        raise GraphQLError("limit and offset must not be negative")
    return {"items": items[offset:offset + limit], "total_count": len(items)}


def parse_jsonstr(value: Any, what: str) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise GraphQLError(f"{what} must be a JSON string") from None


# ---- conversions needing the database ----------------------------------------------------------------

async def _scaling_group_names(c: GqlContext, kind: str, target: str) -> list[str]:
    """The resource groups associated with a domain, a project ("group") or a keypair."""
    async with c.db() as s:
        return await c.sessions.resource_groups.associated(s, kind, target)


async def _user(c: GqlContext, s: UnitOfWork, row: UserRow) -> dict[str, Any]:
    groups = await accounts.groups_of_user(s, row.uuid)
    kps = await accounts.list_keypairs(s, email=row.email)
    main = next((k for k in kps if k.is_active), None)
    return wire.user(row, groups, main.access_key if main else None, main.resource_policy if main else None)


async def _keypair(c: GqlContext, s: UnitOfWork, row: KeypairRow, *, issued: bool = False) -> dict[str, Any]:
    """A keypair as the API shows it: its secrets (secret key, SSH private key) to its owner alone, and once
    to whoever has just issued it (`issued`)."""
    owner = await accounts.get_user(s, row.user)
    projects = [g.name for g in await accounts.groups_of_user(s, row.user)] if owner else []
    show_secret = row.user == c.auth.user_uuid or issued
    out = wire.keypair(row, owner, projects, show_secret=show_secret)
    key, policy_name = row.access_key, row.resource_policy

    async def concurrency_used(_info: Info, **_: Any) -> int:   # asked for: counted
        async with c.db() as s2:
            return await quotas.sessions_held(s2, key)

    async def concurrency_limit(_info: Info, **_: Any) -> int | None:   # the policy's
        async with c.db() as s2:
            policy = await accounts.get_policy(s2, policy_name)
        return policy.max_concurrent_sessions if policy and policy.max_concurrent_sessions else None
    out["concurrency_used"], out["concurrency_limit"] = concurrency_used, concurrency_limit
    folders = c.sessions.folders
    if folders is not None and owner is not None:
        async def vfolders(_info: Info, **_: Any) -> list[dict[str, Any]]:   # asked for: listed
            return [graphql_folder(a, owner.email) for a in await folders.owned_by(owner.uuid)]
        out["vfolders"] = vfolders
    return out


def _may_see_user(c: GqlContext, row: UserRow) -> bool:
    return row.uuid == c.auth.user_uuid or c.auth.can_manage_domain(row.domain_name)


# ---- queries ------------------------------------------------------------------------------------------

@query
async def domain(_r: Any, info: Info, name: str | None = None) -> dict[str, Any] | None:
    c = ctx(info)
    name = name or c.auth.domain_name
    if name != c.auth.domain_name and not c.auth.is_superadmin:
        raise forbidden("another domain")
    async with c.db() as s:
        row = await accounts.get_domain(s, name)
    return wire.domain(row, await _scaling_group_names(c, "domain", row.name)) if row else None


@query
async def domains(_r: Any, info: Info, is_active: bool | None = None) -> list[dict[str, Any]]:
    c = ctx(info)
    async with c.db() as s:
        rows = await accounts.list_domains(s, is_active=is_active)
    return [wire.domain(r, await _scaling_group_names(c, "domain", r.name)) for r in rows
            if c.auth.is_superadmin or r.name == c.auth.domain_name]


async def _resource_groups(c: GqlContext, names: list[str] | None, is_active: bool | None) -> list[dict[str, Any]]:
    groups = c.sessions.resource_groups
    live = await groups.live()
    async with c.db() as s:
        rows = await groups.rows(s, names)
    return [wire.scaling_group(r, live.get(r.name)) for r in rows if is_active is None or r.is_active == is_active]


async def _usable(c: GqlContext, s: UnitOfWork) -> list[str]:
    """The groups a caller who is not a superadmin may see: those open to their domain, any of their
    projects, or their keypair (a domain admin: those open to their domain or any of its projects)."""
    groups = c.sessions.resource_groups
    if c.auth.is_admin:
        projects = await accounts.list_groups(s, domain=c.auth.domain_name)
    else:
        projects = await accounts.groups_of_user(s, c.auth.user_uuid)
    names = set(await groups.allowed(s, domain=c.auth.domain_name, group_id=None, access_key=c.auth.access_key))
    for g in projects:
        names |= set(await groups.associated(s, "group", g.id))
    return sorted(names)


@query
async def scaling_groups(_r: Any, info: Info, name: str | None = None,
                         is_active: bool | None = None, **_: Any) -> list[dict[str, Any]]:
    c = ctx(info)
    names = [name] if name else None
    if not c.auth.is_superadmin:
        async with c.db() as s:
            usable = await _usable(c, s)
        names = [n for n in (names or usable) if n in usable]
    return await _resource_groups(c, names, is_active)


@query
async def scaling_group(_r: Any, info: Info, name: str | None = None) -> dict[str, Any] | None:
    found = await scaling_groups(_r, info, name=name) if name else []
    return found[0] if found else None


async def _associated(c: GqlContext, kind: str, target: str, is_active: bool | None) -> list[dict[str, Any]]:
    return await _resource_groups(c, await _scaling_group_names(c, kind, target), is_active)


@query
async def scaling_groups_for_domain(_r: Any, info: Info, domain: str,
                                    is_active: bool | None = None) -> list[dict[str, Any]]:
    c = ctx(info)
    require_admin(c, domain)
    return await _associated(c, "domain", domain, is_active)


@query
async def scaling_groups_for_user_group(_r: Any, info: Info, user_group: str,
                                        is_active: bool | None = None) -> list[dict[str, Any]]:
    c = ctx(info)
    async with c.db() as s:
        row = await accounts.get_project(s, str(user_group))
        if row is None or not await _visible_groups(c, s, [row]):
            raise forbidden("this project")
    return await _associated(c, "group", row.id, is_active)


@query
async def scaling_groups_for_keypair(_r: Any, info: Info, access_key: str,
                                     is_active: bool | None = None) -> list[dict[str, Any]]:
    c = ctx(info)
    async with c.db() as s:
        kp = await accounts.get_keypair(s, access_key)
        owner = await accounts.get_user(s, kp.user) if kp else None
    if owner is None or not _may_see_user(c, owner):
        raise forbidden("this keypair")
    return await _associated(c, "keypair", access_key, is_active)


@query
async def resource_presets(_r: Any, info: Info) -> list[dict[str, Any]]:
    async with ctx(info).db() as s:
        return [wire.preset(r) for r in await accounts.list_presets(s)]


@query
async def resource_preset(_r: Any, info: Info, name: str) -> dict[str, Any] | None:
    async with ctx(info).db() as s:
        row = await accounts.get_preset(s, name)
    return wire.preset(row) if row else None


async def _agents(info: Info, scaling_group: str | None, status: str | None) -> list[dict[str, Any]]:
    c = ctx(info)
    require_superadmin(c)
    items = [wire.agent(n) for n in await c.sessions.facts_nodes.get()]
    if scaling_group:
        items = [a for a in items if a["scaling_group"] == scaling_group]
    if status:
        items = [a for a in items if a["status"] in status.split(",")]
    return items


@query
async def agent_summary_list(_r: Any, info: Info, limit: int, offset: int,
                             scaling_group: str | None = None, status: str | None = None, **_: Any) -> dict[str, Any]:
    """The nodes of the resource groups the caller may use (all, for a superadmin), with their slots."""
    c = ctx(info)
    nodes = await c.sessions.facts_nodes.get()
    if not c.auth.is_superadmin:
        async with c.db() as s:
            usable = set(await _usable(c, s))
        nodes = [n for n in nodes if usable & set(n.partitions)]
    if scaling_group:
        nodes = [n for n in nodes if scaling_group in n.partitions]
    items = [wire.agent(n) for n in nodes]
    if status:
        items = [a for a in items if a["status"] in status.split(",")]
    return paginate(items, limit, offset)


@query
async def storage_volume_list(_r: Any, info: Info, limit: int, offset: int, **_: Any
                              ) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    folders = c.sessions.folders
    return paginate(await folders.volumes() if folders else [], limit, offset)


@query
async def storage_volume(_r: Any, info: Info, id: str | None = None) -> dict[str, Any] | None:
    c = ctx(info)
    require_superadmin(c)
    folders = c.sessions.folders
    return next((v for v in (await folders.volumes() if folders else []) if v["id"] == id), None)


@query
async def quota_scope(_r: Any, info: Info, quota_scope_id: str, storage_host_name: str
                      ) -> dict[str, Any] | None:
    """A user's ("user:<uuid>") or a project's ("project:<uuid>") folders on a host: what they hold. The
    gateway limits each folder (max_vfolder_size), not a scope, so there is no hard limit to show."""
    c = ctx(info)
    kind, _, ident = quota_scope_id.partition(":")
    folders = c.sessions.folders
    if folders is None or kind not in ("user", "project"):
        raise GraphQLError("quota_scope_id must be user:<uuid> or project:<uuid>")
    async with c.db() as s:
        if kind == "user":
            owner = await accounts.get_user(s, ident)
            allowed = owner is not None and _may_see_user(c, owner)
        else:
            project = await accounts.get_project(s, ident)
            allowed = project is not None and bool(await _visible_groups(c, s, [project]))
    if not allowed:
        raise forbidden("this quota scope")
    used = await folders.scope_usage(user_uuid=ident if kind == "user" else None,
                                     group_id=ident if kind == "project" else None, host=storage_host_name)
    return {"id": quota_scope_id, "quota_scope_id": quota_scope_id, "storage_host_name": storage_host_name,
            "details": {"usage_bytes": used, "usage_count": None, "hard_limit_bytes": None}}


@query
async def agents(_r: Any, info: Info, scaling_group: str | None = None,
                 status: str | None = None) -> list[dict[str, Any]]:
    return await _agents(info, scaling_group, status)


@query
async def agent_list(_r: Any, info: Info, limit: int, offset: int, scaling_group: str | None = None,
                     status: str | None = None, **_: Any) -> dict[str, Any]:
    return paginate(await _agents(info, scaling_group, status), limit, offset)


@query
async def agent(_r: Any, info: Info, agent_id: str) -> dict[str, Any] | None:
    return next((a for a in await _agents(info, None, None) if a["id"] == agent_id), None)


@query
async def user(_r: Any, info: Info, domain_name: str | None = None,
               email: str | None = None) -> dict[str, Any] | None:
    c = ctx(info)
    async with c.db() as s:
        row = await accounts.get_user_by_email(s, email or c.auth.email)
        # someone the caller may not see is answered as one that does not exist: no telling which emails do
        if row is None or not _may_see_user(c, row):
            return None
        return await _user(c, s, row)


@query
async def user_from_uuid(_r: Any, info: Info, domain_name: str | None = None,
                         user_id: str | None = None) -> dict[str, Any] | None:
    c = ctx(info)
    async with c.db() as s:
        row = await accounts.get_user(s, str(user_id or c.auth.user_uuid))
        if row is None or not _may_see_user(c, row):
            return None
        return await _user(c, s, row)


async def _users(c: GqlContext, domain_name: str | None, group_id: str | None, status: str | None,
                 is_active: bool | None) -> list[dict[str, Any]]:
    async with c.db() as s:
        if not c.auth.is_admin:
            row = await accounts.get_user(s, c.auth.user_uuid)
            return [await _user(c, s, row)] if row else []
        rows = await accounts.list_users(s, domain=scope_domain(c, domain_name),
                                         group_id=str(group_id) if group_id else None, status=status,
                                         is_active=is_active)
        return [await _user(c, s, r) for r in rows]


@query
async def users(_r: Any, info: Info, domain_name: str | None = None, group_id: str | None = None,
                is_active: bool | None = None, status: str | None = None) -> list[dict[str, Any]]:
    return await _users(ctx(info), domain_name, group_id, status, is_active)


@query
async def user_list(_r: Any, info: Info, limit: int, offset: int, domain_name: str | None = None,
                    group_id: str | None = None, is_active: bool | None = None, status: str | None = None,
                    **_: Any) -> dict[str, Any]:
    return paginate(await _users(ctx(info), domain_name, group_id, status, is_active), limit, offset)


async def _visible_groups(c: GqlContext, s: UnitOfWork, rows: list[GroupRow]) -> list[GroupRow]:
    if c.auth.is_superadmin:
        return rows
    if c.auth.is_admin:
        return [g for g in rows if g.domain_name == c.auth.domain_name]
    mine = {g.id for g in await accounts.groups_of_user(s, c.auth.user_uuid)}
    return [g for g in rows if g.id in mine]


async def _groups(c: GqlContext, domain_name: str | None, **filters: Any) -> list[dict[str, Any]]:
    async with c.db() as s:
        rows = await _visible_groups(c, s, await accounts.list_groups(s, domain=domain_name, **filters))
    return [wire.group(g, await _scaling_group_names(c, "group", g.id)) for g in rows]


@query
async def groups(_r: Any, info: Info, domain_name: str | None = None,
                 is_active: bool | None = None) -> list[dict[str, Any]]:
    return await _groups(ctx(info), domain_name, is_active=is_active)


@query
async def groups_by_name(_r: Any, info: Info, name: str,
                         domain_name: str | None = None) -> list[dict[str, Any]]:
    return await _groups(ctx(info), domain_name, name=name)


@query
async def group(_r: Any, info: Info, id: str, domain_name: str | None = None) -> dict[str, Any] | None:
    c = ctx(info)
    async with c.db() as s:
        row = await accounts.get_project(s, str(id))
        if row is None:
            return None
        if not await _visible_groups(c, s, [row]):
            raise forbidden("this project")
    return wire.group(row, await _scaling_group_names(c, "group", row.id))


@query
async def keypair(_r: Any, info: Info, domain_name: str | None = None,
                  access_key: str | None = None) -> dict[str, Any] | None:
    c = ctx(info)
    async with c.db() as s:
        row = await accounts.get_keypair(s, access_key or c.auth.access_key)
        if row is None:
            return None
        if row.access_key != c.auth.access_key:
            owner = await accounts.get_user(s, row.user)
            if owner is None or not c.auth.can_manage_domain(owner.domain_name):
                raise forbidden("another user's keypair")
        return await _keypair(c, s, row)


async def _keypairs(c: GqlContext, domain_name: str | None, email: str | None,
                    is_active: bool | None) -> list[dict[str, Any]]:
    async with c.db() as s:
        if not c.auth.is_admin:
            if email and email != c.auth.email:
                raise forbidden("another user's keypairs")
            rows = await accounts.list_keypairs(s, email=c.auth.email, is_active=is_active)
        else:
            rows = await accounts.list_keypairs(s, email=email, domain=scope_domain(c, domain_name),
                                                is_active=is_active)
        return [await _keypair(c, s, r) for r in rows]


@query
async def keypairs(_r: Any, info: Info, domain_name: str | None = None, email: str | None = None,
                   is_active: bool | None = None) -> list[dict[str, Any]]:
    return await _keypairs(ctx(info), domain_name, email, is_active)


@query
async def keypair_list(_r: Any, info: Info, limit: int, offset: int, domain_name: str | None = None,
                       email: str | None = None, is_active: bool | None = None, **_: Any) -> dict[str, Any]:
    return paginate(await _keypairs(ctx(info), domain_name, email, is_active), limit, offset)


@query
async def keypair_resource_policy(_r: Any, info: Info, name: str | None = None) -> dict[str, Any] | None:
    c = ctx(info)
    async with c.db() as s:
        own = await accounts.policy_of_key(s, c.auth.access_key)
        name = name or own
        if name != own and not c.auth.is_admin:
            raise forbidden("another resource policy")
        row = await accounts.get_policy(s, name)
    return wire.policy(row) if row else None


@query
async def keypair_resource_policies(_r: Any, info: Info) -> list[dict[str, Any]]:
    c = ctx(info)
    async with c.db() as s:
        rows = await accounts.list_policies(s)
        if not c.auth.is_admin:
            own = await accounts.policy_of_key(s, c.auth.access_key)
            rows = [r for r in rows if r.name == own]
    return [wire.policy(r) for r in rows]


def _status_filter(status: str | None) -> list[str] | None:
    """A comma list of statuses; names this server does not know (RUNNING_DEGRADED, ...) are ignored."""
    if not status or status.upper() == "ALL":
        return None
    return [x.strip().upper() for x in status.split(",") if x.strip()]


async def _session_items(c: GqlContext, rows: list[SessionRow]) -> list[dict[str, Any]]:
    rel = await c.sessions.relations(rows)

    def item(r: SessionRow, dependencies: list[dict[str, Any]]) -> dict[str, Any]:
        return wire.session(r, group_name=rel.group_names.get(r.group_id, ""),
                            user_email=rel.user_emails.get(r.user_uuid, ""), dependencies=dependencies,
                            usage=c.utilization)

    return [item(r, [item(d, []) for d in rel.dependencies.get(r.id, [])]) for r in rows]


@query
async def compute_session(_r: Any, info: Info, id: str) -> dict[str, Any] | None:
    c = ctx(info)
    row = await c.sessions.visible(c.auth, str(id))
    return (await _session_items(c, [row]))[0] if row else None  # another user's session is as good as absent


@query
async def compute_session_list(_r: Any, info: Info, limit: int, offset: int,
                               access_key: str | None = None, status: str | None = None,
                               domain_name: str | None = None, group_id: str | None = None,
                               order_key: str | None = None, order_asc: bool | None = None,
                               filter: str | None = None, order: str | None = None, **_: Any) -> dict[str, Any]:
    c = ctx(info)
    if filter:
        raise GraphQLError("compute_session_list: filter expressions are not supported by this server")
    key, asc = order_key or "created_at", bool(order_asc)
    if order:
        key, asc = order.lstrip("+-"), not order.startswith("-")
    try:   # who may list whose sessions, and by what order, is the session service's to say
        rows, total = await c.sessions.page(c.auth, offset=offset, limit=limit, access_key=access_key,
                                            domain=scope_domain(c, domain_name), group_id=group_id,
                                            statuses=_status_filter(status), order=key, ascending=asc)
    except GenericForbidden:
        raise forbidden("another user's sessions") from None
    except InvalidAPIParameters as e:
        raise GraphQLError(e.msg) from None
    return {"items": await _session_items(c, rows), "total_count": total}


@query
async def compute_container(_r: Any, info: Info, id: str) -> dict[str, Any] | None:
    c = ctx(info)
    found = await c.sessions.visible_kernel(c.auth, str(id))
    return wire.session_kernels(found[0], c.utilization)[found[1].rank] if found else None


@query
async def compute_container_list(_r: Any, info: Info, limit: int, offset: int, session_id: str,
                                 role: str | None = None) -> dict[str, Any]:
    c = ctx(info)
    row = await c.sessions.visible(c.auth, str(session_id))
    kernels = [k for k in wire.session_kernels(row, c.utilization)
               if role is None or k["role"] == role] if row else []
    return paginate(kernels, limit, offset)


@query
async def vfolder_list(_r: Any, info: Info, limit: int, offset: int,
                       access_key: str | None = None, **_: Any) -> dict[str, Any]:
    c = ctx(info)
    if c.sessions.folders is None:
        return paginate([], limit, offset)
    try:
        found = await c.sessions.folders.visible(c.auth, access_key)
    except FolderNotFound:
        raise forbidden("another user's folders") from None
    return paginate([graphql_folder(a, c.auth.email if a.row.user_uuid == c.auth.user_uuid else None) for a in found],
                    limit, offset)


@query
async def images(_r: Any, info: Info, **_: Any) -> list[dict[str, Any]]:
    return [image_wire(r) for r in await ctx(info).images.list()]


@query
async def image(_r: Any, info: Info, reference: str, architecture: str | None = None) -> Any:
    found = await ctx(info).images.find(reference)
    return image_wire(found) if found else None
