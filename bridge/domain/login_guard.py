"""Password logins (`POST /auth/authorize`, unsigned, as the official webserver calls it) must not become a
password oracle. Per account: after `max_failures` failed logins the account waits, twice as long after
each further failure (up to `max_wait_s`); a success clears it. Per address: at most `per_address` attempts
in `window_s`. An account name that does not exist is counted like one that does, so the answers tell
nobody which accounts exist. In-process: each gateway instance counts its own.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Account:
    failures: int = 0
    until: float = 0.0   # no attempt before this moment


@dataclass
class LoginGuard:
    max_failures: int = 5
    first_wait_s: float = 30.0
    max_wait_s: float = 900.0
    per_address: int = 300   # the webserver is one address for all its users: a budget, not a wall
    window_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _accounts: dict[str, _Account] = field(default_factory=dict)
    _addresses: dict[str, deque[float]] = field(default_factory=dict)

    def wait_s(self, account: str, address: str) -> float:
        """Seconds until this attempt may be made (0: now); counts it against the address."""
        now = self.clock()
        recent = self._addresses.setdefault(address, deque())
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if len(recent) >= self.per_address:
            return recent[0] + self.window_s - now
        recent.append(now)
        state = self._accounts.get(account)
        return max(0.0, state.until - now) if state else 0.0

    def failed(self, account: str) -> None:
        now = self.clock()
        state = self._accounts.setdefault(account, _Account())
        state.failures += 1
        if state.failures >= self.max_failures:
            state.until = now + min(self.max_wait_s, self.first_wait_s * 2 ** (state.failures - self.max_failures))
        self._prune(now)

    def succeeded(self, account: str) -> None:
        self._accounts.pop(account, None)

    def _prune(self, now: float) -> None:
        if len(self._accounts) > 100_000:   # a flood of names: forget those not waiting
            for key in [k for k, s in self._accounts.items() if s.until < now][:50_000]:
                del self._accounts[key]
