"""Which Unix user a gateway user may be mapped to through the API: a valid non-root name, no other gateway
user's identity (accounts.check_unix_user_free), and, when the cluster knows the name, a uid inside
`accounts.unix_uid_min..max`, so that no admin can have jobs run as a system account (slurm, munge, a
daemon). The cluster's own passwd answers (`getent passwd` where Slurm commands run: the login node, or
the dev cluster's root). A name the cluster does not know yet is accepted: its jobs fail until the site
creates the account."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.runner import CommandRunner
from bridge.config import BridgeSettings
from bridge.errors import CommandFailed, GenericForbidden, InvalidAPIParameters
from bridge.services import accounts

UidLookup = Callable[[str], Awaitable[int | None]]


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


class UnixUsers:
    def __init__(self, lookup: UidLookup, *, uid_min: int, uid_max: int) -> None:
        self.lookup, self.uid_min, self.uid_max = lookup, uid_min, uid_max

    @classmethod
    def from_settings(cls, settings: BridgeSettings, runner: CommandRunner) -> UnixUsers:
        return cls(getent_lookup(runner), uid_min=settings.accounts.unix_uid_min,
                   uid_max=settings.accounts.unix_uid_max)

    async def check(self, db: AsyncSession, unix_user: str, *, user_uuid: str | None = None) -> None:
        """Refuse a mapping to root, to another user's identity, or to a uid outside the allowed range."""
        accounts.check_unix_name(unix_user, "unix_user")
        await accounts.check_unix_user_free(db, unix_user, except_uuid=user_uuid)
        try:
            uid = await self.lookup(unix_user)
        except CommandFailed as e:
            raise InvalidAPIParameters(f"unix_user {unix_user}: the cluster's passwd could not be read ({e})") \
                from None
        if uid is not None and not self.uid_min <= uid <= self.uid_max:
            raise GenericForbidden(f"unix_user {unix_user} is uid {uid}, outside the uids users may be mapped to "
                                   f"({self.uid_min}-{self.uid_max}): a system account")
