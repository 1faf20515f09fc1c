"""Issue 12.10: the channel between the gateway and a session's kernel runner. Every request carried the
session's secret in the clear (body or X-Bridge-Secret), so anyone on the compute network who saw one request
could run code as the session's user, and a forged report could point the gateway at any host.
Now requests either way are signed (HMAC over method, target, time, nonce, body) and the secret never travels.

These tests run the real runner's HTTP server in a thread and the real gateway in process."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import httpx
import pytest

from bridge.domain import runner_auth
from bridge.kernel import runner
from tests.unit.api.test_graphql import add_session

SECRET = "s3cret-of-the-session"


def test_the_runners_copy_agrees_with_the_domain():
    for target in ("/execute", "/files?path=a%20b&z=1", "/files?z=1&path=a+b", "/kernel-callback/x"):
        for body in (None, b"", b'{"a": 1}'):
            mine = runner_auth.header(SECRET, "post", target, body, 1_000_000.0, "n" * 16)
            theirs = runner.auth_header(SECRET, "POST", target, body, 1_000_000.0, "n" * 16)
            assert mine == theirs
            assert runner_auth.verify(SECRET, theirs, "POST", target, runner_auth.body_digest(body),
                                      1_000_010.0, runner_auth.Nonces())
    assert runner_auth.canonical_target("/f?b=2&a=1") == runner.auth_target("/f?a=1&b=2") == "/f?a=1&b=2"


@pytest.mark.parametrize("change", ["secret", "method", "target", "body", "stale", "future", "replay", "garbled"])
def test_verification_refuses_anything_but_the_signed_request(change):
    nonces = runner_auth.Nonces()
    now = 2_000_000.0
    body = b'{"code": "print(1)"}'
    signed = runner_auth.header(SECRET, "POST", "/execute", body, now, "abcdef0123456789")
    args = {"secret": SECRET, "value": signed, "method": "POST", "target": "/execute",
            "digest": runner_auth.body_digest(body), "now": now + 1}
    assert runner_auth.verify(nonces=runner_auth.Nonces(), **args)
    args |= {"secret": {"secret": "other"}, "method": {"method": "PUT"}, "target": {"target": "/interrupt"},
             "body": {"digest": runner_auth.body_digest(b'{"code": "import os"}')},
             "stale": {"now": now + runner_auth.WINDOW_S + 1}, "future": {"now": now - runner_auth.WINDOW_S - 1},
             "replay": {}, "garbled": {"value": signed.replace(",n=", ",x=")}}[change]
    if change == "replay":
        assert runner_auth.verify(nonces=nonces, **args)
    assert not runner_auth.verify(nonces=nonces, **args)


def test_nonces_stay_bounded():
    nonces = runner_auth.Nonces(limit=100)
    for i in range(1000):
        assert nonces.first_use(f"nonce-{i:06d}", float(i))
    assert len(nonces._seen) <= 101


@pytest.fixture
def live_runner(tmp_path, monkeypatch):
    """The kernel runner's HTTP server, as started in a job (but in a thread, on loopback)."""
    work = tmp_path / "session-folder"
    work.mkdir()
    monkeypatch.setattr(runner, "SECRET", SECRET)
    monkeypatch.setattr(runner, "WORK", str(work))
    monkeypatch.chdir(work)
    (work / "hello.txt").write_text("hi")
    server = runner.Server(("127.0.0.1", 0), runner.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _signed(method, target, body=None, secret=SECRET, now=None, nonce=None):
    return {runner_auth.HEADER: runner_auth.header(secret, method, target, body, now or time.time(),
                                                   nonce or runner_auth.new_nonce())}


def test_the_runner_serves_only_signed_requests(live_runner):
    base = f"http://127.0.0.1:{live_runner}"
    ping = b"{}"
    with httpx.Client(base_url=base) as http:
        assert http.post("/ping", content=ping, headers=_signed("POST", "/ping", ping)).status_code == 200
        # the old way (the secret itself) no longer opens the runner, nor does an unsigned or re-played request
        assert http.post("/ping", content=ping, headers={"X-Bridge-Secret": SECRET}).status_code == 403
        assert http.post("/ping", content=json.dumps({"secret": SECRET}).encode()).status_code == 403
        once = _signed("POST", "/ping", ping)
        assert http.post("/ping", content=ping, headers=once).status_code == 200
        assert http.post("/ping", content=ping, headers=once).status_code == 403
        # a signature is for one request: not another body, path, method or secret
        code = b'{"run_id": "r", "code": "1", "mode": "query"}'
        assert http.post("/execute", content=b'{"run_id": "r", "code": "2"}',
                         headers=_signed("POST", "/execute", code)).status_code == 403
        assert http.post("/interrupt", content=ping, headers=_signed("POST", "/ping", ping)).status_code == 403
        assert http.get("/files?path=.", headers=_signed("PUT", "/files?path=.")).status_code == 403
        assert http.post("/ping", content=ping, headers=_signed("POST", "/ping", ping, "guess")).status_code == 403
        assert http.post("/ping", content=ping,
                         headers=_signed("POST", "/ping", ping, now=time.time() - 3600)).status_code == 403
        # files: the query is signed (another path with the same signature is refused)
        listing = _signed("GET", "/files?path=.")
        assert http.get("/files?path=..%2F..", headers=listing).status_code == 403
        r = http.get("/files?path=.", headers=_signed("GET", "/files?path=."))
        assert r.status_code == 200 and "hello.txt" in r.text
        assert http.get("/raw?path=hello.txt", headers=_signed("GET", "/raw?path=hello.txt")).text == "hi"
        assert http.get("/raw?path=hello.txt", headers={"X-Bridge-Secret": SECRET}).status_code == 403


async def _report(gw, sid: str, port: int, *, secret=SECRET, nonce=None, body=None, target=None):
    body = body or json.dumps({"port": port, "auth": runner_auth.SCHEME, "node": "n1"}).encode()
    headers = {"Content-Type": "application/json",
               **_signed("POST", target or f"/kernel-callback/{sid}", body, secret, nonce=nonce)}
    return await gw.http.post(f"/kernel-callback/{sid}", content=body, headers=headers)


async def test_the_gateway_accepts_a_signed_report_once_and_then_signs_its_own_requests(gw, live_runner):
    sid = await add_session(gw, "alice", "signedrunner")
    other = await add_session(gw, "bob", "othersession")
    async with gw.app.state.db.unit_of_work() as s:
        from bridge.adapters.db.tables import SessionRow

        (await s.get(SessionRow, sid)).kernel_secret = SECRET
        (await s.get(SessionRow, other)).kernel_secret = "bobs-secret"
    assert (await _report(gw, sid, live_runner, secret="wrong")).status_code == 401
    assert (await _report(gw, other, live_runner)).status_code == 401            # alice's runner, bob's session
    assert (await _report(gw, other, live_runner, target=f"/kernel-callback/{sid}")).status_code == 401
    r = await gw.http.post(f"/kernel-callback/{sid}", json={"port": live_runner})   # unsigned
    assert r.status_code == 401
    body = json.dumps({"port": live_runner, "auth": runner_auth.SCHEME, "node": "n1"}).encode()
    nonce = runner_auth.new_nonce()
    assert (await _report(gw, sid, live_runner, nonce=nonce, body=body)).status_code == 200
    # the same report again (someone on the network replays it from their host): refused
    assert (await _report(gw, sid, live_runner, nonce=nonce, body=body)).status_code == 401
    execution = gw.app.state.execution
    async with gw.app.state.db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
    assert row.status_data["runner_auth"] == runner_auth.SCHEME and row.kernel_port == live_runner
    result = await execution.execute(row, "run-1", "print(6 * 7)")
    assert result["status"] == "finished" and result["console"] == [["stdout", "42\n"]]
    assert [f["filename"] for f in await execution.list_files(row, ".")] == ["hello.txt"]
    assert b"".join([c async for c in execution.raw(row, "hello.txt")]) == b"hi"

    async def chunks():
        yield b"uploaded"

    assert await execution.upload(row, "sub dir/new file.txt", chunks(), 8) == "sub dir/new file.txt"
    assert b"".join([c async for c in execution.raw(row, "sub dir/new file.txt")]) == b"uploaded"
    assert await execution.complete(row, "pri") is not None


async def test_a_runner_from_before_signing_still_reports_and_is_reached_the_old_way(gw):
    sid = await add_session(gw, "alice", "oldrunner")
    async with gw.app.state.db.unit_of_work() as s:
        from bridge.adapters.db.tables import SessionRow

        (await s.get(SessionRow, sid)).kernel_secret = SECRET
    assert (await gw.http.post(f"/kernel-callback/{sid}", json={"secret": "wrong", "port": 4000})).status_code == 401
    assert (await gw.http.post(f"/kernel-callback/{sid}", json={"secret": SECRET, "port": 4000})).status_code == 200
    async with gw.app.state.db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
    assert "runner_auth" not in row.status_data
    assert gw.app.state.execution._signed(row, "POST", "/execute", b"{}") == {"X-Bridge-Secret": SECRET}


def _raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the runner closes the connection (or answers and closes) within `seconds`."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False


def test_a_request_that_cannot_be_authentic_is_refused_before_its_body(live_runner):
    """The runner read up to 64 MiB of a body before looking at the signature."""
    now = int(time.time())
    for auth in ("", f"{runner_auth.HEADER}: t=1,n=0123456789abcdef,s={'0' * 64}\r\n",
                 f"{runner_auth.HEADER}: garbage\r\n",
                 # well-formed and fresh, but its MAC is not the session's: refused on the head alone
                 f"{runner_auth.HEADER}: t={now},n=0123456789abcdef,d={'0' * 64},s={'0' * 64}\r\n",
                 f"{runner_auth.HEADER}: t={'9' * 400},n=0123456789abcdef,s={'0' * 64}\r\n",
                 f"{runner_auth.HEADER}: t={now},n=0123456789abcdef,s={'é' * 64}\r\n"):
        sock = _raw(live_runner)
        sock.sendall(f"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: {4 << 20}\r\n{auth}\r\n".encode())
        with sock:
            sock.settimeout(5)
            assert sock.recv(100).startswith(b"HTTP/1.0 403")   # answered with no byte of the body sent
    with _raw(live_runner) as sock:
        sock.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 403")   # over the 8 MiB limit, whatever its signature


def test_a_slow_request_is_cut_off_but_a_signed_stream_may_idle(live_runner, monkeypatch):
    monkeypatch.setattr(runner.Handler, "timeout", 0.5)
    monkeypatch.setattr(runner, "REQUEST_TIMEOUT_S", 1.0)
    with _raw(live_runner) as slow:
        slow.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\n")   # and then nothing
        assert _closed_within(slow, 5)
    with _raw(live_runner) as drip:   # a byte now and then, each within the read timeout: the deadline cuts it
        t0 = time.monotonic()
        try:
            for ch in b"POST /ping HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100:
                drip.sendall(bytes([ch]))
                time.sleep(0.3)
                if time.monotonic() - t0 > 10:
                    break
        except OSError:
            pass
        assert time.monotonic() - t0 < 5 and _closed_within(drip, 2)
    body = json.dumps({"rows": 24, "cols": 80}).encode()
    term = _raw(live_runner)
    term.sendall(b"POST /pty HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s: %s\r\n\r\n" % (
        len(body), runner_auth.HEADER.encode(), _signed("POST", "/pty", body)[runner_auth.HEADER].encode()) + body)
    term.settimeout(5)
    assert term.recv(12).startswith(b"HTTP/1.0 200")
    time.sleep(1.5)   # three times the request timeout, idle
    command = b"echo still-$((40+2))\n"
    term.sendall(b"d" + len(command).to_bytes(4, "big") + command)
    seen, deadline = b"", time.monotonic() + 10
    while b"still-42" not in seen and time.monotonic() < deadline:
        seen += term.recv(65536)
    assert b"still-42" in seen
    term.close()


def test_connections_beyond_the_cap_are_closed_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "SECRET", SECRET)
    monkeypatch.setattr(runner, "MAX_CONNECTIONS", 2)
    server = runner.Server(("127.0.0.1", 0), runner.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        held = [_raw(port), _raw(port)]
        for sock in held:
            sock.sendall(b"POST /ping HTTP/1.1\r\n")   # each holds a thread, unfinished
        time.sleep(0.3)
        with _raw(port) as third:
            assert _closed_within(third, 2)   # the third is not served
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 40   # the held threads end when their reads fail (closed sockets)
        while time.monotonic() < deadline:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/ping", content=b"{}", headers=_signed("POST", "/ping", b"{}"))
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            assert r.status_code == 200
            break
        else:
            pytest.fail("the runner never served again after its connections were released")
    finally:
        server.shutdown()
        server.server_close()


def test_a_runner_on_a_socket_is_reached_through_its_relay(tmp_path, monkeypatch):
    """kernel_network = private: the runner serves on a Unix socket (0600) inside the kernel's own network;
    the relay on the node's network reports its TCP port and carries bytes; the runner still checks every
    signature itself."""
    work = tmp_path / "w"
    (work / ".bridge").mkdir(parents=True)
    (work / ".bridge" / "secret").write_text(SECRET + "\n")
    monkeypatch.setattr(runner, "SECRET", SECRET)
    monkeypatch.setattr(runner, "WORK", str(work))
    monkeypatch.setenv("BRIDGE_KERNEL_SECRET_FILE", str(work / ".bridge" / "secret"))
    monkeypatch.setenv("BRIDGE_KERNEL_BIND", "127.0.0.1")
    sock = str(work / ".bridge" / "runner.sock")
    server = runner.UnixServer(sock, runner.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    reported: list[int] = []
    monkeypatch.setattr(runner, "report", reported.append)
    monkeypatch.setattr(runner, "WATCH_S", 0.2)
    ended: list[int] = []
    relay = threading.Thread(target=lambda: ended.append(runner.relay(sock)), daemon=True)
    relay.start()
    try:
        deadline = time.monotonic() + 10
        while not reported and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reported, "the relay never reported its port"
        assert os.stat(sock).st_mode & 0o777 == 0o600
        with httpx.Client(base_url=f"http://127.0.0.1:{reported[0]}") as http:
            assert http.post("/ping", content=b"{}", headers=_signed("POST", "/ping", b"{}")).status_code == 200
            stale = _signed("POST", "/ping", b"{}", now=time.time() - 3600)
            assert http.post("/ping", content=b"{}", headers=stale).status_code == 403
            files = http.get("/files?path=.bridge", headers=_signed("GET", "/files?path=.bridge"))
            assert files.status_code == 200 and "runner.sock" in files.text
    finally:
        server.shutdown()
        server.server_close()
    relay.join(timeout=10)   # the runner is gone: the relay ends too (and does not end the process)
    assert ended == [0]


async def test_a_report_must_come_from_the_node_it_names(gw, monkeypatch):
    """The secret lives in the user's folder: their own code could sign a report on a login node and point
    the gateway at a listener there. A report must name one of the job's nodes and come from its address."""
    from bridge.adapters.db.tables import SessionRow
    from bridge.adapters.slurm.base import NodeInfo

    sid = await add_session(gw, "alice", "fromnode")
    async with gw.app.state.db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
        row.kernel_secret, row.nodes = SECRET, ["n1"]

    def cluster(n1_address: str | None):
        async def nodes():
            return [NodeInfo("n1", ("MIXED",), 4, 1, 4000, 0, "", "", ("debug",), n1_address),
                    NodeInfo("n2", ("IDLE",), 4, 0, 4000, 0, "", "", ("debug",), "127.0.0.1")]
        gw.app.state.sessions.facts_nodes._value = []   # read afresh
        monkeypatch.setattr(gw.app.state.sessions.slurm, "nodes", nodes)

    def report(node: str | None):
        body = json.dumps({"port": 4242, "auth": runner_auth.SCHEME, **({"node": node} if node else {})}).encode()
        return _report(gw, sid, 4242, body=body)

    cluster("10.9.9.9")   # n1 is elsewhere: a report from here (127.0.0.1) claiming n1 is refused
    r = await report("n1")
    assert r.status_code == 401 and "not from the node" in r.json()["msg"]
    assert (await report("n2")).status_code == 401    # n2 is here, but not one of the job's nodes
    assert (await report(None)).status_code == 401
    assert (await report("login1")).status_code == 401
    cluster("127.0.0.1")
    assert (await report("n1")).status_code == 200
    async with gw.app.state.db.unit_of_work() as s:
        assert (await s.get(SessionRow, sid)).kernel_port == 4242
