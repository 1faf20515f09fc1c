"""Stored records (bridge/services/records.py) and Slurm's nodes and partitions (bridge/domain/nodes.py)
→ the dicts the GraphQL schema reads (JSONString fields as JSON text)."""

from __future__ import annotations

import json
from typing import Any

from bridge.domain import cluster
from bridge.domain.nodes import NodeInfo, PartitionInfo, gres_count
from bridge.services.records import (
    DomainRow,
    GroupRow,
    KeypairResourcePolicyRow,
    KeypairRow,
    ResourcePresetRow,
    ScalingGroupRow,
    UserRow,
)

GIB = 1024**3


def jsonstr(value: Any) -> str:
    return json.dumps(value if value is not None else {})


def domain(row: DomainRow, scaling_groups: list[str]) -> dict[str, Any]:
    return {
        "name": row.name, "description": row.description, "is_active": row.is_active,
        "created_at": row.created_at, "modified_at": row.modified_at,
        "total_resource_slots": jsonstr(row.total_resource_slots),
        "allowed_vfolder_hosts": jsonstr(row.allowed_vfolder_hosts),
        "allowed_docker_registries": row.allowed_docker_registries, "integration_id": row.integration_id,
        "scaling_groups": scaling_groups,
    }


def group(row: GroupRow, scaling_groups: list[str]) -> dict[str, Any]:
    return {
        "id": row.id, "name": row.name, "description": row.description, "is_active": row.is_active,
        "created_at": row.created_at, "modified_at": row.modified_at, "domain_name": row.domain_name,
        "total_resource_slots": jsonstr(row.total_resource_slots),
        "allowed_vfolder_hosts": jsonstr(row.allowed_vfolder_hosts), "integration_id": row.integration_id,
        "scaling_groups": scaling_groups, "slurm_account": row.slurm_account, "resource_policy": None,
    }


def user(row: UserRow, groups: list[GroupRow], main_access_key: str | None,
         resource_policy: str | None = None) -> dict[str, Any]:
    return {
        "uuid": row.uuid, "id": row.uuid, "username": row.username, "email": row.email, "password": None,
        "need_password_change": row.need_password_change, "full_name": row.full_name,
        "description": row.description, "is_active": row.status == "active", "status": row.status,
        "status_info": row.status_info, "created_at": row.created_at, "modified_at": row.modified_at,
        "domain_name": row.domain_name, "role": row.role, "resource_policy": resource_policy,
        "groups": [{"id": g.id, "name": g.name} for g in groups], "allowed_client_ip": None,
        "totp_activated": False, "sudo_session_enabled": False, "main_access_key": main_access_key,
        "unix_user": row.unix_user,
    }


def keypair(row: KeypairRow, owner: UserRow | None, projects: list[str], *, show_secret: bool) -> dict[str, Any]:
    return {
        "user_id": row.user_id, "user_info": {"email": row.user_id, "full_name": owner.full_name if owner else ""},
        "id": row.access_key, "projects": projects, "access_key": row.access_key,
        "secret_key": row.secret_key if show_secret else None,
        "is_active": row.is_active, "is_admin": row.is_admin, "resource_policy": row.resource_policy,
        "created_at": row.created_at, "modified_at": row.modified_at, "last_used": row.last_used,
        "concurrency_used": 0, "concurrency_limit": None, "rate_limit": row.rate_limit,
        "num_queries": row.num_queries, "user": row.user, "ssh_public_key": row.ssh_public_key,
        "ssh_private_key": row.ssh_private_key if show_secret else None,
        "dotfiles": jsonstr([{"path": e["path"], "permission": e.get("perm"), "data": e.get("data")}
                             for e in row.dotfiles or []]),
        "bootstrap_script": row.bootstrap_script or "", "vfolders": [], "compute_sessions": [],
    }


