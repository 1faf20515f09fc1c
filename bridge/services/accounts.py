"""Accounts: domains, users (with their Unix user), projects (with their Slurm account), keypairs, policies.

Keys come from the `secrets` CSPRNG; passwords are hashed with argon2. Every function takes an open
AsyncSession (the caller's unit of work) and only flushes.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
