"""Backoff for a peer that stopped answering (a login node, slurmrestd): after a failed connection, no new
attempt for 1 s, then 2 s, 4 s ... up to a ceiling; calls meanwhile fail at once instead of each waiting
for its own connect timeout. The first success resets it."""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    def __init__(self, ceiling_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling_s, self.clock = ceiling_s, clock
        self._delay = 0.0
        self._retry_at = 0.0

    def wait_s(self) -> float:
        """How long until the next attempt is allowed (0: now)."""
        return max(0.0, self._retry_at - self.clock())

    def failed(self) -> None:
        self._delay = min(max(self._delay * 2, 1.0), self.ceiling_s)
        self._retry_at = self.clock() + self._delay

    def succeeded(self) -> None:
        self._delay = self._retry_at = 0.0
