"""Projects on the Slurm side: each project's Slurm account, an association for each member's Unix user,
and the project's quota (`total_resource_slots`) as the account's GrpTRES.

With `accounts.slurm_sync` on, every change to a project, its members or a member's Unix user, whether it
comes through GraphQL (the official client's `admin group ...`) or through `bai-bridge admin`, calls this
inside the caller's unit of work, so a refusal from Slurm rolls the whole change back. With it off, the
site runs sacctmgr itself and this does nothing. Removing a member leaves the association: the gateway
refuses the project to that user at once, and whether direct sbatch access ends too is the site's call.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.adapters.db.tables import GroupRow
from bridge.adapters.runner import CommandRunner
from bridge.adapters.slurm.accounting import SlurmAccounting
from bridge.config import BridgeSettings
from bridge.domain.resources import quota_tres
from bridge.errors import InvalidAPIParameters


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
