"""The gateway's metrics and their Prometheus text form (exposition format 0.0.4), with no I/O and no library:
counters, histograms and gauges read when scraped. One `GatewayMetrics` is made by the composition root and
handed to what records into it (the Slurm client's observer, the watcher, the session service, the API).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

Labels = tuple[str, ...]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
START_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Labels, values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class Counter:
    def __init__(self, name: str, help_: str, labels: Labels = ()) -> None:
        self.name, self.help, self.label_names = name, help_, labels
        self.values: dict[Labels, float] = {}

    def inc(self, *labels: str, by: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + by

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, v in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(v)}"


class Histogram:
    def __init__(self, name: str, help_: str, labels: Labels = (), buckets: tuple[float, ...] = LATENCY_BUCKETS
                 ) -> None:
        self.name, self.help, self.label_names, self.buckets = name, help_, labels, tuple(sorted(buckets))
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}   # labels -> (bucket counts, [sum])

    def observe(self, value: float, *labels: str) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                le = 'le="' + _number(bound) + '"'
                yield f"{self.name}_bucket{_labels(self.label_names, labels, le)} {running}"
            yield f"{self.name}_sum{_labels(self.label_names, labels)} {_number(total[0])}"
            yield f"{self.name}_count{_labels(self.label_names, labels)} {running}"


class Gauge:
    """A value read when scraped: `read` returns {label values: value}."""

    def __init__(self, name: str, help_: str, labels: Labels, read: Callable[[], dict[Labels, float]]) -> None:
        self.name, self.help, self.label_names, self.read = name, help_, labels, read

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, v in sorted(self.read().items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {_number(v)}"


class GatewayMetrics:
    """Every metric the gateway keeps. Gauges whose values live elsewhere (sessions by status, open tunnels)
    are added by the composition root with `gauge`."""

    def __init__(self) -> None:
        self.slurm_calls = Counter("bridge_slurm_calls_total", "Slurm calls by operation and outcome (ok, error).",
                                   ("call", "outcome"))
        self.slurm_seconds = Histogram("bridge_slurm_call_seconds", "Duration of Slurm calls.", ("call",))
        self.watcher_tick = Histogram("bridge_watcher_tick_seconds", "Duration of one look of the shared watcher.")
        self.create_to_running = Histogram("bridge_session_create_to_running_seconds",
                                           "From a session's creation until the gateway saw it RUNNING.",
                                           buckets=START_BUCKETS)
        self.requests = Histogram("bridge_http_request_seconds", "API requests by method, route and status.",
                                  ("method", "route", "status"))
        self.errors = Counter("bridge_errors_total", "Problem answers by Backend.AI problem type.", ("type",))
        self.gauges: list[Gauge] = []

    def gauge(self, name: str, help_: str, labels: Labels, read: Callable[[], dict[Labels, float]]) -> None:
        self.gauges.append(Gauge(name, help_, labels, read))

    def render(self, extra: Iterable[Gauge] = ()) -> str:
        """The Prometheus text form; `extra` gauges were read by the caller (a database count, for one)."""
        lines: list[str] = []
        metrics: list[Counter | Histogram | Gauge] = [self.slurm_calls, self.slurm_seconds, self.watcher_tick,
                                                      self.create_to_running, self.requests, self.errors,
                                                      *self.gauges, *extra]
        for metric in metrics:
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
