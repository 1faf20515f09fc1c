"""Projects on the Slurm side: each project's Slurm account, an association for each member's Unix user,
and the project's quota (`total_resource_slots`) as the account's GrpTRES.

With `accounts.slurm_sync` on, every change to a project, its members or a member's Unix user, whether it
comes through GraphQL (the official client's `admin group ...`) or through `bai-bridge admin`, calls this
inside the caller's unit of work, so a refusal from Slurm rolls the whole change back. With it off, the
site runs sacctmgr itself and this does nothing. Removing a member leaves the association: the gateway
refuses the project to that user at once, and whether direct sbatch access ends too is the site's call.

Which Slurm account a project may name is checked here too (`check_account`): a domain admin must not be
able to charge their users' jobs to another domain's account, least of all when the gateway would then
create the associations itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.tables import GroupRow
from bridge.adapters.runner import CommandRunner
from bridge.adapters.slurm.accounting import SlurmAccounting
from bridge.config import BridgeSettings
from bridge.domain.auth import AuthContext
from bridge.domain.resources import quota_tres
from bridge.errors import GenericForbidden, InvalidAPIParameters
from bridge.services import accounts


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

    async def check_account(self, db: AsyncSession, auth: AuthContext, account: str, *, domain: str,
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
        if auth.is_superadmin:
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

    async def project(self, group: GroupRow, members: Iterable[str] = ()) -> None:
        """The project's account exists with the project's quota, and each member has an association."""
        if self.accounting is None:
            return
        tres = self.quota(group)   # checked before anything reaches Slurm
        await self.accounting.ensure_account(group.slurm_account, description=group.description or group.name)
        await self.accounting.set_account_limits(group.slurm_account, grp_tres=tres)
        for user in sorted(set(members)):
            await self.accounting.ensure_association(user, group.slurm_account)

    async def members(self, group: GroupRow, unix_users: Iterable[str]) -> None:
        """An association with the project's account for each of these Unix users."""
        users = sorted(set(unix_users))
        if self.accounting is None or not users:
            return
        # the account first: the project may predate the sync, or its account may have been renamed
        await self.accounting.ensure_account(group.slurm_account, description=group.description or group.name)
        for user in users:
            await self.accounting.ensure_association(user, group.slurm_account)
