"""Resource presets and whether each can start now (`/resource/check-presets`), from the gateway's quotas
and Slurm's live node state.

A preset is allocatable when it fits what is left of the keypair's and the project's totals and some
node of a resource group the caller may use has that much free (CPUs, memory and GPUs not allocated,
the node up). `scaling_group_remaining` is the free total of the chosen group (of every group the caller
may use when none is chosen), and `scaling_groups` the same per group.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import select

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import KeypairResourcePolicyRow, KeypairRow, ResourcePresetRow
from bridge.adapters.slurm.base import NodeInfo, gres_count
from bridge.domain.auth import AuthContext
from bridge.domain.resources import Amounts, added, exceeded, occupied, remaining, smallest, wire_amounts
from bridge.errors import GenericForbidden
from bridge.services import accounts, quotas
from bridge.services.resource_groups import ResourceGroups

UNUSABLE = ("DOWN", "DRAIN", "DRAINED", "DRAINING", "FAIL", "FAILING", "NOT_RESPONDING", "UNKNOWN", "FUTURE",
            "POWERED_DOWN", "MAINTENANCE", "RESERVED", "INVALID_REG")


class NodeSource(Protocol):
    async def get(self) -> list[NodeInfo]: ...


def free_on(node: NodeInfo) -> Amounts:
    """What a node has not allocated (nothing when it cannot take jobs)."""
    if any(s in UNUSABLE for s in node.state):
        return {"cpu": 0.0, "mem": 0.0, "cuda.device": 0.0}
    return {"cpu": float(max(node.cpus - node.cpus_allocated, 0)),
            "mem": float(max(node.memory_mb - node.memory_allocated_mb, 0) * 1024 * 1024),
            "cuda.device": float(max(gres_count(node.gres, "gpu") - gres_count(node.gres_used, "gpu"), 0))}


def used_on(node: NodeInfo) -> Amounts:
    return {"cpu": float(node.cpus_allocated), "mem": float(node.memory_allocated_mb * 1024 * 1024),
            "cuda.device": float(gres_count(node.gres_used, "gpu"))}


def preset_wire(row: ResourcePresetRow) -> dict[str, Any]:
    return {"name": row.name, "resource_slots": {k: str(v) for k, v in (row.resource_slots or {}).items()},
            "shared_memory": str(row.shared_memory) if row.shared_memory is not None else None}


class Presets:
    def __init__(self, db: Database, groups: ResourceGroups, nodes: NodeSource) -> None:
        self.db, self.groups, self.nodes = db, groups, nodes

    async def listing(self) -> list[dict[str, Any]]:
        async with self.db.unit_of_work() as s:
            return [preset_wire(r) for r in await accounts.list_presets(s)]

    async def check(self, auth: AuthContext, project: str, scaling_group: str | None) -> dict[str, Any]:
        async with self.db.unit_of_work() as s:
            group = await accounts.caller_project(s, auth, project, active=True)
            kp = await s.get(KeypairRow, auth.access_key)
            policy = await s.get(KeypairResourcePolicyRow, kp.resource_policy) if kp else None
            keypair_limits = quotas.limits_of(policy.total_resource_slots if policy else None)
            keypair_using = await quotas.held(s, access_key=auth.access_key)
            group_limits = quotas.limits_of(group.total_resource_slots)
            group_using = await quotas.held(s, group_id=group.id)
            allowed = await self.groups.allowed(s, domain=auth.domain_name, group_id=group.id,
                                                access_key=auth.access_key)
            presets = list((await s.execute(select(ResourcePresetRow).order_by(ResourcePresetRow.name))).scalars())
        if scaling_group is not None and scaling_group not in allowed:
            raise GenericForbidden(f"scaling_group: resource group {scaling_group} is not open to you")
        chosen = [scaling_group] if scaling_group else allowed
        nodes = await self.nodes.get()
        per_group: dict[str, dict[str, Amounts]] = {}
        for name in allowed:
            mine = [n for n in nodes if name in n.partitions]
            per_group[name] = {"using": added(occupied({}), *(used_on(n) for n in mine)),
                               "remaining": added(occupied({}), *(free_on(n) for n in mine))}
        left = smallest(remaining(keypair_limits, keypair_using), remaining(group_limits, group_using))
        candidates = [free_on(n) for n in nodes if any(p in chosen for p in n.partitions)]
        out_presets = []
        for row in presets:
            try:
                want = occupied(row.resource_slots)
            except ValueError:
                want = None
            fits = want is not None and exceeded(want, left) is None and any(
                exceeded(want, free) is None for free in candidates)
            out_presets.append({**preset_wire(row), "allocatable": fits})
        sg_remaining = added(occupied({}), *(per_group[n]["remaining"] for n in chosen if n in per_group))
        return {
            "keypair_limits": wire_amounts(keypair_limits), "keypair_using": wire_amounts(keypair_using),
            "keypair_remaining": wire_amounts(remaining(keypair_limits, keypair_using)),
            "group_limits": wire_amounts(group_limits), "group_using": wire_amounts(group_using),
            "group_remaining": wire_amounts(remaining(group_limits, group_using)),
            "scaling_group_remaining": wire_amounts(sg_remaining),
            "scaling_groups": {n: {k: wire_amounts(v) for k, v in g.items()} for n, g in per_group.items()},
            "presets": out_presets,
        }
