"""Resource groups ("scaling groups"): one per Slurm partition, and who may use which.

A partition the gateway has not seen before becomes a resource group of the same name, associated with
every domain (open, as the cluster was before the gateway knew of it); an admin then narrows it with the
associate/disassociate mutations. A group an admin deletes stays deleted even though its partition lives
on (the names seen are kept), until an admin creates it again.

Who may use a group is the union of its associations: the user's domain, the project the session is for,
and the keypair it runs under (Backend.AI's rule). Sessions, `GET /scaling-groups`, check-presets and the
GraphQL listings all ask `allowed()`, so they agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import (
    DomainRow,
    GroupRow,
    KeypairRow,
    ScalingGroupForDomainRow,
    ScalingGroupForGroupRow,
    ScalingGroupForKeypairRow,
    ScalingGroupRow,
)
from bridge.adapters.slurm.base import PartitionInfo
from bridge.errors import GenericForbidden, InvalidAPIParameters, ObjectNotFound
from bridge.services import settings_store

SEEN = "resource_groups:seen"
# the association tables by the kind of thing a group is associated with, and the column naming it
KINDS: dict[str, tuple[Any, str]] = {
    "domain": (ScalingGroupForDomainRow, "domain"),
    "group": (ScalingGroupForGroupRow, "group"),
    "keypair": (ScalingGroupForKeypairRow, "access_key"),
}
EDITABLE = ("description", "is_active", "is_public", "wsproxy_addr", "scheduler_opts")


class PartitionSource(Protocol):
    """Where the partitions come from (the session service's cached Slurm read)."""

    async def get(self) -> list[PartitionInfo]: ...


class ResourceGroups:
    def __init__(self, db: Database, partitions: PartitionSource) -> None:
        self.db, self.partitions = db, partitions
        self._known: frozenset[str] = frozenset()   # the partition names already taken in
        self._taking_in = asyncio.Lock()   # sibling GraphQL fields ask at once; one takes new partitions in

    async def live(self) -> dict[str, PartitionInfo]:
        """The partitions Slurm has now, by name; new ones become resource groups first."""
        parts = {p.name: p for p in await self.partitions.get()}
        if not set(parts) <= self._known:
            async with self._taking_in:
                if not set(parts) <= self._known:
                    try:
                        await self._take_in(parts)
                    except IntegrityError:   # another gateway process took them in first: theirs stands
                        pass
                    self._known = frozenset(self._known | set(parts))
        return parts

    async def _take_in(self, parts: dict[str, PartitionInfo]) -> None:
        async with self.db.unit_of_work() as s:
            seen = set((await settings_store.get(s, SEEN, {"names": []}))["names"])
            new = sorted(set(parts) - seen)
            if new:
                domains = (await s.execute(select(DomainRow.name))).scalars().all()
                for name in new:
                    if await s.get(ScalingGroupRow, name) is None:
                        s.add(ScalingGroupRow(name=name, description=_describe(parts[name])))
                        await s.flush()
                        s.add_all(ScalingGroupForDomainRow(scaling_group=name, domain=d) for d in domains)
                await settings_store.put(s, SEEN, {"names": sorted(seen | set(new))})

    # ---- who may use what ------------------------------------------------------------------------------

    async def allowed(self, s: AsyncSession, *, domain: str, group_id: str | None,
                      access_key: str | None) -> list[str]:
        """The active groups a session of this domain, project and keypair may use, by name."""
        names: set[str] = set(await self.associated(s, "domain", domain))
        if group_id:
            names |= set(await self.associated(s, "group", group_id))
        if access_key:
            names |= set(await self.associated(s, "keypair", access_key))
        if not names:
            return []
        rows = (await s.execute(select(ScalingGroupRow.name).where(
            ScalingGroupRow.name.in_(names), ScalingGroupRow.is_active.is_(True)))).scalars().all()
        return sorted(rows)

    async def choose(self, s: AsyncSession, requested: str | None, default: str, *, domain: str,
                     group_id: str, access_key: str) -> str:
        """The group a new session runs in: the one asked for if allowed, else the site default if allowed,
        else the first allowed. Refused (403) when the caller may use none, or not the one asked for."""
        allowed = await self.allowed(s, domain=domain, group_id=group_id, access_key=access_key)
        if requested:
            if requested not in allowed:
                if requested not in await self.live() and await s.get(ScalingGroupRow, requested) is None:
                    raise InvalidAPIParameters(f"scaling_group: no resource group (Slurm partition) named "
                                               f"{requested!r}")
                raise GenericForbidden(f"scaling_group: resource group {requested} is not open to your domain, "
                                       "project or keypair")
            return requested
        if not allowed:
            raise GenericForbidden("no resource group is open to your domain, project or keypair; ask an admin")
        return default if default in allowed else allowed[0]

    async def associated(self, s: AsyncSession, kind: str, target: str) -> list[str]:
        await self.live()
        table, column = KINDS[kind]
        rows = await s.execute(select(table.scaling_group).where(getattr(table, column) == target))
        return sorted(rows.scalars().all())

    async def associations(self, s: AsyncSession, name: str) -> dict[str, list[str]]:
        """What a group is open to, by kind: domain names, project ids, access keys."""
        out = {}
        for kind, (table, column) in KINDS.items():
            q = select(getattr(table, column)).where(table.scaling_group == name)
            out[kind] = sorted((await s.execute(q)).scalars())
        return out

    # ---- administration --------------------------------------------------------------------------------

    async def rows(self, s: AsyncSession, names: Iterable[str] | None = None) -> list[ScalingGroupRow]:
        await self.live()
        q = select(ScalingGroupRow).order_by(ScalingGroupRow.name)
        if names is not None:
            q = q.where(ScalingGroupRow.name.in_(list(names)))
        return list((await s.execute(q)).scalars().all())

    async def create(self, s: AsyncSession, name: str, props: dict[str, Any]) -> ScalingGroupRow:
        if await s.get(ScalingGroupRow, name) is not None:
            raise InvalidAPIParameters(f"resource group {name} already exists")
        if name not in await self.live():
            raise InvalidAPIParameters(f"resource group {name}: Slurm has no partition of that name (a resource "
                                       "group is a partition; add it to slurm.conf first)")
        row = ScalingGroupRow(name=name)
        _apply(row, props)
        s.add(row)
        await s.flush()
        return row

    async def modify(self, s: AsyncSession, name: str, props: dict[str, Any]) -> ScalingGroupRow:
        row = await self._get(s, name)
        _apply(row, props)
        await s.flush()
        return row

    async def delete(self, s: AsyncSession, name: str) -> None:
        await s.delete(await self._get(s, name))
        await s.flush()

    async def associate(self, s: AsyncSession, kind: str, name: str, target: str) -> None:
        await self._get(s, name)
        await _check_target(s, kind, target)
        table, column = KINDS[kind]
        if await s.get(table, (name, target)) is None:
            s.add(table(scaling_group=name, **{column: target}))
            await s.flush()

    async def disassociate(self, s: AsyncSession, kind: str, name: str, target: str) -> None:
        await self._get(s, name)   # a partition not yet taken in would come back open to every domain
        table, column = KINDS[kind]
        await s.execute(delete(table).where(table.scaling_group == name, getattr(table, column) == target))

    async def disassociate_all(self, s: AsyncSession, kind: str, target: str) -> None:
        await self.live()
        table, column = KINDS[kind]
        await s.execute(delete(table).where(getattr(table, column) == target))

    async def open_to_new_domain(self, s: AsyncSession, domain: str) -> None:
        """A new domain may use every active public group, as the existing domains could when it was found."""
        for row in (await s.execute(select(ScalingGroupRow).where(
                ScalingGroupRow.is_public.is_(True), ScalingGroupRow.is_active.is_(True)))).scalars():
            s.add(ScalingGroupForDomainRow(scaling_group=row.name, domain=domain))
        await s.flush()

    async def _get(self, s: AsyncSession, name: str) -> ScalingGroupRow:
        await self.live()
        row = await s.get(ScalingGroupRow, name)
        if row is None:
            raise ObjectNotFound(f"no such resource group: {name}")
        return row


async def _check_target(s: AsyncSession, kind: str, target: str) -> None:
    model = {"domain": DomainRow, "group": GroupRow, "keypair": KeypairRow}[kind]
    if await s.get(model, target) is None:
        raise ObjectNotFound(f"no such {'project' if kind == 'group' else kind}: {target}")


def _apply(row: ScalingGroupRow, props: dict[str, Any]) -> None:
    for key in EDITABLE:
        if props.get(key) is not None:
            setattr(row, key, props[key])


def _describe(p: PartitionInfo) -> str:
    return f"Slurm partition {p.name} ({p.total_nodes} nodes, {p.total_cpus} CPUs)"
