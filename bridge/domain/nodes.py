"""Slurm's partitions and nodes as the gateway's rules see them: plain values that the Slurm adapters
(bridge/adapters/slurm) build from sinfo/scontrol or slurmrestd, and the gres counting they need."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    name: str
    state: str
    nodes: tuple[str, ...]
    total_cpus: int
    total_nodes: int
    max_time_min: int | None
    tres: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as sinfo/scontrol (or slurmrestd) report it; gres strings in Slurm's form (gpu:2,shard:8)."""

    name: str
    state: tuple[str, ...]
    cpus: int
    cpus_allocated: int
    memory_mb: int
    memory_allocated_mb: int
    gres: str
    gres_used: str
    partitions: tuple[str, ...]
    address: str | None = None
    cpu_load: float | None = None         # the load average Slurm last read (CPULoad), None when unknown
    free_memory_mb: int | None = None     # free memory Slurm last read (FreeMem)


def gres_count(gres: str, name: str) -> int:
    """How many of gres `name` a Slurm gres string holds: "gpu:2,shard:8" -> 2 for gpu, "gpu:a100:1(S:0)" -> 1."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == name and parts[-1].isdigit():
            total += int(parts[-1])
    return total
