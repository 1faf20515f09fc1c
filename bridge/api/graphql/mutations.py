"""Mutations of the admin GraphQL API: users, projects, keypairs, domains, resource policies and presets.

They answer `{ok, msg, ...}` like Backend.AI: a refused or invalid change is `ok: false` with the reason,
and nothing is written (the request's unit of work rolls back on any error).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from bridge.adapters.db.tables import (
    DomainRow,
    GroupMemberRow,
    GroupRow,
    KeypairResourcePolicyRow,
    KeypairRow,
    ResourcePresetRow,
    UserRow,
)
from bridge.api.graphql import wire
from bridge.api.graphql.resolvers import (
    Info,
    _keypair,
    _scaling_group_names,
    _user,
    ctx,
    mutation,
    parse_jsonstr,
    require_admin,
    require_superadmin,
)
from bridge.domain.resources import normalize_vfolder_hosts
from bridge.errors import GenericForbidden, InvalidAPIParameters, ObjectNotFound
from bridge.services import accounts

T = TypeVar("T")
OK = {"ok": True, "msg": "success"}
POLICY_FIELDS = ("default_for_unspecified", "total_resource_slots", "max_session_lifetime",
                 "max_concurrent_sessions", "max_concurrent_sftp_sessions", "max_containers_per_session",
                 "idle_timeout", "max_vfolder_count", "max_vfolder_size", "allowed_vfolder_hosts")


def _json_props(props: dict[str, Any], *keys: str) -> dict[str, Any]:
    out = dict(props)
    for k in keys:
        if k not in out:
            continue
        if k == "allowed_vfolder_hosts":
            try:
                out[k] = normalize_vfolder_hosts(out[k]) if out[k] is not None else None
            except ValueError as e:
                raise InvalidAPIParameters(str(e)) from None
        else:
            out[k] = parse_jsonstr(out[k], k)
    return out


async def _require(s: Any, model: type[T], key: Any, missing: str) -> T:
    """The row with this primary key, or ObjectNotFound(missing)."""
    row: T | None = await s.get(model, key)
    if row is None:
        raise ObjectNotFound(missing)
    return row


def _may_change_account(c: Any, target: UserRow, *, strictly: bool = False) -> None:
    """Refuse to change, or act for, an account at or above the caller's rank (domain/auth.py). `strictly`:
    not even one's own (keys and their limits are set from above, or by the site operator), except for a
    superadmin, whom nobody outranks."""
    if strictly and target.uuid == c.auth.user_uuid and not c.auth.is_superadmin:
        raise GenericForbidden("your own keypairs are managed by an account above yours")
    if not c.auth.may_act_for(target.uuid, target.role, target.domain_name):
        raise GenericForbidden(f"{target.email} is a {target.role}: not below you in rank")


@asynccontextmanager
async def _folders_follow(c: Any, *, user_uuid: str | None = None, group_ids: list[str] | None = None
                          ) -> AsyncIterator[None]:
    """Around an account change that may alter who may use which folders (project members, a user's status
    or Unix account): afterwards the folders' ACLs on disk follow, for those touched before and after."""
    folders = c.sessions.folders
    before = await folders.touching(user_uuid=user_uuid, group_ids=group_ids) if folders else set()
    yield
    if folders:
        await folders.sync_many(before | await folders.touching(user_uuid=user_uuid, group_ids=group_ids))


async def _user_by_email(s: Any, email: str) -> UserRow:
    row = await accounts.get_user_by_email(s, email)
    if row is None:
        raise ObjectNotFound(f"no such user: {email}")
    return row


# ---- domains (superadmin) -----------------------------------------------------------------------------

