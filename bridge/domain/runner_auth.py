"""Requests between the gateway and a session's kernel runner are signed with the session's secret, which
never crosses the network: HMAC-SHA256 over the method, the request target (path and sorted query), a
timestamp, a nonce and the body's SHA-256 ('-' for a body streamed or absent). The receiver refuses a
timestamp outside WINDOW_S and a nonce it has seen. Anyone on the compute network sees the traffic but
cannot act as the gateway, or as the runner, with what it saw.

The runner (bridge/kernel/runner.py, stdlib only, copied into each session) carries its own copy of these
functions; tests/unit/api/test_runner_auth.py checks that the two agree.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qsl, urlencode, urlsplit

HEADER = "X-Bridge-Auth"
SCHEME = "hmac-v1"
WINDOW_S = 300


def canonical_target(target: str) -> str:
    parts = urlsplit(target)
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return parts.path + ("?" + query if query else "")


def new_nonce() -> str:
    return secrets.token_hex(16)


def body_digest(body: bytes | None) -> str:
    return hashlib.sha256(body).hexdigest() if body is not None else "-"


def mac(secret: str, method: str, target: str, digest: str, t: int, nonce: str) -> str:
    text = "\n".join((method.upper(), canonical_target(target), str(t), nonce, digest))
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def header(secret: str, method: str, target: str, body: bytes | None, now: float, nonce: str) -> str:
    t = int(now)
    return f"t={t},n={nonce},s={mac(secret, method, target, body_digest(body), t, nonce)}"


class Nonces:
    """Nonces seen within the window (bounded: the oldest go first)."""

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._seen: dict[str, float] = {}

    def first_use(self, nonce: str, now: float) -> bool:
        if len(self._seen) > self.limit:
            for old in [n for n, t in self._seen.items() if t < now - WINDOW_S] or list(self._seen)[: self.limit // 2]:
                del self._seen[old]
        if nonce in self._seen:
            return False
        self._seen[nonce] = now
        return True


def verify(secret: str, value: str | None, method: str, target: str, digest: str, now: float,
           nonces: Nonces) -> bool:
    if not secret or not value:
        return False
    try:
        fields = dict(item.split("=", 1) for item in value.split(","))
        t, nonce, given = int(fields["t"]), fields["n"], fields["s"]
    except (ValueError, KeyError):
        return False
    if abs(now - t) > WINDOW_S or not 8 <= len(nonce) <= 64:
        return False
    if not hmac.compare_digest(given, mac(secret, method, target, digest, t, nonce)):
        return False
    return nonces.first_use(nonce, now)
