"""The transfer port (bridge.api.transfer_port) over real sockets and a real disk: bytes moved by splice and
sendfile arrive whole, keep-alive and `Expect: 100-continue` work as the clients use them, a cut upload keeps
what came and continues, and every refusal is a problem body that leaves the connection usable where it can.
The user switch is the boundary faked here, as in test_folders."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import struct
import threading

import httpx
import pytest

from bridge.api import transfer_port
from bridge.api.transfer_port import TransferPort, splice_in
from tests.unit.api.test_folders import AsOwner


@pytest.fixture
async def port(gw, tmp_path):
    svc = gw.app.state.folders
    svc.runner = AsOwner()
    svc.config.hosts = {"local": str(tmp_path / "vfroot")}
    (tmp_path / "vfroot").mkdir(mode=0o777)
    p = TransferPort(svc, "127.0.0.1", 0, idle_s=5)
    await p.start()
    gw.app.state.transfer_port = p
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "xfer"})).json()["id"]
    yield gw, p, tmp_path / "vfroot" / "alice" / fid
    await p.aclose()


async def token(gw, kind: str, path: str, size: int | None = None) -> str:
    body = {"path": path} if size is None else {"path": path, "size": size}
    r = await gw.request("POST", f"/folders/xfer/request-{kind}", "alice", json=body)
    assert r.status_code == 200, r.text
    return r.json()["token"]


class Raw:
    """One client connection written by hand, to send what httpx would not (cut bodies, bad heads)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, p: TransferPort) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", p.port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        return int(lines[0].split(" ")[1]), headers, body

    async def closed(self) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), 10) == b""
        except ConnectionError:   # reset, or our last write found it closed
            return True

    def close(self) -> None:
        self.writer.close()