def policy(row: KeypairResourcePolicyRow) -> dict[str, Any]:
    return {
        "name": row.name, "created_at": row.created_at, "default_for_unspecified": row.default_for_unspecified,
        "total_resource_slots": jsonstr(row.total_resource_slots),
        "max_session_lifetime": row.max_session_lifetime, "max_concurrent_sessions": row.max_concurrent_sessions,
        "max_concurrent_sftp_sessions": row.max_concurrent_sftp_sessions,
        "max_containers_per_session": row.max_containers_per_session, "idle_timeout": row.idle_timeout,
        "max_vfolder_count": row.max_vfolder_count, "max_vfolder_size": row.max_vfolder_size,
        "allowed_vfolder_hosts": jsonstr(row.allowed_vfolder_hosts),
    }


def preset(row: ResourcePresetRow) -> dict[str, Any]:
    return {"name": row.name, "resource_slots": jsonstr(row.resource_slots), "shared_memory": row.shared_memory}


def scaling_group(row: ScalingGroupRow, p: PartitionInfo | None) -> dict[str, Any]:
    """A resource group with its partition as Slurm has it now (None: the partition is gone)."""
    return {
        "name": row.name, "description": row.description, "is_active": row.is_active, "is_public": row.is_public,
        "created_at": row.created_at, "driver": "slurm",
        "driver_opts": jsonstr({"partition": row.name, "nodes": list(p.nodes) if p else [],
                                "total_cpus": p.total_cpus if p else 0}),
        "scheduler": "slurm",
        "scheduler_opts": jsonstr({**(row.scheduler_opts or {}), "max_time_min": p.max_time_min if p else None}),
        "use_host_network": True, "wsproxy_addr": row.wsproxy_addr, "wsproxy_api_token": None,
        "slurm_state": p.state if p else "MISSING",
    }


def _metric(current: float, capacity: float | None, unit: str) -> dict[str, Any]:
    pct = round(100.0 * current / capacity, 2) if capacity else None
    return {"current": f"{current:.3f}", "capacity": f"{capacity:.3f}" if capacity is not None else None,
            "pct": f"{pct:.2f}" if pct is not None else None, "unit_hint": unit}


def agent_live_stat(n: NodeInfo) -> dict[str, Any]:
    """A node's load as Slurm last read it (CPULoad, FreeMem), in the agents' live_stat shape: the node
    and its devices (here the node as one device). Empty when Slurm has not read it."""
    node: dict[str, Any] = {}
    if n.cpu_load is not None and n.cpus:
        node["cpu_util"] = _metric(min(n.cpu_load / n.cpus, 1.0) * 100.0 * n.cpus, 100.0 * n.cpus, "percent")
    if n.free_memory_mb is not None and n.memory_mb:
        used = max(n.memory_mb - n.free_memory_mb, 0) * 1024 * 1024
        node["mem"] = _metric(float(min(used, n.memory_mb * 1024 * 1024)), float(n.memory_mb * 1024 * 1024), "bytes")
    return {"node": node, "devices": {k: {n.name: v} for k, v in node.items()}}


def agent(n: NodeInfo) -> dict[str, Any]:
    down = any(s in ("DOWN", "DRAIN", "FAIL", "NOT_RESPONDING", "UNKNOWN") for s in n.state)
    available = {"cpu": str(n.cpus), "mem": str(n.memory_mb * 1024 * 1024),
                 "cuda.device": str(gres_count(n.gres, "gpu"))}
    occupied = {"cpu": str(n.cpus_allocated), "mem": str(n.memory_allocated_mb * 1024 * 1024),
                "cuda.device": str(gres_count(n.gres_used, "gpu"))}
    return {
        "id": n.name, "status": "LOST" if down else "ALIVE", "status_changed": None, "region": "slurm",
        "architecture": "x86_64", "scaling_group": n.partitions[0] if n.partitions else None,
        "schedulable": not down, "available_slots": jsonstr(available), "occupied_slots": jsonstr(occupied),
        "addr": n.address, "first_contact": None, "lost_at": None, "live_stat": jsonstr(agent_live_stat(n)),
        "version": None,
        "compute_plugins": jsonstr({}), "hardware_metadata": jsonstr({}), "local_config": jsonstr({}),
        "compute_containers": [],
        "cpu_cur_pct": round(100.0 * n.cpus_allocated / n.cpus, 1) if n.cpus else 0.0,
        "mem_cur_bytes": float(n.memory_allocated_mb * 1024 * 1024),
        "slurm_state": "+".join(n.state),
    }


