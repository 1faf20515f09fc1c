"""The in-process event bus: session lifecycle events for SSE streams, waiting requests and callbacks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from bridge.domain.transitions import WITH_EXIT_CODE

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SessionEvent:
    name: str                 # an EventName (domain.transitions): session_started, session_terminated, ...
    session_id: str
    session_name: str
    access_key: str
    group_id: str
    domain_name: str
    status: str
    reason: str | None = None
    result: str | None = None
    exit_code: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON the Backend.AI clients read (`sessionName`, `ownerAccessKey`, `sessionId`, ...)."""
        data: dict[str, Any] = {
            "sessionName": self.session_name, "ownerAccessKey": self.access_key, "sessionId": self.session_id,
            "reason": self.reason or "", "status": self.status,
        }
        if self.result is not None:
            data["result"] = self.result
        if self.exit_code is not None or self.name in WITH_EXIT_CODE:
            data["exitCode"] = self.exit_code
        data.update(self.extra)
        return data


class EventBus:
    """Fan-out to subscribers; a slow subscriber loses its oldest events rather than blocking others."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[SessionEvent]] = set()
        self.queue_size = queue_size

    def publish(self, event: SessionEvent) -> None:
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[SessionEvent]]:
        q: asyncio.Queue[SessionEvent] = asyncio.Queue(self.queue_size)
        self._subscribers.add(q)
        try:
            yield q
        finally:
            self._subscribers.discard(q)
