"""Signed requests are used once: a signature seen again while its Date is still acceptable is a replay.

Backend.AI's signature covers the method, path, query, Date, host, content type and API version, but no
nonce, so anyone who captured a request could resend it for as long as its Date passes the clock-skew
check (15 minutes by default). The official clients date every request to the microsecond, so no honest
client repeats a signature. In-process only: every gateway instance remembers its own.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class ReplayGuard:
    """Remembers signatures for `ttl_s` (at least the allowed clock skew on either side of now)."""

    def __init__(self, ttl_s: float, max_entries: int = 200_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()

    def first_use(self, access_key: str, signature: str) -> bool:
        """True the first time; False when this signature was used within the last `ttl_s`."""
        now = self.clock()
        while self._seen and next(iter(self._seen.values())) <= now - self.ttl_s:
            self._seen.popitem(last=False)
        key = (access_key, signature)
        if key in self._seen:
            return False
        self._seen[key] = now
        if len(self._seen) > self.max_entries:   # a flood of distinct valid signatures: forget the oldest
            self._seen.popitem(last=False)
        return True
