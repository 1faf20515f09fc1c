"""The transfer port: folder uploads (tus PATCH, HEAD, OPTIONS) and downloads (GET, HEAD, `Range: bytes=N-`) on
a listener of their own, the way Backend.AI's storage proxy has its own address. The links request-upload and
request-download hand out point here when `storage.transfer_port` is set; the tokens, the FolderService calls
and the answers are those of the API's own transfer routes (bridge.api.routes.folders), which stay.

Why a second listener: an ASGI server hands the application copies of the request body, in pieces, and takes
the response body the same way; that path reached 0.1 to 0.2 of a plain copy of a 1 GiB file. Here the bytes
never enter Python: an upload moves from the socket into the file with splice(2) through a pipe, a download
from the file into the socket with sendfile(2), each in a worker thread of the port's own pool while the event
loop serves the rest. A file system that cannot splice falls back to recv_into/pwrite with 1 MiB buffers.

HTTP/1.1 only as far as the clients use it: keep-alive, `Expect: 100-continue`, a body with Content-Length
(a chunked one gets 411), CORS for the WebUI's tus client (the token in the URL is the credential; no
cookies). Errors are the same Backend.AI problem bodies. No TLS: behind a TLS proxy, or on a trusted network.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import socket
import struct
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

from bridge.errors import PROBLEM_TYPE_BASE, BridgeError, InvalidAPIParameters
from bridge.services.folders import Download, FolderService, resume_offset

logger = logging.getLogger(__name__)

UPLOAD_PATH = "/folders/_/transfer/upload"
DOWNLOAD_PATH = "/folders/_/transfer/download"
MAX_HEAD = 64 * 1024          # request line and headers
PIPE_BYTES = 1 << 20          # the splice pipe's size, where the kernel allows it
COPY_BYTES = 1 << 20          # the fallback's buffer
DRAIN_BYTES = 1 << 20         # a refused request's body up to this size is read and dropped (within idle_s in
                              # all), so that the client sees the answer; a larger one closes the connection
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
REASONS = {100: "Continue", 200: "OK", 204: "No Content", 206: "Partial Content", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
           411: "Length Required", 412: "Precondition Failed", 416: "Range Not Satisfiable",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable"}
CORS = {"Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": "Upload-Offset, Upload-Length, Tus-Resumable, Tus-Version, Content-Range, "
                                         "Content-Length, Content-Disposition, Last-Modified, Accept-Ranges"}


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")   # RFC 9110 token: methods, header names
_DIGITS = re.compile(r"[0-9]{1,19}")
ONCE = ("content-length", "transfer-encoding", "host", "upload-offset", "range", "expect")   # never twice


class _Malformed(Exception):
    """A request this port cannot read; the connection closes after the answer."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


class _Request:
    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> None:
        self.method, self.path, self.query, self.headers = method, path, query, headers

    @property
    def token(self) -> str:
        return (self.query.get("token") or [""])[0]


class _Response:
    def __init__(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.status, self.headers, self.body = status, dict(headers or {}), body


def _problem(status: int, slug: str, title: str, msg: str, data: dict[str, object] | None = None) -> _Response:
    body: dict[str, object] = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "msg": msg}
    if data:
        body["data"] = data
    return _Response(status, {"Content-Type": "application/problem+json"}, json.dumps(body).encode())


def _error(e: BridgeError) -> _Response:
    return _problem(e.status, e.slug, e.title, e.msg, e.data or None)


