"""live_stat's shape and the idle rules (network timeout, session lifetime, utilization)."""

from __future__ import annotations

import json

from bridge.domain import utilization as u
from bridge.domain.utilization import Usage, UtilizationRule, UtilizationSeries


def sample(cpu_s: float = 10, mem: int = 512, at: float = 100.0, gpu: float | None = None) -> Usage:
    return Usage(cpu_s=cpu_s, mem_bytes=mem, mem_max_bytes=mem * 2, io_read_bytes=7, io_write_bytes=9,
                 gpu_util_pct=gpu, at=at)


def test_live_stat_has_backend_ai_metrics_as_decimal_strings():
    rate = u.cpu_rate_ms_per_s(sample(cpu_s=15, at=110), sample(cpu_s=10, at=100), started_at=0)
    assert rate == 500   # half a core
    stat = u.live_stat(sample(cpu_s=15, at=110), cpu_rate=rate, mem_capacity=1024)
    json.dumps(stat)
    assert stat["cpu_util"]["current"] == "500.000" and stat["cpu_util"]["pct"] == "50.00"
    assert stat["cpu_util"]["unit_hint"] == "percent" and stat["cpu_used"]["current"] == "15000.000"
    assert stat["mem"] == {"current": "512.000", "capacity": "1024.000", "pct": "50.00", "unit_hint": "bytes",
                           "stats.max": "1024.000"}
    assert stat["io_read"]["current"] == "7.000" and stat["io_write"]["capacity"] is None
    assert "cuda_util" not in stat   # no GPU allocated
    half = u.live_stat(sample(), cpu_rate=rate, mem_capacity=1024, share=2, gpus=2)
    assert half["mem"]["current"] == "256.000" and "cuda_util" not in half   # GPU not measured


def test_first_look_averages_since_start():
    assert u.cpu_rate_ms_per_s(sample(cpu_s=20, at=120), None, started_at=100) == 1000


def test_policy_limits_follow_backend_ai():
    assert u.effective_limit(30, 600) == 30     # the policy's own value
    assert u.effective_limit(0, 600) == 0       # 0: none
    assert u.effective_limit(-1, 600) == 600    # undefined: the site default
    assert u.effective_limit(None, 0) == 0      # no policy, no default
    assert u.effective_limit(-1, 600, 120) == 120   # the resource group's, between the policy and the site
    assert u.effective_limit(None, 600, 0) == 0     # a group may turn it off
    assert u.effective_limit(30, 600, 120) == 30    # the policy's own still wins


def test_network_idle_counts_from_the_last_traffic_and_never_with_an_open_connection():
    check = u.network_check(kind="interactive", timeout_s=60, now=1100, running_since=1000, last_activity=1070,
                            open_connections=0)
    assert check.remaining == 30 and not check.expired
    idle = u.network_check(kind="interactive", timeout_s=60, now=1100, running_since=1000, last_activity=None,
                           open_connections=0)
    assert idle.expired and idle.wire() == {"remaining": -1.0, "remaining_time_type": "expire_after",
                                            "extra": None}
    busy = u.network_check(kind="interactive", timeout_s=60, now=9999, running_since=1000, last_activity=1000,
                           open_connections=1)
    assert not busy.expired and busy.remaining == 60
    batch = u.network_check(kind="batch", timeout_s=60, now=9999, running_since=0, last_activity=None,
                            open_connections=0)
    assert batch.remaining is None and not batch.expired
    off = u.network_check(kind="interactive", timeout_s=0, now=9999, running_since=0, last_activity=None,
                          open_connections=0)
    assert off.remaining is None


def test_lifetime():
    assert u.lifetime_check(lifetime_s=100, now=150, running_since=100).remaining == 50
    assert u.lifetime_check(lifetime_s=100, now=201, running_since=100).expired
    assert u.lifetime_check(lifetime_s=0, now=10**9, running_since=0).remaining is None


def test_utilization_waits_for_grace_and_a_full_window_then_applies_the_operator():
    rule = UtilizationRule({"cpu_util": 10, "mem": 50}, window_s=60, grace_s=30)
    series = UtilizationSeries()
    for t in range(0, 200, 10):
        series.add(t, {"cpu_util": 2.0, "mem": 80.0}, rule.window_s)
    assert len(series.samples) == 7   # only the window is kept
    early = u.utilization_check(rule, series, now=50, running_since=0, allocated=["cpu_util", "mem"])
    assert early.remaining == 40 and early.remaining_time_type == "grace_period" and not early.expired
    # and: idle only when every metric is low; mem is high
    kept = u.utilization_check(rule, series, now=190, running_since=0, allocated=["cpu_util", "mem"])
    assert not kept.expired and kept.extra == {"thresholds_check_operator": "and",
                                               "resources": {"cpu_util": [2.0, 10], "mem": [80.0, 50]}}
    either = UtilizationRule(rule.thresholds, 60, 30, "or")
    assert u.utilization_check(either, series, now=190, running_since=0, allocated=["cpu_util", "mem"]).expired
    # a resource the session does not have is not counted
    assert u.utilization_check(rule, series, now=190, running_since=0, allocated=["cpu_util"]).expired
    assert u.utilization_check(None, series, now=190, running_since=0, allocated=[]).remaining is None


def test_first_expired_gives_backend_ai_reasons():
    exp, ok = u.Check(-1, "expire_after"), u.Check(5, "expire_after")
    assert u.first_expired({"network_timeout": ok, "session_lifetime": exp}) == "idle-session-lifetime"
    assert u.first_expired({"network_timeout": exp, "session_lifetime": exp}) == "idle-timeout"
    assert u.first_expired({"utilization": u.Check(-1, "grace_period")}) == "idle-utilization"
    assert u.first_expired({"network_timeout": ok}) is None
