"""Slow-changing Slurm reads (partitions, node sizes) reused for a while, and served from the last good
answer (kept in the database) while Slurm cannot answer."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Generic, TypeVar

from bridge.adapters.db.engine import Database
from bridge.errors import BridgeError
from bridge.services import settings_store

logger = logging.getLogger(__name__)
T = TypeVar("T")


class SlurmFacts(Generic[T]):
    """A slow-changing Slurm read (partitions, node sizes) reused for `ttl_s` seconds. When Slurm cannot
    answer (slurmdbd down: Slurm 24.11's partition read needs it), the last good answer serves on, from
    memory or, after a restart, from the database where each good answer is kept; only with neither does
    the error reach the caller. An empty answer is asked again at once."""

    def __init__(self, name: str, fetch: Callable[[], Awaitable[list[T]]], kind: type[T], db: Database | None,
                 ttl_s: float = 30) -> None:
        self.name, self.fetch, self.kind, self.db, self.ttl_s = name, fetch, kind, db, ttl_s
        self._at, self._value = 0.0, list[T]()
        self.stale_since: float | None = None   # when the last refresh failed (monotonic); None: fresh
        self._refresh: asyncio.Task[list[T]] | None = None

    def stale(self) -> None:
        """Slurm changed it (a node drained): the next look asks again."""
        self._at = 0.0

    async def get(self) -> list[T]:
        if self._value and time.monotonic() - self._at <= self.ttl_s:
            return self._value
        if self._value:   # known: answer now, refresh behind (a Slurm that does not answer takes seconds)
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._fetch(), name=f"refresh-slurm-{self.name}")
            return self._value
        return await self._fetch()

    async def _fetch(self) -> list[T]:
        try:
            value = await self.fetch()
        except BridgeError:
            if not self._value:
                self._value = await self._load()
                if not self._value:
                    raise
            self.stale_since = self.stale_since or time.monotonic()
            self._at = time.monotonic() - self.ttl_s + 5   # ask Slurm again in 5 s, not on every request
            return self._value
        self._value, self._at, self.stale_since = value, time.monotonic(), None
        await self._keep(value)
        return value

    async def _keep(self, value: list[T]) -> None:
        if self.db is None or not value:
            return
        try:
            async with self.db.unit_of_work() as s:
                await settings_store.put(s, f"slurm:{self.name}", {
                    "at": datetime.now(UTC).isoformat(), "items": [dataclasses.asdict(v) for v in value]})  # type: ignore[call-overload]
        except Exception as e:  # noqa: BLE001 - a copy for later: never a reason to fail now
            logger.warning("could not keep the %s read: %s", self.name, e)

    async def _load(self) -> list[T]:
        if self.db is None:
            return []
        async with self.db.unit_of_work() as s:
            kept = await settings_store.get(s, f"slurm:{self.name}", {})
        items = []
        for item in kept.get("items") or []:
            items.append(self.kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in item.items()}))
        if items:
            logger.warning("Slurm cannot answer: using the %s read of %s", self.name, kept.get("at"))
        return items

