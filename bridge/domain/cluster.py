"""The kernels of a session: one for a plain session, `cluster_size` for a cluster session. Their roles, host
names (main1, sub1, sub2, …), ids and the documented BACKENDAI_CLUSTER_* environment, and where each runs:
`multi-node` puts one kernel on each node of the job, `single-node` puts them all on one node."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.domain.resources import session_slots, summed_slots

MULTI_NODE = "multi-node"
SINGLE_NODE = "single-node"
MODES = (SINGLE_NODE, MULTI_NODE)


@dataclass(frozen=True, slots=True)
class Kernel:
    """One kernel of a session. `rank` counts from 0 over the whole session (main1 is 0); `idx` from 1 within
    its role (Backend.AI's cluster_idx: main1 and sub1 are both 1); `local_rank` from 0 on its node."""

    id: str
    rank: int
    idx: int
    role: str          # "main", "sub", or a cluster template's own role
    host: str          # main1, sub1, sub2, …: the name the other kernels reach it by
    node_index: int    # which node of the job (in Slurm's order) runs it
    local_rank: int


def kernel_id(session_id: str, rank: int) -> str:
    """The main kernel's id is the session's (Backend.AI's convention); the kernel of rank r adds r to the
    last four hex digits (modulo 2^16), so that every id stays a UUID, differs from every other kernel's,
    and can be traced back to its session."""
    last = (int(session_id[-4:], 16) + rank) % 0x10000
    return f"{session_id[:-4]}{last:04x}"


def kernels(session_id: str, size: int, mode: str, roles: Sequence[tuple[str, int]] | None = None) -> list[Kernel]:
    """`roles`: [(role, replicas)] with main first, as a cluster template gives them; by default main1 and
    `size - 1` subs. Host names are the role and its index: main1, sub1, worker2."""
    multi = mode == MULTI_NODE
    plan = list(roles) if roles else [("main", 1), ("sub", max(size, 1) - 1)]
    found: list[Kernel] = []
    for role, replicas in plan:
        for idx in range(1, replicas + 1):
            rank = len(found)
            found.append(Kernel(id=kernel_id(session_id, rank), rank=rank, idx=idx, role=role,
                                host=f"{role}{idx}", node_index=rank if multi else 0,
                                local_rank=0 if multi else rank))
    return found


def find(session_id: str, size: int, mode: str, ref: str | None,
         roles: Sequence[tuple[str, int]] | None = None) -> Kernel | None:
    """A kernel named by its id or its host name (sub1); None names the main kernel."""
    ks = kernels(session_id, size, mode, roles)
    if not ref:
        return ks[0]
    ref = ref.strip().lower()
    return next((k for k in ks if ref in (k.id, k.host)), None)


def node_of(kernel: Kernel, nodes: Sequence[str]) -> str | None:
    return nodes[kernel.node_index] if kernel.node_index < len(nodes) else None


def environment(all_kernels: Sequence[Kernel], kernel: Kernel) -> dict[str, str]:
    """What Backend.AI's agents set in every kernel of a cluster session."""
    return {
        "BACKENDAI_KERNEL_ID": kernel.id,
        "BACKENDAI_CLUSTER_SIZE": str(len(all_kernels)),
        "BACKENDAI_CLUSTER_HOSTS": ",".join(k.host for k in all_kernels),
        "BACKENDAI_CLUSTER_REPLICAS": replicas(all_kernels),
        "BACKENDAI_CLUSTER_HOST": kernel.host,
        "BACKENDAI_CLUSTER_IDX": str(kernel.idx),
        "BACKENDAI_CLUSTER_ROLE": kernel.role,
        "BACKENDAI_CLUSTER_LOCAL_RANK": str(kernel.local_rank),
    }


def replicas(all_kernels: Sequence[Kernel]) -> str:
    """`main:1,sub:2`: how many kernels each role has."""
    counts: dict[str, int] = {}
    for k in all_kernels:
        counts[k.role] = counts.get(k.role, 0) + 1
    return ",".join(f"{role}:{n}" for role, n in counts.items())


def failed_kernel(marker: str) -> str | None:
    """status_info for a cluster session that a kernel ended, from the job's marker (`sub1 3`, `sub2 timeout`);
    None for a marker that names no kernel of ours (the user can write that file)."""
    parts = marker.split()
    if len(parts) < 2 or not all(_HOST.fullmatch(p) for p in parts[:-1]):
        return None
    why = parts[-1]
    hosts = ", ".join(parts[:-1])
    if why == "timeout":
        return f"kernel {hosts} did not start"
    if why == "lost":
        return f"kernel {hosts} lost (its Slurm step ended)"
    return f"kernel {hosts} failed (exit {why})" if why.isdigit() else None


_HOST = re.compile(r"[a-z][a-z0-9-]{0,30}[0-9]{1,4}")


ROLE_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}[a-z]")


def check_roles(roles: Sequence[tuple[str, int]]) -> None:
    """A cluster template's roles: main first, once, with one replica; each role once, named so that its
    host names (role + index) are valid host names. ValueError says what is wrong."""
    if not roles or roles[0] != ("main", 1) or sum(1 for r, _ in roles if r == "main") != 1:
        raise ValueError("one and only one main node, with one replica, must be in every cluster")
    seen: set[str] = set()
    for role, replicas in roles:
        if role in seen:
            raise ValueError(f"role {role!r} is defined twice")
        seen.add(role)
        if not ROLE_NAME.fullmatch(role):
            raise ValueError(f"role {role!r}: lowercase letters, digits and '-', starting and ending with a letter")
        if not 1 <= replicas <= 64:
            raise ValueError(f"role {role}: replicas must be between 1 and 64")


@dataclass(frozen=True, slots=True)
class StoredRole:
    """A role of a session made from a cluster template, as the session keeps it (status_data["roles"])."""

    role: str
    replicas: int
    image: str
    image_path: str
    resources: dict[str, str]


def stored_roles(status_data: dict[str, Any] | None) -> list[StoredRole]:
    found = []
    for r in (status_data or {}).get("roles") or []:
        if isinstance(r, dict):
            found.append(StoredRole(role=str(r["role"]), replicas=int(r["replicas"]), image=str(r["image"]),
                                    image_path=str(r["image_path"]), resources=dict(r.get("resources") or {})))
    return found


def role_plan(status_data: dict[str, Any] | None) -> list[tuple[str, int]]:
    """[(role, replicas)] of a session made from a cluster template; [] for main1 and subs."""
    return [(r.role, r.replicas) for r in stored_roles(status_data)]


def total_slots(resources: dict[str, Any] | None, cluster_size: int,
                status_data: dict[str, Any] | None) -> dict[str, str]:
    """What a whole session holds: each role's kernels times their own size for a cluster template's roles,
    else each kernel's slots times the kernels."""
    roles = stored_roles(status_data)
    return slots_of([(r.resources, r.replicas) for r in roles] or [(resources, cluster_size)])


def slots_of(parts: Sequence[tuple[Any, int]]) -> dict[str, str]:
    """[(one kernel's slots, how many such kernels)] added up: what the session they make holds."""
    return summed_slots(*(session_slots(each, n) for each, n in parts))