def _iso(d: Any) -> Any:
    return d if d is None or getattr(d, "tzinfo", None) else d.replace(tzinfo=__import__("datetime").UTC)


def session_kernels(row: Any, usage: Any = None) -> list[dict[str, Any]]:
    """The session's kernels (bridge.domain.cluster): where each runs, its role and host name.
    `usage`: the utilization monitor (live_stat, last_stat), if the server runs one."""
    found = cluster.kernels(row.id, row.cluster_size, row.cluster_mode, cluster.role_plan(row.status_data))
    stats = usage.kernel_stats(row) if usage is not None else [(None, None)] * len(found)
    nodes = list(row.nodes or [])
    return [{
        "id": k.id, "idx": k.idx, "role": k.role, "hostname": k.host, "cluster_role": k.role,
        "cluster_idx": k.idx, "cluster_hostname": k.host, "session_id": row.id, "image": row.image,
        "registry": None, "status": row.status, "status_changed": _iso(row.status_changed),
        "status_info": row.status_info, "status_data": jsonstr(row.status_data), "created_at": _iso(row.created_at),
        "terminated_at": _iso(row.terminated_at), "agent": cluster.node_of(k, nodes),
        "container_id": row.job_id, "resource_opts": jsonstr(row.resource_opts),
        "occupied_slots": jsonstr(row.resources if row.status == "RUNNING" else {}), "preopen_ports": _preopen(row),
        "live_stat": _stat(stats[k.rank][0] if k.rank < len(stats) else None),
        "last_stat": _stat(stats[k.rank][1] if k.rank < len(stats) else None),
    } for k in found]


def session(row: Any, *, group_name: str, user_email: str, dependencies: list[dict[str, Any]],
            usage: Any = None) -> dict[str, Any]:
    return {
        "id": row.id, "session_id": row.id, "main_kernel_id": row.id, "name": row.name, "type": row.type,
        "tag": row.tag, "image": row.image, "registry": None, "architecture": row.architecture,
        "cluster_template": None, "cluster_mode": row.cluster_mode, "cluster_size": row.cluster_size,
        "domain_name": row.domain_name, "group_name": group_name, "group_id": row.group_id,
        "agent_ids": list(row.nodes or []), "agents": list(row.nodes or []), "user_email": user_email,
        "user_id": row.user_uuid,
        "access_key": row.access_key, "created_user_email": user_email, "created_user_id": row.user_uuid,
        "status": row.status, "status_changed": _iso(row.status_changed), "status_info": row.status_info,
        "status_data": jsonstr(row.status_data), "created_at": _iso(row.created_at),
        "terminated_at": _iso(row.terminated_at), "starts_at": _iso(row.starts_at),
        "scheduled_at": _iso(row.scheduled_at), "startup_command": row.startup_command, "result": row.result,
        "resource_opts": jsonstr(row.resource_opts), "resoucre_opts": jsonstr(row.resource_opts),
        "scaling_group": row.partition, "service_ports": jsonstr(list(row.service_ports or [])),
        "mounts": list(row.mounts or []),
        "occupied_slots": jsonstr(cluster.total_slots(row.resources, row.cluster_size, row.status_data)
                                  if row.status == "RUNNING" else {}),
        "occupying_slots": jsonstr(cluster.total_slots(row.resources, row.cluster_size, row.status_data)),
        "num_queries": row.num_queries,
        "idle_checks": jsonstr(usage.idle_checks(row) if usage is not None else {}), "abusing_reports": jsonstr([]),
        "containers": session_kernels(row, usage),
        "dependencies": dependencies,
    }


def _preopen(row: Any) -> list[int]:
    return list((row.status_data or {}).get("preopen_ports") or [])


def _stat(value: Any) -> str | None:
    return None if value is None else json.dumps(value)
