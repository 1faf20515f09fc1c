"""HTTP to the in-job kernel runner (bridge/kernel/runner.py): JSON requests, streamed bodies, and the raw
connections that carry a terminal or a service. Signing and addressing are the caller's (the execution
service); every transport failure (httpx errors, OSError, timeouts) leaves here as KernelUnavailable."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bridge.errors import KernelUnavailable

UNREACHABLE = "cannot reach the kernel runner"


@dataclass(frozen=True)
class RunnerAnswer:
    """A whole answer of the kernel runner."""

    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")


class KernelRunnerClient(Protocol):
    """What the execution service asks of the wire to a kernel runner at `url` (http://host:port/target)."""

    async def request(self, method: str, url: str, headers: dict[str, str], content: bytes | AsyncIterator[bytes]
                      | None = None, *, failed: str = UNREACHABLE) -> RunnerAnswer: ...

    def stream(self, url: str, headers: dict[str, str]) -> AbstractAsyncContextManager[
            tuple[int, AsyncIterator[bytes]]]: ...

    async def open_stream(self, host: str, port: int, path: str, data: bytes, headers: dict[str, str],
                          refused: str) -> socket.socket: ...

    async def aclose(self) -> None: ...


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _read_head(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """An HTTP answer's head from a non-blocking socket, and not one byte more: what follows is the service's
    stream (sshd speaks first). Peeks, then takes exactly the head."""
    while True:
        await _readable(loop, sock)
        peek = sock.recv(16384, socket.MSG_PEEK)
        if not peek:
            return b""
        end = peek.find(b"\r\n\r\n")
        if end >= 0:
            return sock.recv(end + 4)
        if len(peek) >= 16384:
            return sock.recv(len(peek))
        await asyncio.sleep(0.005)   # a head cut in two: wait for the rest


class HttpKernelRunner:
    """The kernel runner over HTTP (httpx) and, for streams, a plain socket."""

    def __init__(self) -> None:
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, url: str, headers: dict[str, str], content: bytes | AsyncIterator[bytes]
                      | None = None, *, failed: str = UNREACHABLE) -> RunnerAnswer:
        try:
            r = await self.http.request(method, url, content=content, headers=headers)
        except httpx.HTTPError as e:
            raise KernelUnavailable(f"{failed}: {type(e).__name__}") from e
        return RunnerAnswer(r.status_code, r.content)

    @asynccontextmanager
    async def stream(self, url: str, headers: dict[str, str]) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
        """A GET whose body is read as it comes: (status, chunks)."""
        try:
            async with self.http.stream("GET", url, headers=headers) as r:
                yield r.status_code, r.aiter_bytes(1 << 16)
        except httpx.HTTPError as e:
            raise KernelUnavailable(f"{UNREACHABLE}: {type(e).__name__}") from e

    async def open_stream(self, host: str, port: int, path: str, data: bytes, headers: dict[str, str],
                          refused: str) -> socket.socket:
        """POST `data` (JSON, signed by `headers`) to the kernel runner and return the connection, which from
        the answer on carries a stream (a terminal, a service). The answer's head is taken exactly (peeked),
        so nothing of the stream is left in a buffer: sshd, for one, speaks first."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)   # idle circuits stay up through firewalls
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (host, port)), timeout=10)
            auth = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            await loop.sock_sendall(sock, f"POST {path} HTTP/1.1\r\nHost: kernel\r\n{auth}".encode()
                                    + b"Content-Type: application/json\r\n"
                                    + f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
            head = await asyncio.wait_for(_read_head(loop, sock), timeout=120)
        except (OSError, TimeoutError) as e:
            sock.close()
            raise KernelUnavailable(f"{UNREACHABLE}: {type(e).__name__}") from e
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            try:
                detail = json.loads((await asyncio.wait_for(loop.sock_recv(sock, 4000), 10)) or b"{}").get("error")
            except (ValueError, OSError, TimeoutError, AttributeError):
                detail = None
            sock.close()
            raise KernelUnavailable(f"{refused}: {detail or head[:80]!r}")
        return sock
