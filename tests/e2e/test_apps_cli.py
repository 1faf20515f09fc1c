"""Service ports through the real CLIs: `backend.ai app SESSION jupyter|ttyd` reach the services in the
container through the gateway's tcpproxy, and `backend.ai ssh`/`scp` go through the sshd service with the
key pair's SSH key. Services listen on Unix sockets (or speak on the runner's connection, sshd -i), so
nobody but the owner's circuits reaches them."""

from __future__ import annotations

import subprocess
import time
import uuid

import httpx
import pytest

from tests.e2e.test_admin_cli import ok
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
        out = ok(client.run("alice", "ssh", name, "-p", port, "--", "echo", "hi;", "id", "-un;", "pwd"))
        lines = out.splitlines()
        assert "hi" in lines and "/home/work" in lines
        assert "alice" in lines  # the mapped Unix user, not root and not a shared account
        (client.cwd / "up.txt").write_text("scp payload\n")
        ok(client.run("alice", "scp", name, "-p", port, "up.txt", "work@localhost:copied.txt"))
        assert "scp payload" in ok(client.run("alice", "ssh", name, "-p", port, "--", "cat", "copied.txt"))
    finally:
        ok(client.run("alice", "session", "rm", name))
