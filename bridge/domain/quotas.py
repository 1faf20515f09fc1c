"""Quotas as Slurm association limits: what the gateway's policies say each association should hold.

- a project's `total_resource_slots` is its account's GrpTRES;
- a member's keypair resource policy is their association in that account: `total_resource_slots` as
  GrpTRES, `max_concurrent_sessions` as MaxJobs, `max_session_lifetime` as MaxWall (whole minutes, up).
  A user with several active keypairs gets the most generous of their policies: Slurm must never refuse
  what the gateway lets through; the gateway's own up-front check is the tight one.

A limit of -1 is none (sacctmgr clears a limit with -1). Folder counts and sizes, idle timeouts and
containers per session have no association limit and stay the gateway's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.domain.resources import quota_tres

NONE = -1


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """The parts of a keypair resource policy that Slurm can hold."""

    total_resource_slots: Mapping[str, Any] = field(default_factory=dict)
    max_concurrent_sessions: int = 0
    max_session_lifetime: int = 0


@dataclass(frozen=True, slots=True)
class AssocLimits:
    """One association's limits; TRES names as Slurm writes them (cpu, mem in MiB, gres/gpu)."""

    grp_tres: Mapping[str, int] = field(default_factory=dict)
    max_jobs: int = NONE
    max_wall_min: int = NONE

    def normal(self) -> AssocLimits:
        """The same limits with every "none" left out, so that two readings compare equal."""
        return AssocLimits({k: v for k, v in sorted(self.grp_tres.items()) if v >= 0},
                           max(self.max_jobs, NONE), max(self.max_wall_min, NONE))

    def differences(self, actual: AssocLimits) -> list[tuple[str, str, str]]:
        """(limit, wanted, found) for each limit where `actual` differs from these."""
        want, have = self.normal(), actual.normal()
        out = []
        if dict(want.grp_tres) != dict(have.grp_tres):
            out.append(("GrpTRES", tres_text(want.grp_tres), tres_text(have.grp_tres)))
        if want.max_jobs != have.max_jobs:
            out.append(("MaxJobs", _text(want.max_jobs), _text(have.max_jobs)))
        if want.max_wall_min != have.max_wall_min:
            out.append(("MaxWall", _text(want.max_wall_min, " min"), _text(have.max_wall_min, " min")))
        return out

    def sacctmgr_sets(self, known_tres: Iterable[str] = ("cpu", "mem", "gres/gpu")) -> list[str]:
        """`set` arguments stating every limit, clearing (-1) the TRES these leave out."""
        tres = {k: NONE for k in known_tres} | {k: v for k, v in self.grp_tres.items()}
        return ["GrpTRES=" + ",".join(f"{k}={v}" for k, v in sorted(tres.items())),
                f"MaxJobs={self.max_jobs}", f"MaxWall={self.max_wall_min}"]


def project_limits(total_resource_slots: Mapping[str, Any] | None, *, shards_per_gpu: int = 0) -> AssocLimits:
    return AssocLimits(grp_tres=quota_tres(dict(total_resource_slots or {}), shards_per_gpu=shards_per_gpu))


def member_limits(policies: Iterable[PolicyLimits], *, shards_per_gpu: int = 0) -> AssocLimits:
    """The association limits for a user holding these policies (the most generous of each limit); no policy
    at all is no limit."""
    policies = list(policies)
    if not policies:
        return AssocLimits()
    tres_each = [quota_tres(dict(p.total_resource_slots or {}), shards_per_gpu=shards_per_gpu) for p in policies]
    grp = {k: NONE if any(t.get(k, NONE) == NONE for t in tres_each) else max(t[k] for t in tres_each)
           for k in tres_each[0]}
    jobs = [p.max_concurrent_sessions for p in policies]
    walls = [p.max_session_lifetime for p in policies]
    return AssocLimits(grp_tres=grp,
                       max_jobs=NONE if any(j <= 0 for j in jobs) else max(jobs),
                       max_wall_min=NONE if any(w <= 0 for w in walls) else -(-max(walls) // 60))


def tres_text(tres: Mapping[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tres.items()) if v >= 0) or "none"


def _text(value: int, unit: str = "") -> str:
    return "none" if value < 0 else f"{value}{unit}"
