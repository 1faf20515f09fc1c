"""Mutations of the admin GraphQL API: users, projects, keypairs, domains, resource policies and presets.

They answer `{ok, msg, ...}` like Backend.AI: a refused or invalid change is `ok: false` with the reason,
and nothing is written (the request's unit of work rolls back on any error). Each is a translation: the
arguments (JSON strings included) into a call of the account service (bridge/services/accounts.py), which
holds the rules, and its result into the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bridge.api.graphql import wire
from bridge.api.graphql.resolvers import (
    Info,
    _keypair,
    _scaling_group_names,
    _user,
    ctx,
    mutation,
    parse_jsonstr,
    require_superadmin,
)
from bridge.domain.resources import normalize_vfolder_hosts
from bridge.errors import InvalidAPIParameters
from bridge.services import accounts

OK = {"ok": True, "msg": "success"}
POLICY_FIELDS = accounts.POLICY_FIELDS


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


async def _user_uuid(c: Any, email: str) -> str:
    async with c.db() as s:
        return (await accounts.user_by_email(s, email)).uuid


# ---- domains (superadmin) -----------------------------------------------------------------------------

@mutation
async def create_domain(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        row = await c.accounts.create_domain(s, c.auth, name, _json_props(props, "total_resource_slots",
                                                                          "allowed_vfolder_hosts"))
        await c.sessions.resource_groups.open_to_new_domain(s, name)
    return {**OK, "domain": wire.domain(row, await _scaling_group_names(c, "domain", name))}


@mutation
async def modify_domain(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:   # its JSON read once the domain is found, as before
        await c.accounts.modify_domain(s, c.auth, name, props, lambda p: _json_props(
            p, "total_resource_slots", "allowed_vfolder_hosts"))
    return OK


@mutation
async def delete_domain(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        await c.accounts.delete_domain(s, c.auth, name)
    return OK


@mutation
async def purge_domain(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        await c.accounts.purge_domain(s, c.auth, name)
    return OK


# ---- users (admins, within their domain) --------------------------------------------------------------

@mutation
async def create_user(_r: Any, info: Info, email: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    role = props.get("role") or "user"
    c.accounts.check_new_user(c.auth, props["domain_name"], role)   # refused before anything is read
    unix_user = props.get("unix_user") or email.split("@")[0].lower()
    status = props.get("status") or "inactive" if props.get("status") or props.get("is_active") is False else None
    async with _folders_follow(c, group_ids=props.get("group_ids") or []), c.db() as s:
        row, _kp = await c.accounts.create_user(
            s, c.auth, email=email, username=props["username"], password=props["password"],
            domain=props["domain_name"], role=role, unix_user=unix_user,
            full_name=props.get("full_name") or "", description=props.get("description") or "",
            need_password_change=props["need_password_change"], status=status,
            group_ids=props.get("group_ids") or None, resource_policy=props.get("resource_policy") or "default",
        )
        return {**OK, "user": await _user(c, s, row)}


@mutation
async def modify_user(_r: Any, info: Info, email: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    async with _folders_follow(c, user_uuid=await _user_uuid(c, email)), c.db() as s:
        row = await c.accounts.modify_user(s, c.auth, email, props)
        return {**OK, "user": await _user(c, s, row)}


@mutation
async def delete_user(_r: Any, info: Info, email: str) -> dict[str, Any]:
    c = ctx(info)
    async with _folders_follow(c, user_uuid=await _user_uuid(c, email)), c.db() as s:
        await c.accounts.delete_user(s, c.auth, email)
    return OK


@mutation
async def purge_user(_r: Any, info: Info, email: str,
                     props: dict[str, Any] | None = None) -> dict[str, Any]:
    c = ctx(info)
    async with _folders_follow(c, user_uuid=await _user_uuid(c, email)), c.db() as s:
        await c.accounts.purge_user(s, c.auth, email)
    return OK


# ---- projects -----------------------------------------------------------------------------------------

@mutation
async def create_group(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    accounts.require_admin(c.auth, props["domain_name"])
    props = _json_props(props, "total_resource_slots", "allowed_vfolder_hosts")
    async with c.db() as s:
        row = await c.accounts.create_project(s, c.auth, name, props["domain_name"], props)
    return {**OK, "group": wire.group(row, [])}


@mutation
async def modify_group(_r: Any, info: Info, gid: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    props = _json_props(props, "total_resource_slots", "allowed_vfolder_hosts")
    async with _folders_follow(c, group_ids=[str(gid)]), c.db() as s:
        await c.accounts.modify_project(s, c.auth, str(gid), props)
    return OK


@mutation
async def delete_group(_r: Any, info: Info, gid: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        await c.accounts.delete_project(s, c.auth, str(gid))
    return OK


@mutation
async def purge_group(_r: Any, info: Info, gid: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        await c.accounts.purge_project(s, c.auth, str(gid))
    return OK


# ---- keypairs -----------------------------------------------------------------------------------------

@mutation
async def create_keypair(_r: Any, info: Info, user_id: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        owner = await accounts.user_by_email(s, user_id)
        row = await c.accounts.issue_keypair(
            s, c.auth, owner, resource_policy=props.get("resource_policy") or "default",
            is_admin=props.get("is_admin"), rate_limit=props.get("rate_limit") or 30000,
            is_active=props.get("is_active") is not False)
        # the one who issues a key sees its secret once, in this answer; later only its owner does
        return {**OK, "keypair": await _keypair(c, s, row, issued=True)}


@mutation
async def modify_keypair(_r: Any, info: Info, access_key: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        await c.accounts.modify_keypair(s, c.auth, access_key, props)
    return OK


@mutation
async def delete_keypair(_r: Any, info: Info, access_key: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        await c.accounts.delete_keypair(s, c.auth, access_key)
    return OK


# ---- keypair resource policies and presets (superadmin) ----------------------------------------------

@mutation
async def create_keypair_resource_policy(_r: Any, info: Info, name: str,
                                         props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    props = _json_props(props, "total_resource_slots", "allowed_vfolder_hosts")
    async with c.db() as s:
        row = await c.accounts.create_policy(s, c.auth, name, props)
    return {**OK, "resource_policy": wire.policy(row)}


@mutation
async def modify_keypair_resource_policy(_r: Any, info: Info, name: str,
                                         props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)
    async with c.db() as s:
        await c.accounts.modify_policy(s, c.auth, name, props, lambda p: _json_props(
            p, "total_resource_slots", "allowed_vfolder_hosts"))
    return OK


@mutation
async def delete_keypair_resource_policy(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        await c.accounts.delete_policy(s, c.auth, name)
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
    slots = parse_jsonstr(props.get("resource_slots"), "resource_slots") or {}
    async with c.db() as s:
        row = await c.accounts.create_preset(s, c.auth, name, slots, _shared_memory(props.get("shared_memory")))
    return {**OK, "resource_preset": wire.preset(row)}


@mutation
async def modify_resource_preset(_r: Any, info: Info, name: str, props: dict[str, Any]) -> dict[str, Any]:
    c = ctx(info)
    require_superadmin(c)

    def changes(raw: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if raw.get("resource_slots") is not None:
            out["resource_slots"] = parse_jsonstr(raw["resource_slots"], "resource_slots")
        if raw.get("shared_memory") is not None:
            out["shared_memory"] = _shared_memory(raw["shared_memory"])
        return out
    async with c.db() as s:
        await c.accounts.modify_preset(s, c.auth, name, props, changes)
    return OK


@mutation
async def delete_resource_preset(_r: Any, info: Info, name: str) -> dict[str, Any]:
    c = ctx(info)
    async with c.db() as s:
        await c.accounts.delete_preset(s, c.auth, name)
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
