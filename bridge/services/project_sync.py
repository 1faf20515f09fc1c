"""Projects on the Slurm side: each project's Slurm account, an association for each member's Unix user,
and the project's quota (`total_resource_slots`) as the account's GrpTRES.

With `accounts.slurm_sync` on, every change to a project, its members or a member's Unix user, whether it
comes through GraphQL (the official client's `admin group ...`) or through `bai-bridge admin`, calls this
inside the caller's unit of work, so a refusal from Slurm rolls the whole change back. With it off, the
site runs sacctmgr itself and this does nothing. Removing a member leaves the association: the gateway
refuses the project to that user at once, and whether direct sbatch access ends too is the site's call.

Members' keypair resource policies become their associations' limits (`bridge/domain/quotas.py`): set with
the project (`project`, `members`), after a policy or a user's keypairs change (`users`), and compared with
what Slurm holds by `check` (`bai-bridge admin quota check [--repair]`), which finds a limit changed with
sacctmgr behind the gateway's back and, asked to, states the gateway's again.

Which Slurm account a project may name is checked here too (`check_account`): a domain admin must not be
able to charge their users' jobs to another domain's account, least of all when the gateway would then
create the associations itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.tables import GroupMemberRow, GroupRow, KeypairResourcePolicyRow, KeypairRow, UserRow
from bridge.adapters.runner import CommandRunner
from bridge.adapters.slurm.accounting import SlurmAccounting
from bridge.config import BridgeSettings
from bridge.domain.auth import AuthContext
from bridge.domain.quotas import AssocLimits, PolicyLimits, member_limits, project_limits
from bridge.domain.resources import quota_tres
from bridge.errors import GenericForbidden, InvalidAPIParameters
from bridge.services import accounts


@dataclass(frozen=True, slots=True)
class Difference:
    """One limit where Slurm holds something other than the gateway's policies say."""

    account: str
    user: str          # "" for the account's own association
    limit: str
    wanted: str
    found: str

    def as_dict(self) -> dict[str, str]:
        return {"account": self.account, "user": self.user, "limit": self.limit, "wanted": self.wanted,
                "found": self.found}


