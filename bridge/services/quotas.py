"""Quotas the gateway can know: what a keypair, a project and a domain hold now, their limits, and the
up-front check of a new session against all three (and the keypair's session count).

Held means every session not yet ended, queued ones included: a PENDING session will hold its slots when
Slurm starts it, and counting it is what lets the gateway refuse a request up front rather than leave it
pending for ever. What only Slurm knows (others' jobs in a shared account, partitions filling up) is Slurm's
to hold back, as PENDING with its reason.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.tables import DomainRow, GroupRow, KeypairResourcePolicyRow, SessionRow
from bridge.domain.cluster import total_slots
from bridge.domain.resources import Amounts, added, amounts, describe, exceeded, occupied, remaining
from bridge.domain.session import ACTIVE_STATUSES
from bridge.errors import QuotaExceeded, ResourceLimitExceeded


async def held(s: AsyncSession, *, access_key: str | None = None, group_id: str | None = None,
               domain: str | None = None) -> Amounts:
    """The slots held by the unfinished sessions of a keypair, a project or a domain (one query)."""
    q = select(SessionRow.resources, SessionRow.cluster_size, SessionRow.status_data).where(
        SessionRow.status.in_([x.value for x in ACTIVE_STATUSES]))
    if access_key is not None:
        q = q.where(SessionRow.access_key == access_key)
    if group_id is not None:
        q = q.where(SessionRow.group_id == group_id)
    if domain is not None:
        q = q.where(SessionRow.domain_name == domain)
    return added(occupied({}), *(occupied(total_slots(r, n or 1, d)) for r, n, d in (await s.execute(q)).all()))


async def sessions_held(s: AsyncSession, access_key: str) -> int:
    """How many unfinished sessions a keypair has (what max_concurrent_sessions counts)."""
    return int((await s.execute(select(func.count()).select_from(SessionRow).where(
        SessionRow.access_key == access_key,
        SessionRow.status.in_([x.value for x in ACTIVE_STATUSES])))).scalar_one())


async def check_policy(s: AsyncSession, policy: KeypairResourcePolicyRow | None, access_key: str,
                       cluster_size: int) -> None:
    """The keypair policy's counts: sessions at once (412) and containers per session (406)."""
    if policy is None:
        return
    active = await sessions_held(s, access_key)
    if policy.max_concurrent_sessions and active >= policy.max_concurrent_sessions:
        raise QuotaExceeded(f"quota: you have {active} unfinished sessions; your keypair's resource policy allows "
                            f"{policy.max_concurrent_sessions} at once",
                            data={"limit": "max_concurrent_sessions"})
    if policy.max_containers_per_session and cluster_size > max(policy.max_containers_per_session, 1):
        raise ResourceLimitExceeded(f"clusterSize {cluster_size} exceeds your policy's "
                                    f"{policy.max_containers_per_session} containers per session")


def limits_of(slots: dict[str, Any] | None) -> Amounts:
    try:
        return amounts(slots)
    except ValueError:   # a limit stored before limits were checked: unreadable is no limit, not a crash
        return amounts({})


async def check(s: AsyncSession, *, access_key: str, policy: KeypairResourcePolicyRow | None, group: GroupRow,
                domain: DomainRow | None, want: Amounts) -> None:
    """Refuse a new session whose slots `want` would take its keypair, project or domain past their
    total_resource_slots: ResourceLimitExceeded (406) when it asks for more than the limit on its own,
    QuotaExceeded (412) when what is already held leaves too little; both name the limit and the slot."""
    scopes: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = [
        ("your keypair's resource policy", policy.total_resource_slots if policy else None, {"access_key": access_key}),
        (f"project {group.name}", group.total_resource_slots, {"group_id": group.id}),
        (f"domain {domain.name if domain else ''}", domain.total_resource_slots if domain else None,
         {"domain": domain.name if domain else None})]
    for label, slots, scope in scopes:
        limit = limits_of(slots)
        if all(v == float("inf") for v in limit.values()):
            continue
        alone = exceeded(want, limit)
        if alone is not None:   # could never start, whatever ends first
            raise ResourceLimitExceeded(f"resources.{alone}: asks for {describe(alone, want[alone])}, more than "
                                        f"{label} allows in total ({describe(alone, limit[alone])})",
                                        data={"limit": label, "slot": alone})
        using = await held(s, **scope)
        over = exceeded(want, remaining(limit, using))
        if over is not None:
            raise QuotaExceeded(
                f"quota: {label} allows {describe(over, limit[over])} in total; {describe(over, using[over])} "
                f"{'is' if using[over] == 1 else 'are'} held by unfinished sessions and this one asks for "
                f"{describe(over, want[over])}", data={"limit": label, "slot": over})