def patch(tok: str, offset: int, length: int, extra: str = "") -> bytes:
    return (f"PATCH /folders/_/transfer/upload?token={tok} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
            f"Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


async def test_a_large_file_moves_by_splice_and_sendfile_byte_for_byte(port, mocker):
    gw, p, folder = port
    data = os.urandom(24 << 20)
    tok = await token(gw, "upload", "big.bin", len(data))
    spliced, sent = mocker.spy(transfer_port.os, "splice"), mocker.spy(transfer_port.os, "sendfile")
    raw = await Raw.open(p)
    for i, at in enumerate(range(0, len(data), 8 << 20)):   # three PATCHes on one connection, as aiohttp sends
        if i == 0:   # curl's way: the body waits for 100 Continue
            await raw.send(patch(tok, at, 8 << 20, "Expect: 100-continue\r\n"))
            assert (await raw.reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
            await raw.send(data[at:at + (8 << 20)])
        else:
            await raw.send(patch(tok, at, 8 << 20) + data[at:at + (8 << 20)])
        status, headers, _ = await raw.answer()
        assert status == 204 and headers["upload-offset"] == str(at + (8 << 20)), headers
    raw.close()
    assert (folder / "big.bin").read_bytes() == data
    assert spliced.call_count > 0   # the bytes went socket -> pipe -> file
    down = await token(gw, "download", "big.bin")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}", timeout=30) as http:
        whole = await http.get(f"/folders/_/transfer/download?token={down}")
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-length"] == str(len(data))
        assert whole.headers["access-control-allow-origin"] == "*"
        part = await http.get(f"/folders/_/transfer/download?token={down}", headers={"Range": "bytes=1000-"})
        assert part.status_code == 206 and part.content == data[1000:]
        head = await http.head(f"/folders/_/transfer/download?token={down}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and not head.content
    assert sent.call_count > 0
    assert set(gw.app.state.folders.runner.users) == {"alice"}


async def test_an_upload_cut_half_way_keeps_what_came_and_continues(port):
    gw, p, folder = port
    data = os.urandom(1 << 20)
    tok = await token(gw, "upload", "cut.bin", len(data))
    raw = await Raw.open(p)
    await raw.send(patch(tok, 0, len(data)) + data[:300_000])
    raw.writer.close()   # the client dies half-way
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{p.port}", timeout=30) as http:
        url = f"/folders/_/transfer/upload?token={tok}"
        for _ in range(100):
            kept = int((await http.head(url)).headers["upload-offset"])
            if kept == 300_000:
                break
            await asyncio.sleep(0.05)
        assert kept == 300_000
        assert not (folder / "cut.bin").exists()   # in place only once whole
        rest = await http.patch(url, content=data[kept:], headers={"Upload-Offset": str(kept),
                                                                   "Tus-Resumable": "1.0.0"})
        assert rest.status_code == 204 and rest.headers["upload-offset"] == str(len(data))
    assert (folder / "cut.bin").read_bytes() == data


async def test_refusals_are_problem_bodies_on_a_connection_that_stays_usable(port):
    gw, p, _ = port
    tok = await token(gw, "upload", "r.bin", 10)
    raw = await Raw.open(p)
    await raw.send(patch("forged.token", 0, 1 << 20) + b"x" * (1 << 20))   # refused, its body read past
    status, headers, body = await raw.answer()
    assert status == 401 and headers["content-type"] == "application/problem+json"
    assert json.loads(body)["type"].endswith("/unauthorized")
    await raw.send(patch(tok, 3, 2) + b"ab")   # past where the file ends: 409 with the offset to continue from
    status, _, body = await raw.answer()
    assert status == 409 and json.loads(body)["data"] == {"offset": 0}
    await raw.send(patch(tok, 0, 11) + b"x" * 11)   # more than announced
    status, _, body = await raw.answer()
    assert status == 400 and "10 bytes announced" in json.loads(body)["msg"]
    await raw.send(f"HEAD /folders/_/transfer/upload?token={tok} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status, headers, _ = await raw.answer()
    assert status == 200 and headers["upload-offset"] == "0" and headers["upload-length"] == "10"
    await raw.send(b"OPTIONS /folders/_/transfer/upload HTTP/1.1\r\nHost: x\r\nOrigin: http://ui\r\n"
                   b"Access-Control-Request-Method: PATCH\r\n"
                   b"Access-Control-Request-Headers: tus-resumable, upload-offset\r\n\r\n")   # the WebUI's preflight
    status, headers, _ = await raw.answer()
    assert status == 204 and headers["access-control-allow-origin"] == "*"
    assert "PATCH" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "tus-resumable, upload-offset"
    for request, want in ((b"DELETE /folders/_/transfer/upload HTTP/1.1\r\nHost: x\r\n\r\n", 405),
                          (b"GET /session/x HTTP/1.1\r\nHost: x\r\n\r\n", 404)):
        await raw.send(request)
        status, _, body = await raw.answer()
        assert status == want and json.loads(body)["msg"]
    raw.close()
    # what cannot be read closes the connection after its answer
    for request, want in ((patch(tok, 0, 0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked"), 411),
                          (b"NOT HTTP\r\n\r\n", 400),
                          (b"GET / HTTP/1.1\r\nX: " + b"y" * 70_000 + b"\r\n\r\n", 431),
                          (patch(tok, 0, 0).replace(b"Content-Length: 0", b"Content-Length: -1"), 400)):
        raw = await Raw.open(p)
        await raw.send(request)
        status, headers, body = await raw.answer()
        assert status == want and headers["connection"] == "close" and json.loads(body)["title"], request[:40]
        assert await raw.closed()
        raw.close()


def _feed(sock: socket.socket, data: bytes) -> None:
    sock.sendall(data)
    sock.close()


def test_splice_in_writes_at_the_offset_and_falls_back_where_the_file_system_cannot_splice(tmp_path, monkeypatch):
    data = os.urandom(3 << 20)
    real = os.splice

    def no_file_splice(src, dst, count, offset_src=None, offset_dst=None, flags=0):
        if offset_dst is not None:   # a file system without splice_write refuses the pipe -> file half
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(src, dst, count, offset_src, offset_dst, flags)

    for fallback in (False, True):
        if fallback:
            monkeypatch.setattr(transfer_port.os, "splice", no_file_splice)
        a, b = socket.socketpair()
        target = tmp_path / f"out-{fallback}"
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
        os.pwrite(fd, b"head", 0)
        feeder = threading.Thread(target=_feed, args=(a, data))
        try:
            feeder.start()
            moved = splice_in(b.fileno(), fd, 4, len(data) + 100)   # the peer closes before all that came
            feeder.join()
        finally:
            os.close(fd)
            b.close()
        assert moved == len(data) and target.read_bytes() == b"head" + data, fallback


async def test_a_head_dripped_a_byte_at_a_time_is_cut_off_and_connections_are_capped(port):
    gw, _, _ = port
    p = TransferPort(gw.app.state.folders, "127.0.0.1", 0, idle_s=1, max_connections=2)
    await p.start()
    try:
        raw = await Raw.open(p)
        t0 = asyncio.get_running_loop().time()
        with contextlib.suppress(ConnectionError):
            for ch in b"GET /folders/_/transfer/download HTTP/1.1\r\n":   # each byte well within idle_s
                await raw.send(bytes([ch]))
                await asyncio.sleep(0.1)
        assert await raw.closed()
        assert asyncio.get_running_loop().time() - t0 < 3   # the whole head had 1 s
        raw.close()
        held = [await Raw.open(p), await Raw.open(p)]
        await asyncio.sleep(0.1)
        third = await Raw.open(p)   # past max_connections: closed before a byte is read
        assert await third.closed()
        for r in (*held, third):
            r.close()
    finally:
        await p.aclose()


def open_files() -> list[str]:
    """What this process holds open, sockets left out (those of the test's own clients close on their own
    schedule): files and pipes."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:   # the listing's own descriptor
            continue
        if not target.startswith("socket:"):
            out.append(target)
    return sorted(out)


async def test_downloads_cut_by_their_clients_leave_no_file_open(port):
    """A client gone before the answer's headers, one that resets the connection mid-body, or one asking
    HEAD: the downloaded file is let go every time (a descriptor per dropped download would exhaust the
    gateway's)."""
    gw, p, folder = port
    (folder / "big.bin").write_bytes(os.urandom(8 << 20))
    tok = await token(gw, "download", "big.bin")
    request = f"GET /folders/_/transfer/download?token={tok} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    def held() -> list[str]:
        return [f for f in open_files() if f.endswith("/big.bin")]

    for i in range(30):
        raw = await Raw.open(p)
        await raw.send(request if i % 3 else request.replace(b"GET ", b"HEAD ", 1))
        if i % 3 == 2:   # gone (a reset: linger 0) before the answer's headers, whose send then fails
            raw.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                           struct.pack("ii", 1, 0))
            raw.writer.transport.abort()
            continue
        await raw.reader.readuntil(b"\r\n\r\n")
        raw.writer.transport.abort()   # a reset, mid-body (or after HEAD's headers)
    for _ in range(50):
        await asyncio.sleep(0.1)
        if not held():
            break
    assert held() == []


async def test_what_a_proxy_could_read_differently_is_refused(port):
    """Request smuggling's raw material: a second Transfer-Encoding or Content-Length, a length that is not
    plain ASCII digits, a method that is no token; and 100 Continue only for an upload that exists."""
    gw, p, _ = port
    tok = await token(gw, "upload", "s.bin", 10)
    base = f"PATCH /folders/_/transfer/upload?token={tok} HTTP/1.1\r\nHost: x\r\nUpload-Offset: 0\r\n"
    for head, want in ((base + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400),
                       (base + "Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc", 411),
                       (base + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400),
                       (base + "Content-Length: \u00b2\r\n\r\n", 400),
                       (base.replace("PATCH", "PA\x01CH", 1) + "Content-Length: 0\r\n\r\n", 400)):
        raw = await Raw.open(p)
        await raw.send(head.encode("latin-1") if "\u00b2" not in head else head.encode())
        status, headers, _ = await raw.answer()
        assert status == want and headers["connection"] == "close", head
        raw.close()
    raw = await Raw.open(p)   # a forged token waits for no body: refused before 100 Continue
    await raw.send(patch("forged.token", 0, 10, "Expect: 100-continue\r\n"))
    status, _, _ = await raw.answer()
    assert status == 401
    raw.close()
