"""The wire-level clients convert their transport failures into the errors.py tree at their edge: the kernel
runner's into KernelUnavailable, a web app's (browser proxy) into AppUnavailable, a callback's into
CallbackFailed. Loopback servers play the other side."""

from __future__ import annotations

import asyncio
import socket

import pytest

from bridge.adapters.callbacks import HttpCallbacks
from bridge.adapters.http_proxy import HttpExchange
from bridge.adapters.kernel_runner import HttpKernelRunner
from bridge.domain.destinations import networks
from bridge.errors import AppUnavailable, BackendError, CallbackFailed, KernelUnavailable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _server(reply: bytes) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_a_kernel_runner_that_cannot_be_reached_is_kernel_unavailable():
    runner, port = HttpKernelRunner(), _closed_port()
    try:
        with pytest.raises(KernelUnavailable, match="cannot reach the kernel runner: ConnectError"):
            await runner.request("POST", f"http://127.0.0.1:{port}/execute", {}, b"{}")
        with pytest.raises(KernelUnavailable, match="upload failed: ConnectError"):
            await runner.request("PUT", f"http://127.0.0.1:{port}/files/x", {}, b"", failed="upload failed")
        with pytest.raises(KernelUnavailable, match="cannot reach the kernel runner"):
            async with runner.stream(f"http://127.0.0.1:{port}/raw?path=x", {}):
                pass
        with pytest.raises(KernelUnavailable, match="cannot reach the kernel runner: ConnectionRefusedError"):
            await runner.open_stream("127.0.0.1", port, "/pty", b"{}", {}, "refused")
    finally:
        await runner.aclose()
    assert KernelUnavailable.status == 503


async def test_a_kernel_runner_that_refuses_a_stream_says_why():
    server = await _server(b'HTTP/1.1 404 Not Found\r\nContent-Length: 25\r\n\r\n{"error": "no such app"}\n')
    port = server.sockets[0].getsockname()[1]
    runner = HttpKernelRunner()
    async with server:
        with pytest.raises(KernelUnavailable, match="the service x is not available: .no such app"):
            await runner.open_stream("127.0.0.1", port, "/service", b"{}", {"X-Bridge-Auth": "a"},
                                     "the service x is not available")
        answer = await runner.request("GET", f"http://127.0.0.1:{port}/files", {})
    await runner.aclose()
    assert answer.status_code == 404 and answer.json() == {"error": "no such app"}


async def _empty_body():
    return
    yield b""


@pytest.mark.parametrize("reply", [b"", b"NOT HTTP AT ALL\r\n\r\n"])
async def test_a_web_app_that_breaks_off_or_speaks_no_http_is_app_unavailable(reply):
    server = await _server(reply)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(AppUnavailable) as e:
            await HttpExchange(reader, writer).request("GET", "/", [("host", "x")], _empty_body(), None)
        writer.close()
    assert isinstance(e.value, BackendError) and e.value.status == 502
    assert e.value.__cause__ is not None   # the h11 or socket error, kept for the log


async def test_a_web_app_answer_is_relayed():
    server = await _server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-App: 1\r\n\r\nhi")
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        exchange = HttpExchange(reader, writer)
        status, headers = await exchange.request("GET", "/", [("host", "x")], _empty_body(), None)
        assert status == 200 and ("X-App", "1") in [(k.title(), v) for k, v in headers]
        assert b"".join([c async for c in exchange.body()]) == b"hi"


async def test_a_callback_that_cannot_be_delivered_is_callback_failed():
    port = _closed_port()
    with pytest.raises(CallbackFailed, match="ConnectError") as e:
        await HttpCallbacks().send(f"http://127.0.0.1:{port}/cb", {"event": "x"}, networks(["127.0.0.0/8"]))
    assert e.value.status == 502


async def test_the_watcher_logs_a_failed_callback_and_carries_on(caplog):
    from bridge.services.watcher import _callback

    class Failing:
        async def send(self, url, body, allowed):
            raise CallbackFailed("down") from ConnectionRefusedError("refused")

    with caplog.at_level("INFO", logger="bridge.services.watcher"):
        await _callback(Failing(), "http://cb.test/", "S1", "session_started", [])
    assert "callback to http://cb.test/ failed: refused" in caplog.text


async def test_callbacks_reuse_one_connection_follow_no_redirect_and_keep_no_cookie():
    """The callback sender's one client (adapters/outbound.OutboundClient): the second callback rides the
    first one's connection, a redirect is not followed (the checked destination is the only one), and a
    cookie the destination set is not sent back."""
    connections, requests = [], []

    async def serve(reader, writer):
        connections.append(writer)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                requests.append(head.decode())
                length = int(next((h.split(":")[1] for h in head.decode().split("\r\n")
                                   if h.lower().startswith("content-length:")), "0"))
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nSet-Cookie: s=1; Path=/\r\n"
                             b"Content-Length: 0\r\n\r\n")
                await writer.drain()
        except asyncio.IncompleteReadError:   # the client closed the connection
            pass
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    callbacks = HttpCallbacks()
    async with server:
        for _ in range(2):
            await callbacks.send(f"http://127.0.0.1:{port}/cb", {"event": "x"}, networks(["127.0.0.0/8"]))
        await callbacks.aclose()
        await asyncio.sleep(0.05)   # the server's side sees the close
    assert len(connections) == 1 and len(requests) == 2
    assert all(r.startswith("POST /cb ") for r in requests)            # /elsewhere never asked
    assert "cookie:" not in requests[1].lower()


async def test_a_callback_destination_that_never_answers_is_given_up_at_the_deadline():
    """A destination that takes the request and trickles (or sends nothing) holds a callback no longer than
    its deadline, whatever the per-read timeout."""
    held = []

    async def silent(reader, writer):
        held.append(writer)
        await reader.read(1024)
        await asyncio.sleep(5)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    callbacks = HttpCallbacks()
    callbacks.DEADLINE_S = 0.3
    async with server:
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(CallbackFailed, match="no answer within"):
            await callbacks.send(f"http://127.0.0.1:{port}/cb", {"event": "x"}, networks(["127.0.0.0/8"]))
        assert asyncio.get_running_loop().time() - t0 < 2
        await callbacks.aclose()
        for w in held:
            w.close()
    with pytest.raises(CallbackFailed, match="shutting down"):   # closed: refused, no new client made
        await callbacks.send(f"http://127.0.0.1:{port}/cb", {"event": "x"}, networks(["127.0.0.0/8"]))
