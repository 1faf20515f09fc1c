"""The browser's way into a session's web services: per-session app tokens and HTTP over a service stream.

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
from collections.abc import AsyncIterator
from typing import Any

import h11

from bridge.errors import AuthorizationFailed

COOKIE = "bridge-app-token"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}


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


class HttpExchange:
    """One HTTP/1.1 request and its response over a service stream; `reusable` afterwards says whether the
    stream may carry the next request (both sides finished cleanly and kept the connection alive)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keep_alive: bool = False) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)
        self.keep_alive = keep_alive
        self.bytes_up = self.bytes_down = 0
        self.reusable = False

    async def _send(self, event: Any) -> None:
        data = self.conn.send(event) or b""
        self.bytes_up += len(data)
        self.writer.write(data)
        await self.writer.drain()

    async def _next(self) -> Any:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.reader.read(1 << 16)
            self.bytes_down += len(data)
            self.conn.receive_data(data)

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: AsyncIterator[bytes], length: int | None) -> tuple[int, list[tuple[str, str]]]:
        framing = [("content-length", str(length))] if length is not None else [("transfer-encoding", "chunked")]
        if method in ("GET", "HEAD") and not length:
            framing = []
        close = [] if self.keep_alive else [("connection", "close")]
        await self._send(h11.Request(method=method, target=target, headers=[*headers, *framing, *close]))
        if framing:
            async for chunk in body:
                if chunk:
                    await self._send(h11.Data(data=chunk))
        await self._send(h11.EndOfMessage())
        response = await self._next()
        while isinstance(response, h11.InformationalResponse):
            response = await self._next()
        if not isinstance(response, h11.Response):
            raise ConnectionError(f"the service sent no HTTP response ({type(response).__name__})")
        out = [(k.decode(), v.decode("latin-1")) for k, v in response.headers
               if k.decode().lower() not in HOP_BY_HOP]
        return response.status_code, out

    async def body(self) -> AsyncIterator[bytes]:
        """The response body; afterwards the stream is closed unless it can be reused (see `reusable`)."""
        try:
            while True:
                event = await self._next()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self.reusable = self.keep_alive and self.conn.our_state is h11.DONE \
                        and self.conn.their_state is h11.DONE
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    return
        finally:
            if not self.reusable:
                self.writer.close()
