"""Rolling-window request counter per access key (Backend.AI: the last N seconds at any moment)."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable


class RateLimiter:
    """Counts requests per key in one-second buckets over a rolling window; in-process only."""

    def __init__(self, window_s: int = 900, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self._buckets: dict[str, deque[list[int]]] = defaultdict(deque)  # key -> [[second, count], ...]
        self._totals: dict[str, int] = defaultdict(int)

    def hit(self, key: str, limit: int) -> tuple[bool, int]:
        """Count one request; (allowed, remaining). Refused requests count too, as in Backend.AI."""
        now = int(self.clock())
        buckets = self._buckets[key]
        while buckets and buckets[0][0] <= now - self.window_s:
            self._totals[key] -= buckets.popleft()[1]
        if buckets and buckets[-1][0] == now:
            buckets[-1][1] += 1
        else:
            buckets.append([now, 1])
        self._totals[key] += 1
        used = self._totals[key]
        return used <= limit, max(0, limit - used)
