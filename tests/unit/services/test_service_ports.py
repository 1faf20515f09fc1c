"""Service ports from image labels, app tokens and the tunnel registry."""

from __future__ import annotations

import asyncio

import pytest

from bridge.errors import AuthorizationFailed
from bridge.services import app_proxy, service_ports
from bridge.services.events import EventBus, SessionEvent
from bridge.services.tunnels import TunnelRegistry


def test_label_ports_come_first_and_every_kernel_gets_sshd_and_ttyd():
    ports = service_ports.parse('"jupyter:http:8080,tensorboard:http:6006,bad,x:ftp:1,y:tcp:notaport"', "S1")
    assert [p["name"] for p in ports] == ["jupyter", "tensorboard", "sshd", "ttyd"]
    jupyter = ports[0]
    assert jupyter["protocol"] == "http" and jupyter["ports"] == [8080]
    assert jupyter["url_template"] == "http://{host}:{port}/proxy/S1/jupyter/"
    sshd = service_ports.find(ports, "sshd")
    assert sshd is not None and sshd["ports"] == [2200] and "url_template" not in sshd
    # an image may redefine an intrinsic one
    assert [p["ports"] for p in service_ports.parse("ttyd:http:9999") if p["name"] == "ttyd"] == [[9999]]
    assert [p["name"] for p in service_ports.parse(None)] == ["sshd", "ttyd"]


def test_app_tokens_bind_session_app_and_expiry():
    token = app_proxy.issue("k", "S1", "jupyter", "AK1", ttl_s=60)
    assert app_proxy.verify("k", token, "S1", "jupyter") == "AK1"
    for secret, sid, app in (("other", "S1", "jupyter"), ("k", "S2", "jupyter"), ("k", "S1", "ttyd")):
        with pytest.raises(AuthorizationFailed):
            app_proxy.verify(secret, token, sid, app)
    payload, mac = token.split(".")
    with pytest.raises(AuthorizationFailed):
        app_proxy.verify("k", payload + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"), "S1", "jupyter")
    with pytest.raises(AuthorizationFailed):
        app_proxy.verify("k", "garbage", "S1", "jupyter")
    expired = app_proxy.issue("k", "S1", "jupyter", "AK1", ttl_s=-1)
    with pytest.raises(AuthorizationFailed, match="expired"):
        app_proxy.verify("k", expired, "S1", "jupyter")


def test_upstream_headers_drop_hop_by_hop_and_the_bridge_cookie():
    headers = app_proxy.upstream_headers(
        [("Connection", "keep-alive"), ("Accept", "text/html"), ("Cookie", f"{app_proxy.COOKIE}=secret; _xsrf=1"),
         ("Host", "evil"), ("Transfer-Encoding", "chunked")], "10.0.0.9", "https", "gw.example:443")
    names = [k.lower() for k, _ in headers]
    assert "connection" not in names and "transfer-encoding" not in names and names.count("host") == 1
    assert ("cookie", "_xsrf=1") in headers and ("host", "gw.example:443") in headers
    assert ("x-forwarded-for", "10.0.0.9") in headers and ("x-forwarded-proto", "https") in headers


def test_tunnels_count_bytes_and_close_with_their_session():
    reg = TunnelRegistry()
    closed = []
    a = reg.open("S1", "jupyter", "tcpproxy", "AK1", closer=lambda: closed.append("a"))
    b = reg.open("S1", "ttyd", "http", "AK1", closer=lambda: closed.append("b"))
    reg.open("S2", "jupyter", "tcpproxy", "AK2", closer=lambda: closed.append("other"))
    a.up(10)
    a.down(100)
    b.down(5)
    summary = reg.summary("S1")
    assert (summary["bytes_up"], summary["bytes_down"], summary["circuits_total"]) == (10, 105, 2)
    assert len(summary["open"]) == 2 and summary["last_activity"]
    reg.close(a)
    assert reg.summary("S1")["bytes_down"] == 105 and len(reg.summary("S1")["open"]) == 1
    assert reg.close_session("S1") == 1 and closed == ["b"]
    assert reg.summary("S3") == {"last_activity": None, "bytes_up": 0, "bytes_down": 0, "circuits_total": 0,
                                 "open": []}


async def test_a_session_that_ends_cuts_its_circuits():
    reg, bus = TunnelRegistry(), EventBus()
    cut = asyncio.Event()
    reg.open("S1", "sshd", "tcpproxy", "AK1", closer=cut.set)
    watcher = asyncio.create_task(reg.watch(bus))
    await asyncio.sleep(0)
    bus.publish(SessionEvent("session_started", "S1", "n", "AK1", "g", "d", "RUNNING"))
    await asyncio.sleep(0.01)
    assert not cut.is_set()
    bus.publish(SessionEvent("session_terminated", "S1", "n", "AK1", "g", "d", "TERMINATED"))
    await asyncio.wait_for(cut.wait(), 1)
    watcher.cancel()


def test_label_grammar_lists_and_preopen_ports():
    ports = service_ports.parse("vnc:vnc:[5901,5902],term:pty:2003,low:tcp:80,x:tcp:[1,notaport]", "S", (8765,))
    assert [(p["name"], p["protocol"], p["ports"]) for p in ports] == [
        ("vnc", "vnc", [5901, 5902]), ("sshd", "tcp", [2200]), ("ttyd", "http", [7681]),
        ("8765", "preopen", [8765])]
    assert ports[0]["host_ports"] == [None, None]
    assert service_ports.check_preopen([8765, 8765, 9000]) == (8765, 9000)
    for bad in ([22], [2200], [70000], list(range(3000, 3011))):
        with pytest.raises(ValueError, match="preopen_ports"):
            service_ports.check_preopen(bad)


async def test_the_proxy_pool_reuses_live_streams_and_drops_a_session():
    class Writer:
        def __init__(self) -> None:
            self.closed = False

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

    def stream() -> tuple[asyncio.StreamReader, Writer]:
        return asyncio.StreamReader(), Writer()

    pool = app_proxy.StreamPool(per_app=2)
    assert pool.take("S1", "jupyter") is None
    a, b, c = stream(), stream(), stream()
    for s in (a, b, c):
        pool.give("S1", "jupyter", s)  # type: ignore[arg-type]
    assert c[1].closed and not a[1].closed            # beyond per_app: closed, not kept
    b[0].feed_eof()                                  # the service hung up on b
    assert pool.take("S1", "jupyter") == a and pool.take("S1", "jupyter") is None
    pool.give("S1", "ttyd", b := stream())  # type: ignore[arg-type]
    pool.drop("S1")
    assert b[1].closed and pool.take("S1", "ttyd") is None
