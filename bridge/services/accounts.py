"""Accounts: domains, users (with their Unix user), projects (with their Slurm account), keypairs, policies.

Keys come from the `secrets` CSPRNG; passwords are hashed with argon2. Every function takes an open
AsyncSession (the caller's unit of work) and only flushes.

AccountService (at the end) is the one home of the rules for changing accounts: who may create, change or
delete which domain, user, project, keypair, policy or preset (the role rank of domain/auth.py), the values
they may have, and the Slurm side (ProjectSync) that follows. The GraphQL mutations and `bai-bridge admin`
both call it; the admin CLI acts as the site operator (actor None), whom nobody outranks.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.tables import (
    DomainRow,
    GroupMemberRow,
    GroupRow,
    KeypairResourcePolicyRow,
    KeypairRow,
    ResourcePresetRow,
    UserRow,
)
from bridge.domain.auth import AuthContext
from bridge.errors import AuthorizationFailed, GenericForbidden, InvalidAPIParameters, ObjectNotFound

if TYPE_CHECKING:
    from bridge.services.project_sync import ProjectSync
    from bridge.services.unix_users import UnixUsers

ROLES = ("superadmin", "admin", "user", "monitor")
_UNIX_NAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\Z")
_hasher = PasswordHasher()


def generate_keypair() -> tuple[str, str]:
    """A Backend.AI-shaped keypair: 20-char access key starting with AKIA, 40-char secret key."""
    alphabet = string.ascii_uppercase + string.digits
    access = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
    secret = secrets.token_urlsafe(30)[:40]
    return access, secret


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    if not stored:
        return False
    try:
        return _hasher.verify(stored, password)
    except (VerifyMismatchError, InvalidHashError):
        return False


def check_unix_name(value: str, what: str) -> str:
    if not _UNIX_NAME.match(value) or value == "root":
        raise InvalidAPIParameters(f"{what} must be a valid non-root Unix name, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class NewKeypair:
    access_key: str
    secret_key: str
    user_email: str


async def ensure_domain(db: AsyncSession, name: str, description: str = "") -> DomainRow:
    row = await db.get(DomainRow, name)
    if row is None:
        row = DomainRow(name=name, description=description)
        db.add(row)
        await db.flush()
    return row


async def ensure_policy(db: AsyncSession, name: str, **fields: Any) -> KeypairResourcePolicyRow:
    row = await db.get(KeypairResourcePolicyRow, name)
    if row is None:
        row = KeypairResourcePolicyRow(name=name, **fields)
        db.add(row)
        await db.flush()
    return row


async def get_user_by_email(db: AsyncSession, email: str) -> UserRow | None:
    return (await db.execute(select(UserRow).where(UserRow.email == email))).scalar_one_or_none()


async def create_user(
    db: AsyncSession,
    *,
    email: str,
    username: str | None = None,
    password: str | None = None,
    domain: str = "default",
    role: str = "user",
    unix_user: str,
    full_name: str = "",
    description: str = "",
) -> UserRow:
    if role not in ROLES:
        raise InvalidAPIParameters(f"role must be one of {', '.join(ROLES)}")
    check_unix_name(unix_user, "unix_user")
    if "@" not in email:
        raise InvalidAPIParameters("email is not an email address")
    if await db.get(DomainRow, domain) is None:
        raise ObjectNotFound(f"no such domain: {domain}")
    username = username or email
    clash = await db.execute(select(UserRow).where((UserRow.email == email) | (UserRow.username == username)))
    if clash.first() is not None:
        raise InvalidAPIParameters(f"a user with email {email} or username {username} already exists")
    await check_unix_user_free(db, unix_user)
    row = UserRow(
        email=email, username=username, password=hash_password(password) if password else None,
        domain_name=domain, role=role, unix_user=unix_user, full_name=full_name, description=description,
    )
    db.add(row)
    await db.flush()
    return row


async def check_unix_user_free(db: AsyncSession, unix_user: str, *, except_uuid: str | None = None) -> None:
    """A Unix user is the identity of one gateway user only: two would share files, jobs and sessions. A
    deleted user keeps theirs until purged."""
    q = select(UserRow).where(UserRow.unix_user == unix_user)
    other = next((u for u in (await db.execute(q)).scalars() if u.uuid != except_uuid), None)
    if other is not None:
        raise InvalidAPIParameters(f"unix_user {unix_user} is already the Unix identity of {other.email}")


async def create_group(
    db: AsyncSession, *, name: str, domain: str = "default", slurm_account: str | None = None,
    description: str = "",
) -> GroupRow:
    if await db.get(DomainRow, domain) is None:
        raise ObjectNotFound(f"no such domain: {domain}")
    exists = await db.execute(select(GroupRow).where(GroupRow.domain_name == domain, GroupRow.name == name))
    if exists.first() is not None:
        raise InvalidAPIParameters(f"project {name} already exists in domain {domain}")
    account = check_unix_name((slurm_account or name).lower(), "slurm_account")
    row = GroupRow(name=name, domain_name=domain, slurm_account=account, description=description)
    db.add(row)
    await db.flush()
    return row


async def projects_using_account(db: AsyncSession, account: str) -> list[GroupRow]:
    """The projects whose jobs are charged to this Slurm account (Slurm account names ignore case)."""
    q = select(GroupRow).where(func.lower(GroupRow.slurm_account) == account.lower())
    return list((await db.execute(q)).scalars())


async def get_group(db: AsyncSession, name: str, domain: str = "default") -> GroupRow | None:
    q = select(GroupRow).where(GroupRow.domain_name == domain, GroupRow.name == name)
    return (await db.execute(q)).scalar_one_or_none()


async def find_group(db: AsyncSession, ref: str, domain: str) -> GroupRow | None:
    """A project of `domain` by name, or by id (the WebUI sends either)."""
    found = await get_group(db, ref, domain)
    if found is None:
        by_id = await db.get(GroupRow, ref)
        found = by_id if by_id is not None and by_id.domain_name == domain else None
    return found


async def caller_project(db: AsyncSession, auth: AuthContext, ref: str, *, active: bool = False) -> GroupRow:
    """A project of the caller's domain (by name or id) that the caller belongs to (an admin: any of the
    domain's): 400 when there is none (or, `active`, it is inactive), 403 when it is not theirs."""
    group = await find_group(db, ref, auth.domain_name)
    if group is None or (active and not group.is_active):
        raise InvalidAPIParameters(f"group: no {'active ' if active else ''}project {ref!r} in domain "
                                   f"{auth.domain_name}")
    if not auth.is_admin and not await is_member(db, group.id, auth.user_uuid):
        raise GenericForbidden(f"you are not a member of project {group.name}")
    return group


