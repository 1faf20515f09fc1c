"""Utilization and idle rules, pure: what Slurm measured of a job becomes Backend.AI's `live_stat` /
`last_stat` (a JSON object of metrics, each `{current, capacity, pct, unit_hint, stats.*}` with decimal
strings), and the three idle checks (network timeout, session lifetime, utilization) become `idle_checks`
(`{name: {remaining, remaining_time_type, extra}}`) and, when one expires, a termination reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

# the reasons Backend.AI gives a session its idle checker ended (status_info)
IDLE_TIMEOUT = "idle-timeout"
IDLE_SESSION_LIFETIME = "idle-session-lifetime"
IDLE_UTILIZATION = "idle-utilization"
EXPIRED = -1.0   # `remaining` of an expired check


@dataclass(frozen=True, slots=True)
class Usage:
    """One look at a job: totals over all its steps and tasks since it started (None: not measured)."""

    cpu_s: float                      # CPU time used
    mem_bytes: int                    # resident memory now
    mem_max_bytes: int                # highest resident memory seen
    io_read_bytes: int
    io_write_bytes: int
    gpu_util_pct: float | None = None   # gres/gpuutil, where the site gathers it
    gpu_mem_bytes: int | None = None    # gres/gpumem
    at: float = 0.0                     # when (epoch seconds)


def _dec(value: float | int, places: str = "0.000") -> str:
    return str(Decimal(repr(float(value)) if isinstance(value, float) else value).quantize(
        Decimal(places), rounding=ROUND_HALF_UP))


def metric(current: float | int, unit: str, capacity: float | int | None = None,
           **stats: float | int) -> dict[str, str | None]:
    cur = Decimal(_dec(current))
    pct = "0.00"
    if capacity:
        pct = _dec(float(cur) / float(capacity) * 100, "0.00")
    out: dict[str, str | None] = {
        "current": str(cur), "capacity": _dec(capacity) if capacity is not None else None,
        "pct": pct, "unit_hint": unit,
    }
    out.update({f"stats.{k}": _dec(v) for k, v in stats.items()})
    return out


def cpu_rate_ms_per_s(now: Usage, before: Usage | None, started_at: float | None) -> float:
    """CPU milliseconds per second (1000 = one busy core): since the previous look, or, at the first look,
    on average since the job started."""
    if before is not None and now.at > before.at and now.cpu_s >= before.cpu_s:
        return (now.cpu_s - before.cpu_s) * 1000 / (now.at - before.at)
    if started_at is not None and now.at > started_at:
        return now.cpu_s * 1000 / (now.at - started_at)
    return 0.0


def live_stat(now: Usage, *, cpu_rate: float, mem_capacity: int | None, share: int = 1,
              gpus: float = 0) -> dict[str, dict[str, str | None]]:
    """The live_stat of a session (share=1) or of one of its `share` kernels (an even part of the job's
    totals: Slurm measures steps, which may span nodes)."""
    n = max(share, 1)
    stat = {
        "cpu_util": metric(cpu_rate / n, "percent", 1000),
        "cpu_used": metric(now.cpu_s * 1000 / n, "msec"),
        "mem": metric(now.mem_bytes // n, "bytes", (mem_capacity // n) if mem_capacity else None,
                      max=now.mem_max_bytes // n),
        "io_read": metric(now.io_read_bytes // n, "bytes"),
        "io_write": metric(now.io_write_bytes // n, "bytes"),
    }
    if gpus and now.gpu_util_pct is not None:
        stat["cuda_util"] = metric(now.gpu_util_pct / n, "percent", 100)
    if gpus and now.gpu_mem_bytes is not None:
        stat["cuda_mem"] = metric(now.gpu_mem_bytes // n, "bytes")
    return stat


def utilization(now: Usage, *, cpu_rate: float, cpus: float, mem_capacity: int | None,
                gpus: float) -> dict[str, float]:
    """Percentages the utilization check compares with its thresholds: cpu_util of the allocated CPUs, mem of
    the allocated memory, cuda_util where GPUs are allocated and measured."""
    out = {"cpu_util": cpu_rate / 10 / max(cpus, 1)}
    if mem_capacity:
        out["mem"] = 100 * now.mem_bytes / mem_capacity
    if gpus and now.gpu_util_pct is not None:
        out["cuda_util"] = now.gpu_util_pct / max(gpus, 1)
    return out


# ---- idle checks --------------------------------------------------------------------------------------


def effective_limit(policy_value: int | float | None, site_default: float,
                    group_value: int | float | None = None) -> float:
    """Backend.AI's rule for a policy's idle_timeout / max_session_lifetime: positive wins, 0 means none,
    negative (or no policy) means the resource group's value (its scheduler_opts), else the site default.
    Returns seconds, 0 for none."""
    if policy_value is None or policy_value < 0:
        if group_value is not None and group_value >= 0:
            return float(group_value)
        return max(site_default, 0.0)
    return float(policy_value)


@dataclass(frozen=True, slots=True)
class UtilizationRule:
    thresholds: Mapping[str, float]
    window_s: float
    grace_s: float
    operator: str = "and"


@dataclass(slots=True)
class UtilizationSeries:
    """The samples of one session within the window: (when, {metric: pct})."""

    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def add(self, at: float, values: Mapping[str, float], window_s: float) -> None:
        self.samples.append((at, dict(values)))
        self.samples = [s for s in self.samples if s[0] >= at - window_s]

    def averages(self) -> dict[str, float]:
        keys = {k for _, v in self.samples for k in v}
        return {k: sum(v[k] for _, v in self.samples if k in v) / sum(1 for _, v in self.samples if k in v)
                for k in keys}


@dataclass(frozen=True, slots=True)
class Check:
    remaining: float | None        # seconds; EXPIRED when it ran out; None: does not apply
    remaining_time_type: str       # expire_after | grace_period
    extra: dict[str, object] | None = None

    @property
    def expired(self) -> bool:
        return self.remaining is not None and self.remaining < 0

    def wire(self) -> dict[str, object]:
        remaining = None if self.remaining is None else (EXPIRED if self.expired else round(self.remaining, 3))
        return {"remaining": remaining, "remaining_time_type": self.remaining_time_type, "extra": self.extra}


def network_check(*, kind: str, timeout_s: float, now: float, running_since: float,
                  last_activity: float | None, open_connections: int) -> Check:
    """An interactive session idles from its last traffic (or its start); an open connection (a terminal, a
    Jupyter tab, an SSH tunnel) keeps it busy however quiet it is. Batch sessions are never network-idle."""
    if kind == "batch" or timeout_s <= 0:
        return Check(None, "expire_after")
    if open_connections > 0:
        return Check(timeout_s, "expire_after")
    baseline = max(running_since, last_activity or 0.0)
    return Check(baseline + timeout_s - now, "expire_after")


def lifetime_check(*, lifetime_s: float, now: float, running_since: float) -> Check:
    if lifetime_s <= 0:
        return Check(None, "expire_after")
    return Check(running_since + lifetime_s - now, "expire_after")


def utilization_check(rule: UtilizationRule | None, series: UtilizationSeries | None, *, now: float,
                      running_since: float, allocated: Sequence[str]) -> Check:
    """Idle when the averages over a full window are below their thresholds (all of them with `and`, any
    with `or`); metrics of resources the session does not have, or that are not measured, do not count."""
    if rule is None or not rule.thresholds:
        return Check(None, "grace_period")
    first_full = running_since + rule.grace_s + rule.window_s
    averages = series.averages() if series else {}
    considered = {k: t for k, t in rule.thresholds.items() if k in allocated and k in averages}
    extra: dict[str, object] = {
        "thresholds_check_operator": rule.operator,
        "resources": {k: [round(averages[k], 2), t] for k, t in considered.items()},
    }
    if now < first_full or not considered:
        return Check(max(first_full - now, 0.0), "grace_period", extra)
    low = [averages[k] < t for k, t in considered.items()]
    idle = all(low) if rule.operator == "and" else any(low)
    return Check(EXPIRED if idle else 0.0, "grace_period", extra)


def first_expired(checks: Mapping[str, Check]) -> str | None:
    """The termination reason of the first expired check, in Backend.AI's order of checkers."""
    reasons = {"network_timeout": IDLE_TIMEOUT, "session_lifetime": IDLE_SESSION_LIFETIME,
               "utilization": IDLE_UTILIZATION}
    for name, reason in reasons.items():
        c = checks.get(name)
        if c is not None and c.expired:
            return reason
    return None
