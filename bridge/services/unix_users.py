"""Which Unix user a gateway user may be mapped to through the API: a valid non-root name, no other gateway
user's identity (accounts.check_unix_user_free), and, when the cluster knows the name, a uid inside
`accounts.unix_uid_min..max`, so that no admin can have jobs run as a system account (slurm, munge, a
daemon). The cluster's own passwd answers (`getent passwd` where Slurm commands run: the login node, or
the dev cluster's root). A name the cluster does not know yet is accepted: its jobs fail until the site
creates the account.

Who may choose the mapping: a superadmin, and the site operator (`bai-bridge admin`); a domain admin only
where the site names a Unix group for the domain (`accounts.domain_unix_groups`), and only accounts in it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.runner import CommandRunner
from bridge.config import BridgeSettings
from bridge.domain.auth import AuthContext
from bridge.errors import CommandFailed, GenericForbidden, InvalidAPIParameters
from bridge.services import accounts

UidLookup = Callable[[str], Awaitable[int | None]]
GroupLookup = Callable[[str, str], Awaitable[bool]]   # (user, group) -> member?


def getent_lookup(runner: CommandRunner) -> UidLookup:
    async def lookup(name: str) -> int | None:
        done = await runner.run(["getent", "passwd", name], timeout_s=20)
        if done.rc == 2:          # getent: no such key
            return None
        fields = done.stdout.strip().split(":")
        if not done.ok or len(fields) < 3 or not fields[2].isdigit():
            raise CommandFailed(f"getent passwd {name} failed (rc={done.rc}): {done.stderr.strip()[:200]}")
        return int(fields[2])
    return lookup


def getent_membership(runner: CommandRunner) -> GroupLookup:
    async def member(user: str, group: str) -> bool:
        grp = await runner.run(["getent", "group", group], timeout_s=20)
        pw = await runner.run(["getent", "passwd", user], timeout_s=20)
        if grp.rc == 2 or pw.rc == 2:
            return False
        if not grp.ok or not pw.ok:
            raise CommandFailed(f"getent group {group} / passwd {user} failed: {(grp.stderr + pw.stderr)[:200]}")
        gfields, pfields = grp.stdout.strip().split(":"), pw.stdout.strip().split(":")
        if len(gfields) < 4 or len(pfields) < 4:
            return False
        return pfields[3] == gfields[2] or user in gfields[3].split(",")
    return member


class UnixUsers:
    def __init__(self, lookup: UidLookup, *, uid_min: int, uid_max: int,
                 membership: GroupLookup | None = None, domain_groups: dict[str, str] | None = None) -> None:
        self.lookup, self.uid_min, self.uid_max = lookup, uid_min, uid_max
        self.membership, self.domain_groups = membership, dict(domain_groups or {})

    @classmethod
    def from_settings(cls, settings: BridgeSettings, runner: CommandRunner) -> UnixUsers:
        return cls(getent_lookup(runner), uid_min=settings.accounts.unix_uid_min,
                   uid_max=settings.accounts.unix_uid_max, membership=getent_membership(runner),
                   domain_groups=settings.accounts.domain_unix_groups)

    async def may_map(self, actor: AuthContext | None, unix_user: str, domain: str) -> None:
        """Refuse a mapping that this caller may not choose (None: the site operator, who may)."""
        if actor is None or actor.is_superadmin:
            return
        group = self.domain_groups.get(domain)
        if group is None:
            raise GenericForbidden(f"only a superadmin maps users to Unix accounts in domain {domain} "
                                   "(a site may let its admins map to a Unix group: accounts.domain_unix_groups)")
        try:
            member = self.membership is not None and await self.membership(unix_user, group)
        except CommandFailed as e:
            raise InvalidAPIParameters(f"unix_user {unix_user}: the cluster's groups could not be read ({e})") \
                from None
        if not member:
            raise GenericForbidden(f"unix_user {unix_user} is not in Unix group {group}, the accounts the admins "
                                   f"of domain {domain} may map users to")

    async def check(self, db: AsyncSession, unix_user: str, *, user_uuid: str | None = None,
                    actor: AuthContext | None = None, domain: str | None = None) -> None:
        """Refuse a mapping to root, to another user's identity, to a uid outside the allowed range, or one
        this caller may not choose."""
        accounts.check_unix_name(unix_user, "unix_user")
        if domain is not None:
            await self.may_map(actor, unix_user, domain)
        await accounts.check_unix_user_free(db, unix_user, except_uuid=user_uuid)
        try:
            uid = await self.lookup(unix_user)
        except CommandFailed as e:
            raise InvalidAPIParameters(f"unix_user {unix_user}: the cluster's passwd could not be read ({e})") \
                from None
        if uid is not None and not self.uid_min <= uid <= self.uid_max:
            raise GenericForbidden(f"unix_user {unix_user} is uid {uid}, outside the uids users may be mapped to "
                                   f"({self.uid_min}-{self.uid_max}): a system account")
