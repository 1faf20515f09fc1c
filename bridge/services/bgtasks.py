"""Background tasks: long work (a folder clone, an image rescan) that answers at once with a task id and
reports its progress on `GET /events/background-task?task_id=` (Backend.AI's bgtask events).

Each task keeps its last progress and, once ended, its final event for `KEEP_S`, so a listener that
connects after the task has finished still learns how it ended (the clients connect only after the
answer that names the task). Only the access key that started a task, or a superadmin, may listen.
Tasks live in the gateway's memory: after a restart, an unfinished one is gone (its listener gets 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BridgeError

logger = logging.getLogger(__name__)
KEEP_S = 600.0

Report = Callable[[int, int, str], None]
"""report(current, total, message): how far a task has come."""


@dataclass
class Task:
    id: str
    access_key: str
    kind: str
    last: tuple[str, dict[str, Any]] | None = None      # the latest bgtask_updated
    final: tuple[str, dict[str, Any]] | None = None     # bgtask_done / _failed / _cancelled
    ended_at: float | None = None
    listeners: set[asyncio.Queue[tuple[str, dict[str, Any]]]] = field(default_factory=set)

    def emit(self, name: str, **data: Any) -> None:
        event = (name, {"task_id": self.id, **data})
        if name == "bgtask_updated":
            self.last = event
        else:
            self.final, self.ended_at = event, time.monotonic()
        for q in list(self.listeners):
            q.put_nowait(event)


class BackgroundTasks:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._running: set[asyncio.Task[None]] = set()

    def start(self, access_key: str, kind: str, work: Callable[[Report], Awaitable[str]]) -> str:
        """Run `work(report)` in the background; it returns the message of its done event, and a BridgeError
        it raises is the failed event's message. Returns the task id."""
        self._expire()
        task = Task(str(uuid.uuid4()), access_key, kind)
        self.tasks[task.id] = task

        def report(current: int, total: int, message: str) -> None:
            task.emit("bgtask_updated", current_progress=current, total_progress=total, message=message)

        async def run() -> None:
            try:
                message = await work(report)
            except asyncio.CancelledError:
                task.emit("bgtask_cancelled", message="the gateway stopped before the task ended")
                raise
            except BridgeError as e:
                task.emit("bgtask_failed", message=e.msg)
            except Exception as e:  # noqa: BLE001 - reported to the listener, logged with its trace
                logger.exception("background task %s (%s) failed", task.id, kind)
                task.emit("bgtask_failed", message=f"{type(e).__name__}: {e}")
            else:
                task.emit("bgtask_done", message=message)

        running = asyncio.create_task(run(), name=f"bgtask-{kind}-{task.id}")
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        return task.id

    def find(self, task_id: str, access_key: str, *, superadmin: bool) -> Task | None:
        """The task, if this caller may follow it (else None, as if there were none)."""
        self._expire()
        task = self.tasks.get(task_id)
        return task if task is not None and (superadmin or task.access_key == access_key) else None

    @contextlib.asynccontextmanager
    async def follow(self, task: Task) -> AsyncIterator[AsyncIterator[tuple[str, dict[str, Any]]]]:
        """The task's events from now: its latest progress first, then each new one, until its final one."""
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        task.listeners.add(queue)

        async def events() -> AsyncIterator[tuple[str, dict[str, Any]]]:
            if task.final is not None:
                yield task.final
                return
            if task.last is not None:
                yield task.last
            while True:
                event = await queue.get()
                yield event
                if event[0] != "bgtask_updated":
                    return
        try:
            yield events()
        finally:
            task.listeners.discard(queue)

    async def aclose(self) -> None:
        for running in list(self._running):
            running.cancel()
        for running in list(self._running):
            with contextlib.suppress(asyncio.CancelledError):
                await running

    def _expire(self) -> None:
        now = time.monotonic()
        for tid in [t.id for t in self.tasks.values() if t.ended_at is not None and now - t.ended_at > KEEP_S]:
            del self.tasks[tid]