async def is_member(db: AsyncSession, group_id: str, user_uuid: str) -> bool:
    return await db.get(GroupMemberRow, (group_id, user_uuid)) is not None


_DUMMY_HASH: list[str] = []


def _dummy_hash() -> str:
    """A hash no password matches, checked for accounts that do not exist: the same work, the same time."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password(secrets.token_urlsafe(32)))
    return _DUMMY_HASH[0]


async def authorize(db: AsyncSession, domain: str, username: str, password: str) -> tuple[UserRow, KeypairRow]:
    """A user's first active key pair for their email (or username) and password: the webserver's login.
    The password is checked off the event loop (argon2 takes ~100 ms on purpose), against a dummy hash when
    there is no such account, and every refusal says the same."""
    # the email first: one account's username may be another's email, and the email is the one that is sure
    user = (await db.execute(select(UserRow).where(UserRow.domain_name == domain, UserRow.email == username))
            ).scalar_one_or_none() or (await db.execute(select(UserRow).where(
                UserRow.domain_name == domain, UserRow.username == username))).scalar_one_or_none()
    stored = user.password if user is not None and user.password else await asyncio.to_thread(_dummy_hash)
    matches = await asyncio.to_thread(verify_password, stored, password)
    if user is None or user.status != "active" or not matches:
        raise AuthorizationFailed("user credential mismatch")
    kp = (await db.execute(select(KeypairRow).where(KeypairRow.user == user.uuid, KeypairRow.is_active)
                           .order_by(KeypairRow.created_at))).scalars().first()
    if kp is None:
        raise AuthorizationFailed("the user has no active keypair")
    return user, kp


MIN_PASSWORD = 8


async def set_password(db: AsyncSession, user_uuid: str, password: str) -> datetime:
    """A new password for the account (hashed off the event loop); it no longer has to be changed."""
    if len(password) < MIN_PASSWORD:
        raise InvalidAPIParameters(f"a password has at least {MIN_PASSWORD} characters")
    user = await db.get(UserRow, user_uuid)
    if user is None:
        raise ObjectNotFound("no such user")
    user.password = await asyncio.to_thread(hash_password, password)
    user.need_password_change = False
    user.modified_at = datetime.now(UTC)
    return user.modified_at


async def set_full_name(db: AsyncSession, user_uuid: str, full_name: str) -> None:
    user = await db.get(UserRow, user_uuid)
    if user is None:
        raise ObjectNotFound("no such user")
    user.full_name = full_name


async def add_member(db: AsyncSession, group: GroupRow, user: UserRow) -> None:
    if await db.get(GroupMemberRow, (group.id, user.uuid)) is None:
        db.add(GroupMemberRow(group_id=group.id, user_id=user.uuid))
        await db.flush()


async def create_keypair(
    db: AsyncSession, user: UserRow, *, resource_policy: str = "default", is_admin: bool | None = None,
    rate_limit: int = 30000,
) -> NewKeypair:
    if await db.get(KeypairResourcePolicyRow, resource_policy) is None:
        raise ObjectNotFound(f"no such keypair resource policy: {resource_policy}")
    access, secret = generate_keypair()
    db.add(
        KeypairRow(
            access_key=access, secret_key=secret, user_id=user.email, user=user.uuid,
            is_admin=user.role in ("superadmin", "admin") if is_admin is None else is_admin,
            resource_policy=resource_policy, rate_limit=rate_limit,
        )
    )
    await db.flush()
    return NewKeypair(access, secret, user.email)


# ---- administration: listing, modification, deletion -------------------------------------------------

def apply_props(row: object, props: dict[str, Any], allowed: tuple[str, ...]) -> list[str]:
    """Set the given attributes (None means 'unchanged'); return which were changed."""
    changed = []
    for key in allowed:
        value = props.get(key)
        if value is not None and getattr(row, key) != value:
            setattr(row, key, value)
            changed.append(key)
    return changed


async def list_users(db: AsyncSession, *, domain: str | None = None, group_id: str | None = None,
                     status: str | None = None, is_active: bool | None = None) -> list[UserRow]:
    q = select(UserRow).order_by(UserRow.created_at)
    if domain:
        q = q.where(UserRow.domain_name == domain)
    if group_id:
        q = q.join(GroupMemberRow, GroupMemberRow.user_id == UserRow.uuid).where(GroupMemberRow.group_id == group_id)
    if status:
        q = q.where(UserRow.status == status)
    if is_active is not None:
        q = q.where((UserRow.status == "active") if is_active else (UserRow.status != "active"))
    return list((await db.execute(q)).scalars())


async def groups_of_user(db: AsyncSession, user_uuid: str) -> list[GroupRow]:
    q = (select(GroupRow).join(GroupMemberRow, GroupMemberRow.group_id == GroupRow.id)
         .where(GroupMemberRow.user_id == user_uuid).order_by(GroupRow.name))
    return list((await db.execute(q)).scalars())


async def list_groups(db: AsyncSession, *, domain: str | None = None, is_active: bool | None = None,
                      name: str | None = None) -> list[GroupRow]:
    q = select(GroupRow).order_by(GroupRow.name)
    if domain:
        q = q.where(GroupRow.domain_name == domain)
    if is_active is not None:
        q = q.where(GroupRow.is_active == is_active)
    if name:
        q = q.where(GroupRow.name == name)
    return list((await db.execute(q)).scalars())


async def set_user_groups(db: AsyncSession, user: UserRow, group_ids: list[str]) -> None:
    """Make the user a member of exactly these groups (all in the user's domain)."""
    groups = [await db.get(GroupRow, gid) for gid in group_ids]
    for gid, g in zip(group_ids, groups, strict=True):
        if g is None or g.domain_name != user.domain_name:
            raise InvalidAPIParameters(f"no project {gid} in domain {user.domain_name}")
    current = {m.group_id for m in (await db.execute(
        select(GroupMemberRow).where(GroupMemberRow.user_id == user.uuid))).scalars()}
    for gid in current - set(group_ids):
        await db.delete(await db.get(GroupMemberRow, (gid, user.uuid)))
    for g in groups:
        if g is not None and g.id not in current:
            db.add(GroupMemberRow(group_id=g.id, user_id=user.uuid))
    await db.flush()


async def list_keypairs(db: AsyncSession, *, email: str | None = None, domain: str | None = None,
                        is_active: bool | None = None) -> list[KeypairRow]:
    q = select(KeypairRow).join(UserRow, UserRow.uuid == KeypairRow.user).order_by(KeypairRow.created_at)
    if email:
        q = q.where(KeypairRow.user_id == email)
    if domain:
        q = q.where(UserRow.domain_name == domain)
    if is_active is not None:
        q = q.where(KeypairRow.is_active == is_active)
    return list((await db.execute(q)).scalars())


async def list_domains(db: AsyncSession, *, is_active: bool | None = None) -> list[DomainRow]:
    q = select(DomainRow).order_by(DomainRow.name)
    if is_active is not None:
        q = q.where(DomainRow.is_active == is_active)
    return list((await db.execute(q)).scalars())


async def list_policies(db: AsyncSession) -> list[KeypairResourcePolicyRow]:
    return list((await db.execute(select(KeypairResourcePolicyRow).order_by(KeypairResourcePolicyRow.name))).scalars())


async def create_preset(db: AsyncSession, name: str, slots: dict[str, Any], shared_memory: int | None
                        ) -> ResourcePresetRow:
    if await db.get(ResourcePresetRow, name) is not None:
        raise InvalidAPIParameters(f"resource preset {name} already exists")
    row = ResourcePresetRow(name=name, resource_slots=slots, shared_memory=shared_memory)
    db.add(row)
    await db.flush()
    return row


async def list_presets(db: AsyncSession) -> list[ResourcePresetRow]:
    return list((await db.execute(select(ResourcePresetRow).order_by(ResourcePresetRow.name))).scalars())


async def purge_domain(db: AsyncSession, domain: DomainRow) -> None:
    """Delete a domain for good, which only an empty one may be."""
    users = await _count(db, UserRow, UserRow.domain_name == domain.name)
    groups = await _count(db, GroupRow, GroupRow.domain_name == domain.name)
    if users or groups:
        raise InvalidAPIParameters(f"domain {domain.name} still has {users} users and {groups} projects")
    await db.delete(domain)
    await db.flush()


async def delete_policy(db: AsyncSession, policy: KeypairResourcePolicyRow) -> None:
    """Delete a keypair resource policy that no keypair uses."""
    used = await _count(db, KeypairRow, KeypairRow.resource_policy == policy.name)
    if used:
        raise InvalidAPIParameters(f"resource policy {policy.name} is used by {used} keypairs")
    await db.delete(policy)
    await db.flush()


async def _count(db: AsyncSession, model: type[Any], condition: Any) -> int:
    return (await db.execute(select(func.count()).select_from(model).where(condition))).scalar() or 0


async def create_domain(db: AsyncSession, name: str, **props: Any) -> DomainRow:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise InvalidAPIParameters(f"invalid domain name {name!r}")
    if await db.get(DomainRow, name) is not None:
        raise InvalidAPIParameters(f"domain {name} already exists")
    row = DomainRow(name=name)
    apply_props(row, props, ("description", "is_active", "total_resource_slots", "allowed_vfolder_hosts",
                             "allowed_docker_registries", "integration_id"))
    db.add(row)
    await db.flush()
    return row


async def delete_user(db: AsyncSession, user: UserRow) -> None:
    """Soft delete, as Backend.AI does: the user is marked deleted and their keypairs deactivated."""
    user.status = "deleted"
    for kp in await list_keypairs(db, email=user.email):
        kp.is_active = False
    await db.flush()


async def purge_user(db: AsyncSession, user: UserRow) -> None:
    for kp in await list_keypairs(db, email=user.email):
        await db.delete(kp)
    await db.delete(user)
    await db.flush()


# ---- the rules for changing accounts, for the API and the admin CLI alike -----------------------------

Actor = AuthContext | None   # who asks; None: the site operator (`bai-bridge admin` on the gateway host)

DOMAIN_FIELDS = ("description", "is_active", "total_resource_slots", "allowed_vfolder_hosts",
                 "allowed_docker_registries", "integration_id")
POLICY_FIELDS = ("default_for_unspecified", "total_resource_slots", "max_session_lifetime",
                 "max_concurrent_sessions", "max_concurrent_sftp_sessions", "max_containers_per_session",
                 "idle_timeout", "max_vfolder_count", "max_vfolder_size", "allowed_vfolder_hosts")


Props = dict[str, Any]
Translate = Callable[[Props], Props]   # the caller's reading of its raw values, once the object is found


def _as_given(props: Props) -> Props:
    return props


class NotPermitted(Exception):
    """The caller may not use this operation at all (not an admin of the domain, not a superadmin): the API
    answers its generic 'Forbidden' error, not a refused `{ok: false}`."""


def is_admin_of(actor: Actor, domain: str | None = None) -> bool:
    """An admin (of `domain`, when given), a superadmin, or the site operator."""
    return actor is None or (actor.is_admin and (domain is None or actor.can_manage_domain(domain)))


def require_admin(actor: Actor, domain: str | None = None) -> None:
    if not is_admin_of(actor, domain):
        raise NotPermitted()


def require_superadmin(actor: Actor) -> None:
    if actor is not None and not actor.is_superadmin:
        raise NotPermitted()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidAPIParameters(f"role must be one of {', '.join(ROLES)}")
    return role


def may_create_role(actor: Actor, role: str) -> None:
    """A new account's role is below the creator's (a superadmin's and the site operator's: any)."""
    if actor is not None and not actor.may_grant(role):
        raise GenericForbidden(f"you may not create an account with role {role}: it is not below yours")


def may_grant_role(actor: Actor, role: str) -> None:
    if actor is not None and not actor.may_grant(role):
        raise GenericForbidden(f"you may not grant role {role}: it is not below yours")


def may_change_account(actor: Actor, target: UserRow, *, strictly: bool = False) -> None:
    """Refuse to change, or act for, an account at or above the caller's rank (domain/auth.py). `strictly`:
    not even one's own (keys and their limits are set from above, or by the site operator), except for a
    superadmin, whom nobody outranks."""
    if actor is None:
        return
    if strictly and target.uuid == actor.user_uuid and not actor.is_superadmin:
        raise GenericForbidden("your own keypairs are managed by an account above yours")
    if not actor.may_act_for(target.uuid, target.role, target.domain_name):
        raise GenericForbidden(f"{target.email} is a {target.role}: not below you in rank")


async def require_row(db: AsyncSession, model: type[Any], key: Any, missing: str) -> Any:
    """The row with this primary key, or ObjectNotFound(missing)."""
    row = await db.get(model, key)
    if row is None:
        raise ObjectNotFound(missing)
    return row


async def user_by_email(db: AsyncSession, email: str) -> UserRow:
    row = await get_user_by_email(db, email)
    if row is None:
        raise ObjectNotFound(f"no such user: {email}")
    return row


async def project_by_name(db: AsyncSession, name: str, domain: str) -> GroupRow:
    row = await get_group(db, name, domain)
    if row is None:
        raise InvalidAPIParameters(f"no project {name} in {domain}")
    return row


async def project_by_id(db: AsyncSession, gid: str) -> GroupRow:
    row: GroupRow = await require_row(db, GroupRow, str(gid), f"no such project: {gid}")
    return row


async def get_domain(db: AsyncSession, name: str) -> DomainRow | None:
    return await db.get(DomainRow, name)


async def get_user(db: AsyncSession, user_uuid: str) -> UserRow | None:
    return await db.get(UserRow, user_uuid)


async def get_project(db: AsyncSession, gid: str) -> GroupRow | None:
    return await db.get(GroupRow, gid)


async def get_keypair(db: AsyncSession, access_key: str) -> KeypairRow | None:
    return await db.get(KeypairRow, access_key)


async def get_policy(db: AsyncSession, name: str) -> KeypairResourcePolicyRow | None:
    return await db.get(KeypairResourcePolicyRow, name)


async def get_preset(db: AsyncSession, name: str) -> ResourcePresetRow | None:
    return await db.get(ResourcePresetRow, name)


async def policy_of_key(db: AsyncSession, access_key: str) -> str:
    """The resource policy of a keypair (the caller's own: it exists while they are signed in)."""
    row = await db.get(KeypairRow, access_key)
    if row is None:
        raise ObjectNotFound(f"no such keypair: {access_key}")
    return row.resource_policy


async def keypair_and_owner(db: AsyncSession, access_key: str) -> tuple[KeypairRow, UserRow]:
    row = await db.get(KeypairRow, access_key)
    owner = await db.get(UserRow, row.user) if row else None
    if row is None or owner is None:
        raise ObjectNotFound(f"no such keypair: {access_key}")
    return row, owner


class AccountService:
    """Account changes with their checks and their Slurm side. Each method takes the caller's unit of work
    and the actor; a refusal raises (NotPermitted, or a BridgeError with the reason) before anything is
    written to Slurm, and the unit of work rolls back."""

    def __init__(self, projects: ProjectSync, unix_users: UnixUsers) -> None:
        self.projects = projects
        self.unix_users = unix_users

    # ---- domains (superadmin) ----

    async def create_domain(self, db: AsyncSession, actor: Actor, name: str, props: dict[str, Any]) -> DomainRow:
        require_superadmin(actor)
        return await create_domain(db, name, **props)

    async def modify_domain(self, db: AsyncSession, actor: Actor, name: str, props: Props,
                            translate: Translate = _as_given) -> None:
        require_superadmin(actor)
        row = await require_row(db, DomainRow, name, f"no such domain: {name}")
        props = translate(props)
        if props.get("name") and props["name"] != name:
            raise InvalidAPIParameters("renaming a domain is not supported")
        apply_props(row, props, DOMAIN_FIELDS)
        await db.flush()

    async def delete_domain(self, db: AsyncSession, actor: Actor, name: str) -> None:
        require_superadmin(actor)
        row = await require_row(db, DomainRow, name, f"no such domain: {name}")
        row.is_active = False
        await db.flush()

    async def purge_domain(self, db: AsyncSession, actor: Actor, name: str) -> None:
        require_superadmin(actor)
        await purge_domain(db, await require_row(db, DomainRow, name, f"no such domain: {name}"))

    # ---- users ----

    def check_new_user(self, actor: Actor, domain: str, role: str) -> None:
        """What a creation is refused for before anything is read: the domain, the role and its rank."""
        require_admin(actor, domain)
        check_role(role)
        may_create_role(actor, role)

    async def create_user(
        self, db: AsyncSession, actor: Actor, *, email: str, domain: str, unix_user: str, role: str = "user",
        username: str | None = None, password: str | None = None, full_name: str = "", description: str = "",
        need_password_change: bool | None = None, status: str | None = None, group_ids: list[str] | None = None,
        group_names: tuple[str, ...] = (), resource_policy: str = "default",
    ) -> tuple[UserRow, NewKeypair]:
        """A user with their Unix identity, their projects (and associations) and a first keypair."""
        self.check_new_user(actor, domain, role)
        await self.unix_users.check(db, unix_user, actor=actor, domain=domain)
        row = await create_user(db, email=email, username=username, password=password, domain=domain, role=role,
                                unix_user=unix_user, full_name=full_name, description=description)
        if need_password_change is not None:
            row.need_password_change = need_password_change
        if status:
            row.status = status
        if group_ids:
            await set_user_groups(db, row, group_ids)
        for name in group_names:
            g = await get_group(db, name, domain)
            if g is None:
                raise InvalidAPIParameters(f"no project {name} in domain {domain}")
            await add_member(db, g, row)
        if group_ids or group_names:
            for g in await groups_of_user(db, row.uuid):
                await self.projects.members(g, [row.unix_user])
        kp = await create_keypair(db, row, resource_policy=resource_policy)
        await self.projects.users(db, [row.uuid])   # the policy's limits on the new associations
        return row, kp

    async def modify_user(self, db: AsyncSession, actor: Actor, email: str, props: dict[str, Any]) -> UserRow:
        row = await user_by_email(db, email)
        require_admin(actor, row.domain_name)
        may_change_account(actor, row)
        if props.get("domain_name") and props["domain_name"] != row.domain_name:
            require_admin(actor, props["domain_name"])
            if await db.get(DomainRow, props["domain_name"]) is None:
                raise ObjectNotFound(f"no such domain: {props['domain_name']}")
        if props.get("role"):
            check_role(props["role"])
        if props.get("role") and props["role"] != row.role:
            may_grant_role(actor, props["role"])
        if props.get("unix_user") and props["unix_user"] != row.unix_user:
            await self.unix_users.check(db, props["unix_user"], user_uuid=row.uuid, actor=actor,
                                        domain=props.get("domain_name") or row.domain_name)
        apply_props(row, props, ("username", "need_password_change", "full_name", "description", "domain_name",
                                 "role", "status", "unix_user"))
        if props.get("is_active") is not None:
            row.status = "active" if props["is_active"] else "inactive"
        if props.get("password"):
            row.password = hash_password(props["password"])
        if props.get("group_ids") is not None:
            await set_user_groups(db, row, props["group_ids"])
        if props.get("group_ids") or props.get("unix_user"):   # the (new) Unix user in each project's account
            for g in await groups_of_user(db, row.uuid):
                await self.projects.members(g, [row.unix_user])
        await db.flush()
        if any(props.get(k) is not None for k in ("group_ids", "unix_user", "status", "is_active")):
            await self.projects.users(db, [row.uuid])
        return row

    async def _removable_user(self, db: AsyncSession, actor: Actor, email: str, verb: str) -> UserRow:
        row = await user_by_email(db, email)
        require_admin(actor, row.domain_name)
        if actor is not None and row.uuid == actor.user_uuid:
            raise InvalidAPIParameters(f"you cannot {verb} yourself")
        may_change_account(actor, row)
        return row

    async def delete_user(self, db: AsyncSession, actor: Actor, email: str) -> None:
        await delete_user(db, await self._removable_user(db, actor, email, "delete"))

    async def purge_user(self, db: AsyncSession, actor: Actor, email: str) -> None:
        await purge_user(db, await self._removable_user(db, actor, email, "purge"))

    # ---- projects ----

    async def create_project(self, db: AsyncSession, actor: Actor, name: str, domain: str,
                             props: dict[str, Any]) -> GroupRow:
        """A project, charged to a Slurm account this caller may use; the account (and its quota) is created
        inside the unit of work: a Slurm failure leaves no project behind."""
        require_admin(actor, domain)
        row = await create_group(db, name=name, domain=domain, slurm_account=props.get("slurm_account"),
                                 description=props.get("description") or "")
        await self.projects.check_account(db, actor, row.slurm_account, domain=row.domain_name, project_id=row.id)
        apply_props(row, props, ("is_active", "total_resource_slots", "allowed_vfolder_hosts", "integration_id"))
        await db.flush()
        await self.projects.project(row)
        return row

    async def modify_project(self, db: AsyncSession, actor: Actor, gid: str, props: dict[str, Any]) -> None:
        row = await project_by_id(db, gid)
        require_admin(actor, row.domain_name)
        if props.get("domain_name") and props["domain_name"] != row.domain_name:
            raise InvalidAPIParameters("moving a project to another domain is not supported")
        if props.get("slurm_account") and props["slurm_account"].lower() != row.slurm_account:
            props = {**props, "slurm_account": check_unix_name(props["slurm_account"].lower(), "slurm_account")}
            await self.projects.check_account(db, actor, props["slurm_account"], domain=row.domain_name,
                                              project_id=row.id)
        slurm_side = (row.slurm_account, row.total_resource_slots)
        apply_props(row, props, ("name", "description", "is_active", "total_resource_slots",
                                 "allowed_vfolder_hosts", "integration_id", "slurm_account"))
        mode, uuids = props.get("user_update_mode"), props.get("user_uuids") or []
        if mode not in (None, "add", "remove"):
            raise InvalidAPIParameters("user_update_mode must be 'add' or 'remove'")
        added = []
        for uid in uuids:
            member = await db.get(UserRow, uid)
            if member is None or member.domain_name != row.domain_name:
                raise InvalidAPIParameters(f"no user {uid} in domain {row.domain_name}")
            link = await db.get(GroupMemberRow, (row.id, uid))
            if mode == "add" and link is None:
                db.add(GroupMemberRow(group_id=row.id, user_id=uid))
                added.append(member.unix_user)
            elif mode == "remove" and link is not None:
                await db.delete(link)
        await db.flush()
        await self._follow_project(db, row, slurm_side, added)

    async def _follow_project(self, db: AsyncSession, row: GroupRow, slurm_side: tuple[str, Any],
                              added: list[str]) -> None:
        if (row.slurm_account, row.total_resource_slots) != slurm_side:   # a new account or quota: all of it
            await self.projects.project(row, [u.unix_user for u in await list_users(db, group_id=row.id)], db=db)
        else:
            await self.projects.members(row, added, db=db)

    async def add_to_project(self, db: AsyncSession, actor: Actor, group: GroupRow, user: UserRow) -> None:
        """A member more, with their association (and their policy's limits on it)."""
        require_admin(actor, group.domain_name)
        if user.domain_name != group.domain_name:   # a project's members are users of its domain
            raise InvalidAPIParameters(f"no user {user.email} in domain {group.domain_name}")
        await add_member(db, group, user)
        await self.projects.members(group, [user.unix_user], db=db)

    async def set_project_quota(self, db: AsyncSession, actor: Actor, group: GroupRow,
                                slots: dict[str, Any]) -> None:
        """A project's total_resource_slots, which with Slurm kept in step is its account's GrpTRES."""
        require_admin(actor, group.domain_name)
        group.total_resource_slots = slots
        await db.flush()
        await self.projects.project(group, [u.unix_user for u in await list_users(db, group_id=group.id)], db=db)

    async def delete_project(self, db: AsyncSession, actor: Actor, gid: str) -> None:
        row = await project_by_id(db, gid)
        require_admin(actor, row.domain_name)
        row.is_active = False
        await db.flush()

    async def purge_project(self, db: AsyncSession, actor: Actor, gid: str) -> None:
        row = await project_by_id(db, gid)
        require_admin(actor, row.domain_name)
        await db.delete(row)
        await db.flush()

    # ---- keypairs ----

    async def issue_keypair(self, db: AsyncSession, actor: Actor, owner: UserRow, *, resource_policy: str = "default",
                            is_admin: bool | None = None, rate_limit: int = 30000, is_active: bool = True
                            ) -> KeypairRow:
        """A new keypair for `owner`, issued only from above (or by the site operator)."""
        require_admin(actor, owner.domain_name)
        may_change_account(actor, owner, strictly=True)
        new = await create_keypair(db, owner, resource_policy=resource_policy, is_admin=is_admin,
                                   rate_limit=rate_limit)
        row: KeypairRow = await require_row(db, KeypairRow, new.access_key, f"no such keypair: {new.access_key}")
        if not is_active:
            row.is_active = False
        await db.flush()
        await self.projects.users(db, [owner.uuid])
        return row

    async def modify_keypair(self, db: AsyncSession, actor: Actor, access_key: str, props: dict[str, Any]) -> None:
        row, owner = await keypair_and_owner(db, access_key)
        require_admin(actor, owner.domain_name)
        may_change_account(actor, owner, strictly=True)
        if props.get("resource_policy") and await db.get(KeypairResourcePolicyRow, props["resource_policy"]) is None:
            raise ObjectNotFound(f"no such keypair resource policy: {props['resource_policy']}")
        if props.get("concurrency_limit") is not None:   # kept by the policy, not the key (Backend.AI 22.03+)
            policy = await db.get(KeypairResourcePolicyRow, props.get("resource_policy") or row.resource_policy)
            if policy is None or props["concurrency_limit"] != policy.max_concurrent_sessions:
                raise InvalidAPIParameters("concurrency_limit is the max_concurrent_sessions of the keypair's "
                                           "resource policy: change the policy, or give the key another one")
        apply_props(row, props, ("is_active", "is_admin", "resource_policy", "rate_limit"))
        await db.flush()
        await self.projects.users(db, [owner.uuid])

    async def delete_keypair(self, db: AsyncSession, actor: Actor, access_key: str) -> None:
        row, owner = await keypair_and_owner(db, access_key)
        require_admin(actor, owner.domain_name)
        if actor is not None and access_key == actor.access_key:
            raise InvalidAPIParameters("you cannot delete the keypair you are using")
        may_change_account(actor, owner)
        await db.delete(row)
        await db.flush()
        await self.projects.users(db, [owner.uuid])

    # ---- keypair resource policies and presets (superadmin) ----

    async def create_policy(self, db: AsyncSession, actor: Actor, name: str,
                            props: dict[str, Any]) -> KeypairResourcePolicyRow:
        require_superadmin(actor)
        if await db.get(KeypairResourcePolicyRow, name) is not None:
            raise InvalidAPIParameters(f"resource policy {name} already exists")
        row = KeypairResourcePolicyRow(name=name)
        apply_props(row, props, POLICY_FIELDS)
        db.add(row)
        await db.flush()
        return row

    async def modify_policy(self, db: AsyncSession, actor: Actor, name: str, props: Props,
                            translate: Translate = _as_given) -> None:
        require_superadmin(actor)
        row = await require_row(db, KeypairResourcePolicyRow, name, f"no such resource policy: {name}")
        apply_props(row, translate(props), POLICY_FIELDS)
        await db.flush()
        await self.projects.users(db, await self.projects.policy_holders(db, name))   # its holders follow

    async def delete_policy(self, db: AsyncSession, actor: Actor, name: str) -> None:
        require_superadmin(actor)
        await delete_policy(db, await require_row(db, KeypairResourcePolicyRow, name,
                                                  f"no such resource policy: {name}"))

    async def create_preset(self, db: AsyncSession, actor: Actor, name: str, slots: dict[str, Any],
                            shared_memory: int | None) -> ResourcePresetRow:
        require_superadmin(actor)
        return await create_preset(db, name, slots, shared_memory)

    async def modify_preset(self, db: AsyncSession, actor: Actor, name: str, changes: Props,
                            translate: Translate = _as_given) -> None:
        """`changes`: resource_slots and/or shared_memory, each set as given (None included) when present."""
        require_superadmin(actor)
        row = await require_row(db, ResourcePresetRow, name, f"no such resource preset: {name}")
        changes = translate(changes)
        for key in ("resource_slots", "shared_memory"):
            if key in changes:
                setattr(row, key, changes[key])
        await db.flush()

    async def delete_preset(self, db: AsyncSession, actor: Actor, name: str) -> None:
        require_superadmin(actor)
        await db.delete(await require_row(db, ResourcePresetRow, name, f"no such resource preset: {name}"))
        await db.flush()