class _Connection:
    """One client connection: its socket and the bytes read past the last request's headers."""

    def __init__(self, sock: socket.socket, idle_s: float) -> None:
        self.sock, self.idle_s = sock, idle_s
        self.buffer = b""
        self.loop = asyncio.get_running_loop()

    async def recv(self, n: int) -> bytes:
        return await asyncio.wait_for(self.loop.sock_recv(self.sock, n), self.idle_s)

    async def send(self, data: bytes) -> None:
        await asyncio.wait_for(self.loop.sock_sendall(self.sock, data), self.idle_s)

    async def read_request(self) -> _Request | None:
        """The next request's line and headers; None when the client closed the connection between requests.
        The whole head must come within `idle_s` (a client dripping it a byte at a time is cut off)."""
        async with asyncio.timeout(self.idle_s):
            return await self._read_request()

    async def _read_request(self) -> _Request | None:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > MAX_HEAD:
                raise _Malformed(431, "the request's headers are too large")
            got = await self.recv(65536)
            if not got:
                if self.buffer.strip():
                    raise _Malformed(400, "the request ended inside its headers")
                return None
            self.buffer += got
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        if len(head) > MAX_HEAD:
            raise _Malformed(431, "the request's headers are too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Malformed(400, "not an HTTP/1.1 request line")
        if not _TOKEN.fullmatch(parts[0]):
            raise _Malformed(400, "not an HTTP method")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.fullmatch(name) or any(ord(c) < 32 and c != "\t" for c in value):
                raise _Malformed(400, "a malformed header line")
            key, value = name.lower(), value.strip()
            if key in headers and key in ONCE:
                raise _Malformed(400, f"{name} given twice")
            headers[key] = value
        if parts[2] == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            headers["connection"] = "close"
        try:
            target = urlsplit(parts[1])
        except ValueError:
            raise _Malformed(400, "a malformed request target") from None
        return _Request(parts[0], target.path, parse_qs(target.query), headers)


class _Body:
    """A request body of known length, read from the connection: as chunks (to compare with bytes kept), or
    moved straight into a file (splice)."""

    def __init__(self, conn: _Connection, length: int, pool: ThreadPoolExecutor) -> None:
        self.conn, self.length, self.pool = conn, length, pool
        self.left = length
        self.broken = False   # a write failed half-way: what the socket holds is no longer the body's count

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.left > 0:
            if self.conn.buffer:
                chunk, self.conn.buffer = self.conn.buffer[:self.left], self.conn.buffer[self.left:]
            else:
                chunk = await self.conn.recv(min(self.left, COPY_BYTES))
                if not chunk:
                    return
            self.left -= len(chunk)
            yield chunk

    async def drain(self) -> bool:
        """Read the rest of the body and drop it, within one deadline; whether it all came."""
        try:
            async with asyncio.timeout(self.conn.idle_s):
                async for _ in self.chunks():
                    pass
        except (TimeoutError, OSError):
            return False
        return self.left == 0

    async def into(self, fd: int, pos: int, n: int) -> int:
        """The body's next `n` bytes written into `fd` at `pos`; the bytes moved (fewer: the client went away)."""
        moved = 0
        if self.conn.buffer:   # what came with the headers
            first, self.conn.buffer = self.conn.buffer[:n], self.conn.buffer[n:]
            os.pwrite(fd, first, pos)
            moved = len(first)
        if moved < n:
            sock = self.conn.sock
            sock.setblocking(True)   # the worker thread waits on it; SO_RCVTIMEO bounds an idle client
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self.conn.idle_s))
            try:
                moved += await self.conn.loop.run_in_executor(self.pool, splice_in, sock.fileno(), fd,
                                                              pos + moved, n - moved)
            except BaseException:
                self.broken = True
                raise
            finally:
                sock.setblocking(False)
        self.left -= moved
        return moved


def _timeval(seconds: float) -> bytes:
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))


def splice_in(sock_fd: int, fd: int, pos: int, n: int) -> int:
    """Move up to `n` bytes from a (blocking) socket into `fd` at `pos` through a pipe, with no copy in user
    space; the bytes moved. The socket's end (or its error, or its timeout) stops it early; a file's error
    (full, quota) is raised. A file system that cannot splice is written with pwrite instead."""
    r, w = os.pipe()
    try:
        with contextlib.suppress(OSError):   # past the per-user pipe limit the default size is kept
            fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_BYTES)
        moved = 0
        while moved < n:
            try:
                got = os.splice(sock_fd, w, min(PIPE_BYTES, n - moved), flags=os.SPLICE_F_MOVE)
            except OSError as e:
                if e.errno == errno.EINVAL and moved == 0:
                    return _copy_in(sock_fd, fd, pos, n)
                return moved   # the client went away or stalled past the idle timeout
            if got == 0:
                return moved
            out = 0
            while out < got:
                try:
                    out += os.splice(r, fd, got - out, offset_dst=pos + moved + out, flags=os.SPLICE_F_MOVE)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    data = os.read(r, got - out)   # this file system takes no splice: write what the pipe holds
                    os.pwrite(fd, data, pos + moved + out)
                    out += len(data)
                    if out == got:
                        return got + moved + _copy_in(sock_fd, fd, pos + moved + got, n - moved - got)
            moved += got
        return moved
    finally:
        os.close(r)
        os.close(w)


