"""Requests between the gateway and a session's kernel runner are signed with the session's secret, which
never crosses the network: HMAC-SHA256 over the method, the request target (path and sorted query), a
timestamp, a nonce and the body's SHA-256 ('-' for a body streamed or absent). The digest also travels in
the header (`d=`), so that a receiver checks the MAC before it reads a body, and the body against the
digest after. The receiver refuses a
timestamp outside WINDOW_S and a nonce it has seen. Anyone on the compute network sees the traffic but
cannot act as the gateway, or as the runner, with what it saw.

The runner (bridge/kernel/runner.py, stdlib only, copied into each session) carries its own copy of these
functions; tests/unit/api/test_runner_auth.py checks that the two agree.
"""

from __future__ import annotations

import hashlib
import hmac
import re
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
    t, digest = int(now), body_digest(body)
    return f"t={t},n={nonce},d={digest},s={mac(secret, method, target, digest, t, nonce)}"


_FIELDS = re.compile(r"\At=(\d{1,12}),n=([0-9A-Za-z_-]{8,64}),(?:d=([0-9a-f]{64}|-),)?s=([0-9a-f]{64})\Z")


def fields(value: str | None, now: float) -> tuple[int, str, str | None, str] | None:
    """(time, nonce, digest or None, mac) of a well-formed header inside the time window, else None."""
    m = _FIELDS.match(value or "")
    if m is None or abs(now - int(m[1])) > WINDOW_S:
        return None
    return int(m[1]), m[2], m[3], m[4]


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
    parsed = fields(value, now)
    if not secret or parsed is None:
        return False
    t, nonce, claimed, given = parsed
    if claimed is not None and claimed != digest:
        return False
    if not hmac.compare_digest(given, mac(secret, method, target, digest, t, nonce)):
        return False
    return nonces.first_use(nonce, now)