class ProjectSync:
    def __init__(self, accounting: SlurmAccounting | None, *, shards_per_gpu: int = 0) -> None:
        self.accounting, self.shards_per_gpu = accounting, shards_per_gpu

    @classmethod
    def from_settings(cls, settings: BridgeSettings, runner: CommandRunner | None = None) -> ProjectSync:
        from bridge.adapters.slurm.factory import build_accounting

        accounting = build_accounting(settings, runner) if settings.accounts.slurm_sync else None
        return cls(accounting, shards_per_gpu=settings.sessions.shards_per_gpu)

    @property
    def enabled(self) -> bool:
        return self.accounting is not None

    async def check_account(self, db: AsyncSession, auth: AuthContext | None, account: str, *, domain: str,
                            project_id: str | None = None) -> None:
        """May this caller charge a project of `domain` to Slurm account `account`?

        - another domain's project uses it: only a superadmin may share it;
        - with the sync on, an account maps to one project only (the quota of two would overwrite each
          other), and an account that already exists in Slurm without a project here is adopted only by a
          superadmin: a domain admin could otherwise give their users associations in any account.
        """
        users = [g for g in await accounts.projects_using_account(db, account) if g.id != project_id]
        if self.accounting is not None and users:
            raise InvalidAPIParameters(f"Slurm account {account} is already the account of project "
                                       f"{users[0].name} ({users[0].domain_name})")
        if auth is None or auth.is_superadmin:   # a superadmin, or the site operator
            return
        if any(g.domain_name != domain for g in users):
            raise GenericForbidden(f"Slurm account {account} belongs to a project of another domain")
        if self.accounting is not None and await self.accounting.account_exists(account):
            raise GenericForbidden(f"Slurm account {account} already exists in Slurm; only a superadmin may map "
                                   "a project to it (or choose another slurm_account)")

    def quota(self, group: GroupRow) -> dict[str, int]:
        """The GrpTRES for a project's total_resource_slots; a slot Slurm cannot limit is a 400."""
        try:
            return quota_tres(group.total_resource_slots, shards_per_gpu=self.shards_per_gpu)
        except ValueError as e:
            raise InvalidAPIParameters(str(e)) from None

    async def project(self, group: GroupRow, members: Iterable[str] = (), db: AsyncSession | None = None) -> None:
        """The project's account exists with the project's quota, and each member has an association (with
        their policy's limits, when given the unit of work to read the policies in)."""
        if self.accounting is None:
            return
        tres = self.quota(group)   # checked before anything reaches Slurm
        await self.accounting.ensure_account(group.slurm_account, description=group.description or group.name)
        await self.accounting.set_account_limits(group.slurm_account, grp_tres=tres)
        for user in sorted(set(members)):
            await self.accounting.ensure_association(user, group.slurm_account)
        if db is not None:
            await self._member_limits(db, [group], set(members))

    async def members(self, group: GroupRow, unix_users: Iterable[str], db: AsyncSession | None = None) -> None:
        """An association with the project's account for each of these Unix users."""
        users = sorted(set(unix_users))
        if self.accounting is None or not users:
            return
        # the account first: the project may predate the sync, or its account may have been renamed
        await self.accounting.ensure_account(group.slurm_account, description=group.description or group.name)
        for user in users:
            await self.accounting.ensure_association(user, group.slurm_account)
        if db is not None:
            await self._member_limits(db, [group], set(users))

    async def users(self, db: AsyncSession, user_uuids: Iterable[str]) -> None:
        """After these users' policies or keypairs changed: their associations in each of their projects."""
        if self.accounting is None:
            return
        uuids = set(user_uuids)
        rows = (await db.execute(select(GroupRow, UserRow.unix_user).join(
            GroupMemberRow, GroupMemberRow.group_id == GroupRow.id).join(
            UserRow, UserRow.uuid == GroupMemberRow.user_id).where(UserRow.uuid.in_(uuids)))).all()
        for group, unix_user in rows:
            await self._member_limits(db, [group], {unix_user})

    async def policy_holders(self, db: AsyncSession, policy: str) -> set[str]:
        """The users holding a keypair with this policy (whose associations follow a change to it)."""
        return set((await db.execute(select(KeypairRow.user).where(KeypairRow.resource_policy == policy))).scalars())

    async def _member_limits(self, db: AsyncSession, groups: list[GroupRow], unix_users: set[str]) -> None:
        assert self.accounting is not None
        try:   # a slot Slurm cannot limit is refused before anything reaches it
            wanted = await self.wanted(db, groups)
        except ValueError as e:
            raise InvalidAPIParameters(str(e)) from None
        for (account, user), limits in sorted(wanted.items()):
            if user and user in unix_users:
                await self.accounting.set_limits(account, user, limits)

    async def wanted(self, db: AsyncSession,
                     groups: list[GroupRow] | None = None) -> dict[tuple[str, str], AssocLimits]:
        """What each association should hold: (account, "") for each project, (account, unix user) for each
        active member of an active project."""
        if groups is None:
            groups = list((await db.execute(select(GroupRow).where(GroupRow.is_active.is_(True)))).scalars())
        out: dict[tuple[str, str], AssocLimits] = {}
        policies: dict[str, list[PolicyLimits]] = {}
        for group in groups:
            out[(group.slurm_account, "")] = project_limits(group.total_resource_slots,
                                                            shards_per_gpu=self.shards_per_gpu)
            members = (await db.execute(select(UserRow).join(GroupMemberRow, GroupMemberRow.user_id == UserRow.uuid)
                                        .where(GroupMemberRow.group_id == group.id,
                                               UserRow.status == "active"))).scalars().all()
            for user in members:
                if user.uuid not in policies:
                    rows = (await db.execute(select(KeypairResourcePolicyRow).join(
                        KeypairRow, KeypairRow.resource_policy == KeypairResourcePolicyRow.name).where(
                        KeypairRow.user == user.uuid, KeypairRow.is_active.is_(True)))).scalars().all()
                    policies[user.uuid] = [PolicyLimits(r.total_resource_slots, r.max_concurrent_sessions,
                                                        r.max_session_lifetime) for r in rows]
                out[(group.slurm_account, user.unix_user)] = member_limits(policies[user.uuid],
                                                                           shards_per_gpu=self.shards_per_gpu)
        return out

    async def check(self, db: AsyncSession, *, repair: bool = False) -> list[Difference]:
        """Every difference between the gateway's policies and Slurm's associations (a missing association
        is one too); with `repair`, each is set right, and what was found is still returned."""
        if self.accounting is None:
            raise InvalidAPIParameters("accounts.slurm_sync is off: the site keeps Slurm's limits itself")
        try:
            wanted = await self.wanted(db)
        except ValueError as e:
            raise InvalidAPIParameters(str(e)) from None
        actual = await self.accounting.associations()
        found: list[Difference] = []
        for (account, user), want in sorted(wanted.items()):
            have = actual.get((account, user))
            if have is None:
                found.append(Difference(account, user, "association", "present", "missing"))
            else:
                found += [Difference(account, user, *d) for d in want.differences(have)]
        if repair:
            for account, user in sorted({(d.account, d.user) for d in found}):
                await self.accounting.ensure_account(account)
                if user:
                    await self.accounting.ensure_association(user, account)
                await self.accounting.set_limits(account, user or None, wanted[(account, user)])
        return found