def _copy_in(sock_fd: int, fd: int, pos: int, n: int) -> int:
    buf = bytearray(min(COPY_BYTES, max(n, 1)))
    view = memoryview(buf)
    moved = 0
    while moved < n:
        try:
            got = os.readv(sock_fd, [view[:min(len(buf), n - moved)]])
        except OSError:
            return moved
        if got == 0:
            return moved
        done = 0
        while done < got:
            done += os.pwrite(fd, view[done:got], pos + moved + done)
        moved += got
    return moved


def send_out(sock_fd: int, fd: int, start: int, end: int) -> int:
    """Send `fd` from `start` to `end` to a (blocking) socket with sendfile(2); the bytes sent."""
    at = start
    while at < end:
        try:
            sent = os.sendfile(sock_fd, fd, at, min(end - at, 1 << 30))
        except OSError:
            break   # the client went away or stalled past the idle timeout
        if sent == 0:
            break
        at += sent
    return at - start


class TransferPort:
    """The listener, its connections (up to `max_connections`; more are closed at once) and its worker threads
    (one per transfer under way, up to `max_transfers`; more wait their turn)."""

    def __init__(self, folders: FolderService, host: str, port: int, *, idle_s: float = 60.0,
                 max_transfers: int = 32, max_connections: int = 512) -> None:
        self.folders, self.host, self.port, self.idle_s = folders, host, port, idle_s
        self.max_connections = max_connections
        self.pool = ThreadPoolExecutor(max_transfers, thread_name_prefix="transfer")
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._connections: dict[asyncio.Task[None], socket.socket] = {}

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(128)
        ls.setblocking(False)
        self._listener, self.port = ls, ls.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept(ls), name="transfer-port")
        logger.info("transfer port listening on %s:%d", self.host, self.port)

    async def aclose(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        for task, sock in list(self._connections.items()):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)   # a worker thread blocked on it returns
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.pool.shutdown(wait=True, cancel_futures=True)

    async def _accept(self, ls: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(ls)
            except OSError as e:   # out of descriptors, for instance: try again shortly
                logger.warning("transfer port: accept failed: %s", e)
                await asyncio.sleep(0.1)
                continue
            if len(self._connections) >= self.max_connections:   # the rest wait for one of these to end
                logger.warning("transfer port: %d connections open; one more refused", len(self._connections))
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.create_task(self._serve(sock))
            self._connections[task] = sock
            task.add_done_callback(lambda t: self._connections.pop(t, None))

    async def _serve(self, sock: socket.socket) -> None:
        conn = _Connection(sock, self.idle_s)
        try:
            while True:
                try:
                    req = await conn.read_request()
                except _Malformed as e:
                    await self._answer(conn, None, _problem(e.status, "invalid-api-params", REASONS[e.status],
                                                            str(e)), close=True)
                    return
                if req is None:
                    return
                if not await self._handle(conn, req):
                    return
        except (TimeoutError, OSError):
            return
        finally:
            sock.close()

    async def _handle(self, conn: _Connection, req: _Request) -> bool:
        """Answer one request; whether the connection can carry the next one."""
        t0 = time.perf_counter()
        keep = req.headers.get("connection", "").lower() != "close"
        body: _Body | None = None
        sent = 0
        try:
            if "transfer-encoding" in req.headers:
                raise _Malformed(411, "send the body with a Content-Length (no Transfer-Encoding is taken here)")
            length = req.headers.get("content-length", "0")
            if not _DIGITS.fullmatch(length):
                raise _Malformed(400, "Content-Length: a byte count is required")
            body = _Body(conn, int(length), self.pool)
            if req.method == "OPTIONS":
                res = self._options(req)
            elif req.path == UPLOAD_PATH and req.method == "PATCH":
                res = await self._patch(conn, req, body)
            elif req.path == UPLOAD_PATH and req.method == "HEAD":
                res = await self._head(req)
            elif req.path == DOWNLOAD_PATH and req.method in ("GET", "HEAD"):
                got, res = await self._download(req)
                if got is not None:
                    keep = await self._send_file(conn, req, got, res) and keep
                    sent = int(res.headers.get("Content-Length", 0))
                    res = None
            elif req.path in (UPLOAD_PATH, DOWNLOAD_PATH):
                res = _problem(405, "method-not-allowed", "Method not allowed.", f"{req.method} is not served here")
            else:
                res = _problem(404, "not-found", "Unknown URL path.", "this port serves folder transfers only")
        except _Malformed as e:
            res, keep = _problem(e.status, "invalid-api-params", REASONS.get(e.status, "Bad Request"), str(e)), False
        except BridgeError as e:
            res = _error(e)
        except (TimeoutError, OSError, ConnectionError):
            return False
        except Exception as e:   # never a traceback to the client; the log has it
            logger.error("transfer port: %s %s failed: %s", req.method, req.path, e, exc_info=e)
            res = _problem(500, "internal-server-error", "Internal server error.", "an unexpected error occurred")
        if body is not None and body.broken:
            keep = False
        elif body is not None and body.left and keep:   # a body nobody read (a refusal): read past it, or close
            keep = body.left <= DRAIN_BYTES and await body.drain()
        if res is not None:
            await self._answer(conn, req, res, close=not keep)
            sent = len(res.body)
        logger.info("transfer %s %s %s %d bytes in, %d out, %.3f s", req.method, req.path,
                    res.status if res is not None else "sent", body.length - body.left if body else 0, sent,
                    time.perf_counter() - t0)
        return keep

    async def _answer(self, conn: _Connection, req: _Request | None, res: _Response, *, close: bool) -> None:
        headers = {**CORS, **res.headers}
        if req is None or req.method != "HEAD" or "Content-Length" not in headers:
            headers.setdefault("Content-Length", str(len(res.body)))
        if close:
            headers["Connection"] = "close"
        await conn.send(_head(res.status, headers) + (b"" if req is not None and req.method == "HEAD" else res.body))

    @staticmethod
    def _options(req: _Request) -> _Response:
        asked = req.headers.get("access-control-request-headers", "")
        return _Response(204, {"Tus-Resumable": "1.0.0", "Tus-Version": "1.0.0",
                               "Access-Control-Allow-Methods": "GET, HEAD, PATCH, OPTIONS",
                               "Access-Control-Allow-Headers": asked or "Tus-Resumable, Upload-Offset, Content-Type",
                               "Access-Control-Max-Age": "600"})

    async def _patch(self, conn: _Connection, req: _Request, body: _Body) -> _Response:
        try:
            offset = int(req.headers.get("upload-offset", ""))
        except ValueError:
            raise InvalidAPIParameters("Upload-Offset: a byte offset is required") from None
        if req.headers.get("expect", "").lower() == "100-continue":
            await self.folders.upload_state(req.token)   # a bad token or a gone upload: refused before the body
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        now = await self.folders.upload_chunk(req.token, offset, body.chunks(), length=body.length, into=body.into)
        if body.left:   # the client went away half-way: what came is kept, and nobody is there to answer
            raise ConnectionError("the client went away")
        return _Response(204, {"Upload-Offset": str(now), "Tus-Resumable": "1.0.0"})

    async def _head(self, req: _Request) -> _Response:
        now, announced = await self.folders.upload_state(req.token)
        return _Response(200, {"Upload-Offset": str(now), "Upload-Length": str(announced), "Tus-Resumable": "1.0.0",
                               "Cache-Control": "no-store"})

    async def _download(self, req: _Request) -> tuple[Download | None, _Response]:
        got = await self.folders.download(req.token, resume_offset(req.headers.get("range", "")))
        status, headers = got.answer()
        return (got if status != 416 else None), _Response(status, headers)

    async def _send_file(self, conn: _Connection, req: _Request, got: Download, res: _Response) -> bool:
        """The headers, then the file (sendfile, or the helper's stream over SSH); whether it all went. The
        file is let go however this ends; once the headers went out, any failure ends the connection (a
        problem body now would land inside the file)."""
        try:
            await conn.send(_head(res.status, {**CORS, **res.headers}))
            if req.method == "HEAD":
                return True
            want = got.size - got.start
            try:
                if got.fd is None:
                    sent = 0
                    async for chunk in got.stream():
                        await conn.send(chunk)
                        sent += len(chunk)
                    return sent == want
                fd = got.take_fd()
                try:
                    sock = conn.sock
                    sock.setblocking(True)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self.idle_s))
                    try:
                        sent = await conn.loop.run_in_executor(self.pool, send_out, sock.fileno(), fd, got.start,
                                                               got.size)
                    finally:
                        sock.setblocking(False)
                finally:
                    os.close(fd)
                return sent == want
            except Exception as e:  # noqa: BLE001 - after the headers: log it, and end the connection
                logger.warning("transfer port: a download stopped half-way: %s", e)
                return False
        finally:
            await got.aclose()


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
