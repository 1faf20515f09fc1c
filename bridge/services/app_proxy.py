"""The browser's way into a session's web services: per-session app tokens, the owner cache and the pool of
service streams (the HTTP over a stream is bridge.adapters.http_proxy).

`POST /session/{ref}/start-service` hands its caller a short-lived token for one (session, app). The first
request to `/proxy/{session}/{app}/?token=...` trades it for an HttpOnly cookie scoped to that app's path;
every later request is checked again against the session's current owner (a token outlives nothing: a
session that ends or changes hands refuses it). Tokens are HMAC-signed with the server secret, so any
gateway of the deployment accepts them and none are stored.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from bridge.adapters.http_proxy import HOP_BY_HOP, ProxyExchange
from bridge.errors import AuthorizationFailed

COOKIE = "bridge-app-token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue(secret: str, session_id: str, app: str, access_key: str, ttl_s: int) -> str:
    payload = _b64(json.dumps({"s": session_id, "a": app, "k": access_key, "e": int(time.time()) + ttl_s},
                              separators=(",", ":")).encode())
    mac = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{mac}"


def verify(secret: str, token: str, session_id: str, app: str) -> str:
    """The access key a token was issued to, if it is genuine, unexpired and for this session and app."""
    payload, _, mac = token.partition(".")
    good = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    if not mac or not hmac.compare_digest(mac, good):
        raise AuthorizationFailed("invalid app token")
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        raise AuthorizationFailed("invalid app token") from None
    if claims.get("s") != session_id or claims.get("a") != app:
        raise AuthorizationFailed("the app token is for another session or app")
    if int(claims.get("e", 0)) < time.time():
        raise AuthorizationFailed("the app token has expired; ask start-service for a new one")
    return str(claims["k"])


def upstream_headers(headers: list[tuple[str, str]], client: str | None, scheme: str,
                     host: str) -> list[tuple[str, str]]:
    """The browser's headers as the service should see them: no hop-by-hop ones, no bridge cookie."""
    out = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP and k.lower() != "cookie"]
    cookies = [c for h, v in headers if h.lower() == "cookie" for c in v.split(";")
               if c.strip() and not c.strip().startswith(COOKIE + "=")]
    if cookies:
        out.append(("cookie", ";".join(cookies).strip()))
    out += [("host", host), ("x-forwarded-proto", scheme), ("x-forwarded-host", host)]
    if client:
        out.append(("x-forwarded-for", client))
    return out


class OwnerCache:
    """Recent positive answers of the owner check, for a few seconds: a page load makes dozens of requests,
    and each would otherwise read the key pair and the session again. A key pair disabled or a session
    ended is noticed within `ttl_s` (an ended session's runner is gone at once anyway)."""

    def __init__(self, ttl_s: float = 5.0, size: int = 4096) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._items: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any:
        hit = self._items.get(key)
        if hit is None or hit[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        return hit[1]

    def put(self, key: str, value: Any) -> None:
        if len(self._items) >= self.size:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.ttl_s, value)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# one HTTP exchange over a service stream (reader, writer, keep_alive): bridge.adapters.http_proxy.HttpExchange
ExchangeFactory = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bool], ProxyExchange]


class StreamPool:
    """Idle keep-alive service streams per (session, app), so a page's many requests do not each open a new
    circuit to the kernel runner. Only bodiless requests reuse a stream (a dead one is retried once)."""

    def __init__(self, per_app: int = 8) -> None:
        self.per_app = per_app
        self._idle: dict[tuple[str, str], list[Stream]] = {}

    def take(self, session_id: str, app: str) -> Stream | None:
        idle = self._idle.get((session_id, app)) or []
        while idle:
            reader, writer = idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
        return None

    def give(self, session_id: str, app: str, stream: Stream) -> None:
        idle = self._idle.setdefault((session_id, app), [])
        if len(idle) < self.per_app:
            idle.append(stream)
        else:
            stream[1].close()

    def drop(self, session_id: str) -> None:
        for key in [k for k in self._idle if k[0] == session_id]:
            for _, writer in self._idle.pop(key):
                writer.close()
