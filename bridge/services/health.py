"""What the gateway depends on, and how each answered last: the database, slurmctld, slurmdbd, slurmrestd and
the login node. `ObservedSlurm` records every Slurm call; `/manager/status` reports it and never fails
because one part is down. An outage is logged once when it starts and once when it ends, not per call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from bridge.adapters.slurm.base import JobInfo, JobSpec, NodeInfo, PartitionInfo, SlurmClient
from bridge.domain.metrics import GatewayMetrics
from bridge.errors import CommandFailed, SchedulerUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _State:
    last_ok: float | None = None        # wall-clock seconds
    last_error: str | None = None
    down_since: float | None = None


class Health:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._states: dict[str, _State] = {}

    def ok(self, name: str) -> None:
        state = self._states.setdefault(name, _State())
        if state.down_since is not None:
            logger.warning("%s answers again after %.0f s", name, self.clock() - state.down_since)
        state.last_ok, state.down_since = self.clock(), None

    def failed(self, name: str, error: str) -> None:
        state = self._states.setdefault(name, _State())
        state.last_error = error[:300]
        if state.down_since is None:
            state.down_since = self.clock()
            logger.warning("%s is unreachable: %s", name, error[:300])

    def is_down(self, name: str) -> bool:
        state = self._states.get(name)
        return state is not None and state.down_since is not None

    def report(self) -> dict[str, dict[str, Any]]:
        def when(t: float | None) -> str | None:
            return datetime.fromtimestamp(t, UTC).isoformat() if t is not None else None

        return {name: {"state": "down" if s.down_since is not None else "up" if s.last_ok else "unknown",
                       "last_ok": when(s.last_ok), "down_since": when(s.down_since),
                       "last_error": s.last_error if s.down_since is not None else None}
                for name, s in sorted(self._states.items())}


class ObservedSlurm:
    """A SlurmClient that tells `health` how each call went: a daemon that did not answer is down until a
    call it serves succeeds. `via` names the transport (login: the SSH login node; slurmrestd)."""

    def __init__(self, inner: SlurmClient, health: Health, via: str | None = None,
                 metrics: GatewayMetrics | None = None) -> None:
        self.inner, self.health, self.via = inner, health, via
        self.metrics = metrics or GatewayMetrics()

    def __getattr__(self, name: str) -> Any:   # the adapter's own extras (calls counter, ...)
        return getattr(self.inner, name)

    async def _observe(self, daemons: tuple[str, ...], call: Awaitable[T]) -> T:
        name = call.__qualname__.rsplit(".", 1)[-1] if hasattr(call, "__qualname__") else "call"
        t0 = time.perf_counter()
        outcome = "error"
        try:
            result = await call
            outcome = "ok"
        except SchedulerUnavailable as e:
            self.health.failed(e.daemon, e.msg)
            raise
        except CommandFailed as e:   # the transport itself: the login node, slurmrestd
            self.health.failed(self.via or "slurm commands", e.msg)
            raise
        finally:
            self.metrics.slurm_calls.inc(name, outcome)
            self.metrics.slurm_seconds.observe(time.perf_counter() - t0, name)
        for daemon in (*daemons, *((self.via,) if self.via else ())):
            self.health.ok(daemon)
        return result

    async def submit(self, spec: JobSpec | Sequence[JobSpec], *, user: str) -> str:
        return await self._observe(("slurmctld",), self.inner.submit(spec, user=user))

    async def cancel(self, job_ids: Sequence[str], *, user: str | None = None, signal: str | None = None) -> None:
        await self._observe(("slurmctld",), self.inner.cancel(job_ids, user=user, signal=signal))

    async def jobs(self, job_ids: Sequence[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        return await self._observe(("slurmctld",), self.inner.jobs(job_ids, user=user))

    async def job_states(self, job_ids: Sequence[str]) -> list[JobInfo]:
        return await self._observe(("slurmctld",), self.inner.job_states(job_ids))

    async def history(self, job_ids: Sequence[str], *, user: str | None = None) -> list[JobInfo]:
        return await self._observe(("slurmdbd",), self.inner.history(job_ids, user=user))

    async def partitions(self) -> list[PartitionInfo]:
        return await self._observe(("slurmctld", "slurmdbd"), self.inner.partitions())

    async def nodes(self) -> list[NodeInfo]:
        return await self._observe(("slurmctld",), self.inner.nodes())

    async def set_nodes_schedulable(self, nodes: Sequence[str], schedulable: bool, *, reason: str = "") -> None:
        await self._observe(("slurmctld",), self.inner.set_nodes_schedulable(nodes, schedulable, reason=reason))

    async def aclose(self) -> None:
        await self.inner.aclose()
