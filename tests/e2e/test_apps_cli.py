"""Service ports through the real CLIs: `backend.ai app SESSION jupyter|ttyd` reach the services in the
container through the gateway's tcpproxy, and `backend.ai ssh`/`scp` go through the sshd service with the
key pair's SSH key. Services listen on Unix sockets (or speak on the runner's connection, sshd -i), so
nobody but the owner's circuits reaches them."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api
from tests.integration.test_dev_env import free_port

pytestmark = pytest.mark.cluster


def _app_url(client, name: str, app: str, port: int) -> tuple[subprocess.Popen[str], str]:
    """Start `backend.ai app` and return it with the URL it prints (the service's url_template)."""
    proxy = client.popen("alice", "app", name, app, "-b", f"127.0.0.1:{port}")
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proxy.stdout.readline()
        if not line:
            break
        seen.append(line)
        if f"127.0.0.1:{port}" in line:
            return proxy, line.strip()
    proxy.kill()
    raise AssertionError("backend.ai app printed no address: " + "".join(seen))


def _stop(proxy: subprocess.Popen[str]) -> None:
    proxy.terminate()
    try:
        proxy.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proxy.kill()
        proxy.communicate()


def _get_until_ok(url: str, timeout: float = 90) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(url, timeout=30)
            if r.status_code == 200:
                return r
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"{url}: {last}")


def test_jupyter_and_ttyd_through_backend_ai_app(client, gateway):
    name = "jup-" + uuid.uuid4().hex[:6]
    out = ok(client.run("alice", "session", "create", gateway["BRIDGE_DEV_JUPYTER_IMAGE"], "-t", name))
    assert "jupyter" in out and "ttyd" in out and "sshd" in out
    try:
        port = free_port()
        proxy, url = _app_url(client, name, "jupyter", port)
        try:
            # the printed URL opens the app: web services run under the gateway's proxy path
            assert url.startswith(f"http://127.0.0.1:{port}/proxy/") and url.endswith("/jupyter/"), url
            assert _get_until_ok(url + "api/status").json()["kernels"] == 0
            lab = httpx.get(url + "lab", timeout=30)
            assert lab.status_code == 200 and "JupyterLab" in lab.text
        finally:
            _stop(proxy)
        port = free_port()
        proxy, url = _app_url(client, name, "ttyd", port)
        try:
            page = _get_until_ok(url)
            assert "ttyd" in page.text and "<html" in page.text.lower()
        finally:
            _stop(proxy)
    finally:
        ok(client.run("alice", "session", "rm", name))


def test_ssh_and_scp_into_a_session(client, gateway):
    name = "ssh-" + uuid.uuid4().hex[:6]
    ok(client.run("alice", "session", "create", gateway["BRIDGE_DEV_IMAGE"], "-t", name))
    (client.cwd / ".ssh").mkdir(mode=0o700, exist_ok=True)   # the clients keep the key there
    try:
        port = str(free_port())
        rc, out, _ = _through_tunnel(client, "ssh", name, "-p", port, "--", "echo", "hi;", "id", "-un;", "pwd")
        lines = out.splitlines()
        assert rc == 0 and "hi" in lines and "/home/work" in lines, out
        assert "alice" in lines  # the mapped Unix user, not root and not a shared account
        (client.cwd / "up.txt").write_text("scp payload\n")
        rc, out, _ = _through_tunnel(client, "scp", name, "-p", port, "up.txt", "work@localhost:copied.txt")
        assert rc == 0, out
        rc, out, _ = _through_tunnel(client, "ssh", name, "-p", port, "--", "cat", "copied.txt")
        assert rc == 0 and "scp payload" in out, out
    finally:
        ok(client.run("alice", "session", "rm", name))


def _children(pid: int) -> list[tuple[int, str]]:
    """The child processes of `pid`, with their command lines."""
    kids = []
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return kids
    for kid in listed:
        try:
            kids.append((int(kid), Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            pass
    return kids


def _through_tunnel(client, *args: str, timeout: float = 120) -> tuple[int, str, bool]:
    """Run `backend.ai ssh|scp ...`; return its exit status, its output, and whether its tunnel process lost
    the SIGINT that ends it (the clients' own race, docs/services.md): then, once ssh has been gone for 3 s,
    the tunnel gets another SIGINT, as its user would press Ctrl-C again."""
    proc = client.popen("alice", *args)
    deadline = time.monotonic() + timeout
    saw_ssh, ssh_gone_at, lost = False, None, False
    while True:
        try:
            out, _ = proc.communicate(timeout=0.05)
            return proc.returncode, out, lost
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"backend.ai {' '.join(args)} did not return: {proc.communicate()[0]}")
        kids = _children(proc.pid)
        ssh = [k for k, cmd in kids if cmd.split(" ", 1)[0].rsplit("/", 1)[-1] in ("ssh", "scp")]
        tunnel = [k for k, cmd in kids if " app " in cmd and " sshd " in cmd]
        saw_ssh = saw_ssh or bool(ssh)
        if saw_ssh and not ssh and tunnel:
            ssh_gone_at = ssh_gone_at or time.monotonic()
            if time.monotonic() - ssh_gone_at > 3:   # and again 3 s later, should that one be lost too
                lost, ssh_gone_at = True, time.monotonic()
                os.kill(tunnel[0], signal.SIGINT)


def test_ssh_and_scp_return_every_time(client, gateway):
    """scp and ssh through the tunnel, 25 times each and four at a time: every command returns with the
    remote side's exit status and output, and the gateway keeps no circuit open afterwards."""
    rounds = 25
    name = "sshr-" + uuid.uuid4().hex[:6]
    ok(client.run("alice", "session", "create", gateway["BRIDGE_DEV_IMAGE"], "-t", name))
    api = Api(gateway)
    before = api("GET", f"/session/{name}/tunnels").json()["circuits_total"]

    def one_round(i: int) -> bool:
        # a folder (and HOME) of its own: the clients download the session's key into the working directory
        me = dataclasses.replace(client, cwd=client.cwd / f"w{i}")
        (me.cwd / ".ssh").mkdir(mode=0o700, parents=True)
        (me.cwd / f"up{i}.txt").write_text(f"payload {i}\n")
        rc, out, lost_scp = _through_tunnel(me, "scp", name, "-p", str(free_port()), f"up{i}.txt",
                                            f"work@localhost:copied{i}.txt")
        assert rc == 0, out
        rc, out, lost_ssh = _through_tunnel(me, "ssh", name, "-p", str(free_port()), "--",
                                            "cat", f"copied{i}.txt", "&&", "exit", "3")
        assert rc == 3 and f"payload {i}" in out, out   # the remote exit status comes back
        return lost_scp or lost_ssh

    try:
        with ThreadPoolExecutor(4) as pool:
            lost = sum(pool.map(one_round, range(rounds)))
        summary = api("GET", f"/session/{name}/tunnels").json()
        assert summary["open"] == [], summary["open"]   # every circuit ended on the gateway's side
        assert summary["circuits_total"] - before >= 2 * rounds
        print(f"backend.ai {client.version}: {2 * rounds} ssh/scp runs, {lost} needed another SIGINT "
              "for their tunnel process (the client's race)")
    finally:
        ok(client.run("alice", "session", "rm", name))
