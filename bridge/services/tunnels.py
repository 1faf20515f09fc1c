"""Every open circuit to a session's services (tcpproxy, httpproxy, the browser proxy, the terminal), with
its bytes and last activity per session, for the idle checker and for `GET /session/{ref}/tunnels`.
Circuits of a session are closed when it ends (`watch` follows the event bus)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.domain.transitions import ENDED, EventName
from bridge.services.events import EventBus

logger = logging.getLogger(__name__)


@dataclass
class Circuit:
    id: int
    session_id: str
    app: str
    kind: str                  # tcpproxy | httpproxy | http | pty
    user: str
    opened_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)
    bytes_up: int = 0          # client -> service
    bytes_down: int = 0        # service -> client
    closer: Callable[[], Any] | None = None

    def up(self, n: int) -> None:
        self.bytes_up += n
        self.last_activity = time.time()

    def down(self, n: int) -> None:
        self.bytes_down += n
        self.last_activity = time.time()


@dataclass
class SessionTraffic:
    last_activity: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    circuits_total: int = 0


class TunnelRegistry:
    def __init__(self, on_session_end: list[Callable[[str], Any]] | None = None) -> None:
        self.on_session_end = list(on_session_end or [])   # e.g. closing the session's SSH forwards
        self.open_circuits: dict[int, Circuit] = {}
        self.traffic: dict[str, SessionTraffic] = {}
        self._ids = itertools.count(1)
        self.closed_bytes = {"up": 0, "down": 0}   # of every circuit closed since start (for /metrics)

    def open(self, session_id: str, app: str, kind: str, user: str,
             closer: Callable[[], Any] | None = None) -> Circuit:
        c = Circuit(next(self._ids), session_id, app, kind, user, closer=closer)
        self.open_circuits[c.id] = c
        self.traffic.setdefault(session_id, SessionTraffic()).circuits_total += 1
        return c

    def close(self, c: Circuit) -> None:
        if self.open_circuits.pop(c.id, None) is None:
            return
        self.closed_bytes["up"] += c.bytes_up
        self.closed_bytes["down"] += c.bytes_down
        t = self.traffic.setdefault(c.session_id, SessionTraffic())
        t.bytes_up += c.bytes_up
        t.bytes_down += c.bytes_down
        t.last_activity = max(t.last_activity, c.last_activity)

    def bytes_total(self) -> dict[str, int]:
        """Bytes carried since start, each way, by closed and open circuits."""
        live = list(self.open_circuits.values())
        return {"up": self.closed_bytes["up"] + sum(c.bytes_up for c in live),
                "down": self.closed_bytes["down"] + sum(c.bytes_down for c in live)}

    def open_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.open_circuits.values():
            out[c.kind] = out.get(c.kind, 0) + 1
        return out

    def touch(self, session_id: str) -> None:
        """Activity that is no circuit (a code execution): it counts for the idle checks too."""
        self.traffic.setdefault(session_id, SessionTraffic()).last_activity = time.time()

    @contextlib.contextmanager
    def circuit(self, session_id: str, app: str, kind: str, user: str,
                closer: Callable[[], Any] | None = None) -> Any:
        c = self.open(session_id, app, kind, user, closer)
        try:
            yield c
        finally:
            self.close(c)

    def summary(self, session_id: str) -> dict[str, Any]:
        t = self.traffic.get(session_id, SessionTraffic())
        live = [c for c in self.open_circuits.values() if c.session_id == session_id]
        last = max([t.last_activity, *(c.last_activity for c in live)])
        return {
            "last_activity": datetime.fromtimestamp(last, UTC).isoformat() if last else None,
            "bytes_up": t.bytes_up + sum(c.bytes_up for c in live),
            "bytes_down": t.bytes_down + sum(c.bytes_down for c in live),
            "circuits_total": t.circuits_total,
            "open": [{"id": c.id, "app": c.app, "kind": c.kind, "user": c.user,
                      "opened_at": datetime.fromtimestamp(c.opened_at, UTC).isoformat(),
                      "last_activity": datetime.fromtimestamp(c.last_activity, UTC).isoformat(),
                      "bytes_up": c.bytes_up, "bytes_down": c.bytes_down} for c in live],
        }

    def close_session(self, session_id: str) -> int:
        """Cut every open circuit of a session (it ended): returns how many."""
        cut = [c for c in self.open_circuits.values() if c.session_id == session_id]
        for c in cut:
            if c.closer is not None:
                try:
                    c.closer()
                except Exception:  # noqa: BLE001 - a circuit that is already gone
                    logger.debug("closing circuit %s", c.id, exc_info=True)
        return len(cut)

    async def watch(self, events: EventBus) -> None:
        async with events.subscribe() as q:
            while True:
                event = await q.get()
                if event.name in ENDED:
                    n = self.close_session(event.session_id)
                    if n:
                        logger.info("session %s ended: closed %d circuit(s)", event.session_id, n)
                    if event.name != EventName.SESSION_TERMINATING:
                        for hook in self.on_session_end:
                            try:
                                await asyncio.to_thread(hook, event.session_id)
                            except Exception:  # noqa: BLE001 - one failing hook must not stop the watch
                                logger.exception("session-end hook for %s", event.session_id)
