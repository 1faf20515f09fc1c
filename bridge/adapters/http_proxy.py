"""HTTP/1.1 over a session's service stream (a connection the kernel runner opened to a web app in the job),
for the browser proxy: h11 on the client side. Transport and protocol failures (OSError, h11.ProtocolError, an
answer that is no HTTP) leave here as AppUnavailable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import h11

from bridge.errors import AppUnavailable

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "host", "content-length"}


class ProxyExchange(Protocol):
    """One request and its response over a stream; `reusable` afterwards: the stream may carry the next."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    bytes_up: int
    bytes_down: int
    reusable: bool

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: AsyncIterator[bytes], length: int | None) -> tuple[int, list[tuple[str, str]]]: ...

    def body(self) -> AsyncIterator[bytes]: ...


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
        """Send the request, return the response's (status, headers); AppUnavailable if the service fails."""
        try:
            return await self._request(method, target, headers, body, length)
        except (OSError, h11.ProtocolError) as e:   # ConnectionError included
            raise AppUnavailable(f"the service did not answer: {type(e).__name__}") from e

    async def _request(self, method: str, target: str, headers: list[tuple[str, str]],
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
                try:
                    event = await self._next()
                except (OSError, h11.ProtocolError) as e:
                    raise AppUnavailable(f"the service broke off its answer: {type(e).__name__}") from e
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