@mutation
async def create_domain(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await accounts.create_domain(s, name, **_json_props(props, "total_resource_slots",
                                                                   "allowed_vfolder_hosts"))
        await c.sessions.resource_groups.open_to_new_domain(s, name)
    return {**OK, "domain": wire.domain(row, await _scaling_group_names(c, "domain", name))}


@mutation
async def modify_domain(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await _require(s, DomainRow, name, f"no such domain: {name}")
        props = _json_props(props, "total_resource_slots", "allowed_vfolder_hosts")
        if props.get("name") and props["name"] != name:
            raise InvalidAPIParameters("renaming a domain is not supported")
        accounts.apply_props(row, props, ("description", "is_active", "total_resource_slots",
                                          "allowed_vfolder_hosts", "allowed_docker_registries", "integration_id"))
        await s.flush()
    return OK


@mutation
async def delete_domain(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await _require(s, DomainRow, name, f"no such domain: {name}")
        row.is_active = False
        await s.flush()
    return OK


@mutation
async def purge_domain(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        await accounts.purge_domain(s, await _require(s, DomainRow, name, f"no such domain: {name}"))
    return OK


# ---- users (admins, within their domain) --------------------------------------------------------------

@mutation
async def create_user(_r: Any, info: Info, email: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_admin(c, props["domain_name"])
    role = props.get("role") or "user"
    if role not in accounts.ROLES:
        raise InvalidAPIParameters(f"role must be one of {', '.join(accounts.ROLES)}")
    if not c.auth.may_grant(role):
        raise GenericForbidden(f"you may not create an account with role {role}: it is not below yours")
    unix_user = props.get("unix_user") or email.split("@")[0].lower()
    async with _folders_follow(c, group_ids=props.get("group_ids") or []), c.db() as s:
        await c.unix_users.check(s, unix_user, actor=c.auth, domain=props["domain_name"])
        row = await accounts.create_user(
            s, email=email, username=props["username"], password=props["password"],
            domain=props["domain_name"], role=role, unix_user=unix_user,
            full_name=props.get("full_name") or "", description=props.get("description") or "",
        )
        row.need_password_change = props["need_password_change"]
        if props.get("status") or props.get("is_active") is False:
            row.status = props.get("status") or "inactive"
        if props.get("group_ids"):
            await accounts.set_user_groups(s, row, props["group_ids"])
            for g in await accounts.groups_of_user(s, row.uuid):
                await c.projects.members(g, [row.unix_user])
        policy = props.get("resource_policy") or "default"
        await accounts.create_keypair(s, row, resource_policy=policy)
        await c.projects.users(s, [row.uuid])   # the policy's limits on the new associations
        return {**OK, "user": await _user(c, s, row)}


@mutation
async def modify_user(_r: Any, info: Info, email: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        uid = (await _user_by_email(s, email)).uuid
    async with _folders_follow(c, user_uuid=uid), c.db() as s:
        row = await _user_by_email(s, email)
        require_admin(c, row.domain_name)
        _may_change_account(c, row)
        if props.get("domain_name") and props["domain_name"] != row.domain_name:
            require_admin(c, props["domain_name"])
            if await s.get(DomainRow, props["domain_name"]) is None:
                raise ObjectNotFound(f"no such domain: {props['domain_name']}")
        if props.get("role") and props["role"] not in accounts.ROLES:
            raise InvalidAPIParameters(f"role must be one of {', '.join(accounts.ROLES)}")
        if props.get("role") and props["role"] != row.role and not c.auth.may_grant(props["role"]):
            raise GenericForbidden(f"you may not grant role {props['role']}: it is not below yours")
        if props.get("unix_user") and props["unix_user"] != row.unix_user:
            await c.unix_users.check(s, props["unix_user"], user_uuid=row.uuid, actor=c.auth,
                                     domain=props.get("domain_name") or row.domain_name)
        accounts.apply_props(row, props, ("username", "need_password_change", "full_name", "description",
                                          "domain_name", "role", "status", "unix_user"))
        if props.get("is_active") is not None:
            row.status = "active" if props["is_active"] else "inactive"
        if props.get("password"):
            row.password = accounts.hash_password(props["password"])
        if props.get("group_ids") is not None:
            await accounts.set_user_groups(s, row, props["group_ids"])
        if props.get("group_ids") or props.get("unix_user"):   # the (new) Unix user in each project's account
            for g in await accounts.groups_of_user(s, row.uuid):
                await c.projects.members(g, [row.unix_user])
        await s.flush()
        if any(props.get(k) is not None for k in ("group_ids", "unix_user", "status", "is_active")):
            await c.projects.users(s, [row.uuid])
        return {**OK, "user": await _user(c, s, row)}


@mutation
async def delete_user(_r: Any, info: Info, email: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        uid = (await _user_by_email(s, email)).uuid
    async with _folders_follow(c, user_uuid=uid), c.db() as s:
        row = await _user_by_email(s, email)
        require_admin(c, row.domain_name)
        if row.uuid == c.auth.user_uuid:
            raise InvalidAPIParameters("you cannot delete yourself")
        _may_change_account(c, row)
        await accounts.delete_user(s, row)
    return OK


@mutation
async def purge_user(_r: Any, info: Info, email: str,
                     props: dict[str, Any] | None = None) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        uid = (await _user_by_email(s, email)).uuid
    async with _folders_follow(c, user_uuid=uid), c.db() as s:
        row = await _user_by_email(s, email)
        require_admin(c, row.domain_name)
        if row.uuid == c.auth.user_uuid:
            raise InvalidAPIParameters("you cannot purge yourself")
        _may_change_account(c, row)
        await accounts.purge_user(s, row)
    return OK


# ---- projects -----------------------------------------------------------------------------------------

@mutation
async def create_group(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_admin(c, props["domain_name"])
    props = _json_props(props, "total_resource_slots", "allowed_vfolder_hosts")
    async with c.db() as s:
        row = await accounts.create_group(s, name=name, domain=props["domain_name"],
                                          slurm_account=props.get("slurm_account"),
                                          description=props.get("description") or "")
        await c.projects.check_account(s, c.auth, row.slurm_account, domain=row.domain_name, project_id=row.id)
        accounts.apply_props(row, props, ("is_active", "total_resource_slots", "allowed_vfolder_hosts",
                                          "integration_id"))
        await s.flush()
        await c.projects.project(row)
    return {**OK, "group": wire.group(row, [])}


@mutation
async def modify_group(_r: Any, info: Info, gid: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    props = _json_props(props, "total_resource_slots", "allowed_vfolder_hosts")
    async with _folders_follow(c, group_ids=[str(gid)]), c.db() as s:
        row = await s.get(GroupRow, str(gid))
        if row is None:
            raise ObjectNotFound(f"no such project: {gid}")
        require_admin(c, row.domain_name)
        if props.get("domain_name") and props["domain_name"] != row.domain_name:
            raise InvalidAPIParameters("moving a project to another domain is not supported")
        if props.get("slurm_account") and props["slurm_account"].lower() != row.slurm_account:
            props["slurm_account"] = accounts.check_unix_name(props["slurm_account"].lower(), "slurm_account")
            await c.projects.check_account(s, c.auth, props["slurm_account"], domain=row.domain_name,
                                           project_id=row.id)
        slurm_side = (row.slurm_account, row.total_resource_slots)
        accounts.apply_props(row, props, ("name", "description", "is_active", "total_resource_slots",
                                          "allowed_vfolder_hosts", "integration_id", "slurm_account"))
        mode, uuids = props.get("user_update_mode"), props.get("user_uuids") or []
        if mode not in (None, "add", "remove"):
            raise InvalidAPIParameters("user_update_mode must be 'add' or 'remove'")
        added = []
        for uid in uuids:
            member = await s.get(UserRow, uid)
            if member is None or member.domain_name != row.domain_name:
                raise InvalidAPIParameters(f"no user {uid} in domain {row.domain_name}")
            link = await s.get(GroupMemberRow, (row.id, uid))
            if mode == "add" and link is None:
                s.add(GroupMemberRow(group_id=row.id, user_id=uid))
                added.append(member.unix_user)
            elif mode == "remove" and link is not None:
                await s.delete(link)
        await s.flush()
        if (row.slurm_account, row.total_resource_slots) != slurm_side:   # a new account or quota: all of it
            await c.projects.project(row, [u.unix_user for u in await accounts.list_users(s, group_id=row.id)],
                                     db=s)
        else:
            await c.projects.members(row, added, db=s)
    return OK


@mutation
async def delete_group(_r: Any, info: Info, gid: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        row = await s.get(GroupRow, str(gid))
        if row is None:
            raise ObjectNotFound(f"no such project: {gid}")
        require_admin(c, row.domain_name)
        row.is_active = False
        await s.flush()
    return OK


@mutation
async def purge_group(_r: Any, info: Info, gid: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        row = await s.get(GroupRow, str(gid))
        if row is None:
            raise ObjectNotFound(f"no such project: {gid}")
        require_admin(c, row.domain_name)
        await s.delete(row)
        await s.flush()
    return OK


# ---- keypairs -----------------------------------------------------------------------------------------

@mutation
async def create_keypair(_r: Any, info: Info, user_id: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        owner = await _user_by_email(s, user_id)
        require_admin(c, owner.domain_name)
        _may_change_account(c, owner, strictly=True)
        new = await accounts.create_keypair(s, owner, resource_policy=props.get("resource_policy") or "default",
                                            is_admin=props.get("is_admin"), rate_limit=props.get("rate_limit") or 30000)
        row = await s.get(KeypairRow, new.access_key)
        if props.get("is_active") is False:
            row.is_active = False  # type: ignore[union-attr]
        await s.flush()
        await c.projects.users(s, [owner.uuid])
        # the one who issues a key sees its secret once, in this answer; later only its owner does
        return {**OK, "keypair": await _keypair(c, s, row, issued=True)}  # type: ignore[arg-type]


@mutation
async def modify_keypair(_r: Any, info: Info, access_key: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        row = await s.get(KeypairRow, access_key)
        owner = await s.get(UserRow, row.user) if row else None
        if row is None or owner is None:
            raise ObjectNotFound(f"no such keypair: {access_key}")
        require_admin(c, owner.domain_name)
        _may_change_account(c, owner, strictly=True)
        if props.get("resource_policy") and await s.get(KeypairResourcePolicyRow, props["resource_policy"]) is None:
            raise ObjectNotFound(f"no such keypair resource policy: {props['resource_policy']}")
        if props.get("concurrency_limit") is not None:   # kept by the policy, not the key (Backend.AI 22.03+)
            policy = await s.get(KeypairResourcePolicyRow, props.get("resource_policy") or row.resource_policy)
            if policy is None or props["concurrency_limit"] != policy.max_concurrent_sessions:
                raise InvalidAPIParameters("concurrency_limit is the max_concurrent_sessions of the keypair's "
                                           "resource policy: change the policy, or give the key another one")
        accounts.apply_props(row, props, ("is_active", "is_admin", "resource_policy", "rate_limit"))
        await s.flush()
        await c.projects.users(s, [owner.uuid])
    return OK


@mutation
async def delete_keypair(_r: Any, info: Info, access_key: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        row = await s.get(KeypairRow, access_key)
        owner = await s.get(UserRow, row.user) if row else None
        if row is None or owner is None:
            raise ObjectNotFound(f"no such keypair: {access_key}")
        require_admin(c, owner.domain_name)
        if access_key == c.auth.access_key:
            raise InvalidAPIParameters("you cannot delete the keypair you are using")
        _may_change_account(c, owner)
        await s.delete(row)
        await s.flush()
        await c.projects.users(s, [owner.uuid])
    return OK


# ---- keypair resource policies and presets (superadmin) ----------------------------------------------

@mutation
async def create_keypair_resource_policy(_r: Any, info: Info, name: str,
                                         props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    props = _json_props(props, "total_resource_slots", "allowed_vfolder_hosts")
    async with c.db() as s:
        if await s.get(KeypairResourcePolicyRow, name) is not None:
            raise InvalidAPIParameters(f"resource policy {name} already exists")
        row = KeypairResourcePolicyRow(name=name)
        accounts.apply_props(row, props, POLICY_FIELDS)
        s.add(row)
        await s.flush()
    return {**OK, "resource_policy": wire.policy(row)}


@mutation
async def modify_keypair_resource_policy(_r: Any, info: Info, name: str,
                                         props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await _require(s, KeypairResourcePolicyRow, name, f"no such resource policy: {name}")
        accounts.apply_props(row, _json_props(props, "total_resource_slots", "allowed_vfolder_hosts"), POLICY_FIELDS)
        await s.flush()
        await c.projects.users(s, await c.projects.policy_holders(s, name))   # its holders' associations follow
    return OK


@mutation
async def delete_keypair_resource_policy(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await _require(s, KeypairResourcePolicyRow, name, f"no such resource policy: {name}")
        await accounts.delete_policy(s, row)
    return OK


def _shared_memory(value: str | None) -> int | None:
    if value in (None, ""):
        return None
    from bridge.domain.resources import parse_binary_size

    return parse_binary_size(str(value))


@mutation
async def create_resource_preset(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await accounts.create_preset(s, name, parse_jsonstr(props.get("resource_slots"), "resource_slots") or {},
                                           _shared_memory(props.get("shared_memory")))
    return {**OK, "resource_preset": wire.preset(row)}


@mutation
async def modify_resource_preset(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await _require(s, ResourcePresetRow, name, f"no such resource preset: {name}")
        if props.get("resource_slots") is not None:
            row.resource_slots = parse_jsonstr(props["resource_slots"], "resource_slots")
        if props.get("shared_memory") is not None:
            row.shared_memory = _shared_memory(props["shared_memory"])
        await s.flush()
    return OK


@mutation
async def delete_resource_preset(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await _require(s, ResourcePresetRow, name, f"no such resource preset: {name}")
        await s.delete(row)
        await s.flush()
    return OK


# ---- resource groups (superadmin) ---------------------------------------------------------------------

SCALING_GROUP_JSON = ("driver_opts", "scheduler_opts")


def _group_props(props: dict[str, Any]) -> dict[str, Any]:
    out = _json_props(props, *SCALING_GROUP_JSON)
    if out.get("scheduler_opts") is not None and not isinstance(out["scheduler_opts"], dict):
        raise InvalidAPIParameters("scheduler_opts must be a JSON object")
    return out


@mutation
async def create_scaling_group(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    groups = c.sessions.resource_groups
    live = await groups.live()
    async with c.db() as s:
        row = await groups.create(s, name, _group_props(props))
    return {**OK, "scaling_group": wire.scaling_group(row, live.get(name))}


@mutation
async def modify_scaling_group(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        await c.sessions.resource_groups.modify(s, name, _group_props(props))
    return OK


@mutation
async def delete_scaling_group(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        await c.sessions.resource_groups.delete(s, name)
    return OK


def _association(kind: str, target_arg: str, associate: bool) -> Any:
    async def change(_r: Any, info: Info, scaling_group: str, **kw: Any) -> dict[str, Any]:
        c = ctx(info)
        require_superadmin(c)
        target = str(kw[target_arg])
        groups = c.sessions.resource_groups
        async with c.db() as s:
            if associate:
                await groups.associate(s, kind, scaling_group, target)
            else:
                await groups.disassociate(s, kind, scaling_group, target)
        return OK
    return change


def _disassociate_all(kind: str, target_arg: str) -> Any:
    async def change(_r: Any, info: Info, **kw: Any) -> dict[str, Any]:
        c = ctx(info)
        require_superadmin(c)
        async with c.db() as s:
            await c.sessions.resource_groups.disassociate_all(s, kind, str(kw[target_arg]))
        return OK
    return change


def _register(fn: Any, name: str) -> None:
    fn.__name__ = name
    mutation(fn)


for _kind, _name, _arg in (("domain", "domain", "domain"), ("group", "user_group", "user_group"),
                           ("keypair", "keypair", "access_key")):
    _register(_association(_kind, _arg, True), f"associate_scaling_group_with_{_name}")
    _register(_association(_kind, _arg, False), f"disassociate_scaling_group_with_{_name}")
_register(_disassociate_all("domain", "domain"), "disassociate_all_scaling_groups_with_domain")
_register(_disassociate_all("group", "user_group"), "disassociate_all_scaling_groups_with_group")


# ---- images (superadmin) ------------------------------------------------------------------------------

@mutation
async def rescan_images(_r: Any, info: Info, registry: str | None = None) -> dict[str, Any]:
    """Read the registered images' labels again, as a background task the clients follow."""
    c = ctx(info)
    require_superadmin(c)
    images = c.images

    async def work(report: Any) -> str:
        return await images.rescan(report, registry)
    return {**OK, "task_id": c.bgtasks.start(c.auth.access_key, "image-rescan", work)}


@mutation
async def alias_image(_r: Any, info: Info, alias: str, target: str,
                      architecture: str | None = None) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    await c.images.alias(alias, target)
    return OK


@mutation
async def dealias_image(_r: Any, info: Info, alias: str, architecture: str | None = None
                        ) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    await c.images.dealias(alias)
    return OK


@mutation
async def forget_image(_r: Any, info: Info, reference: str, architecture: str | None = None
                       ) -> dict[str, Any]:
    """The gateway forgets the image; its file on the compute nodes stays (the site's to remove)."""
    c = ctx(info)
    require_superadmin(c)
    await c.images.remove(reference)
    return OK


@mutation
async def modify_agent(_r: Any, info: Info, id: str, props: dict[str, Any]) -> dict[str, Any]:
    """`schedulable: false` drains the Slurm node (its running jobs finish, no new ones start), `true`
    resumes it. A node's partitions (resource groups) are slurm.conf's, not the gateway's."""
    c = ctx(info)
    require_superadmin(c)
    if props.get("scaling_group") is not None:
        raise InvalidAPIParameters(f"agent {id} is a Slurm node: its partitions (resource groups) are set in "
                                   "slurm.conf")
    if props.get("schedulable") is not None:
        await c.sessions.set_nodes_schedulable([id], bool(props["schedulable"]),
                                               reason=f"drained by {c.auth.email} through the gateway")
    return OK
