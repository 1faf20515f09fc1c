"""Service ports: `backend.ai app SESSION jupyter` reaches JupyterLab in the container through the gateway's
tcpproxy; the service listens on a Unix socket in the owner's folder, so nobody else reaches it."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_pty import ws_headers
from tests.e2e.test_session_rest import Api
from tests.integration.test_dev_env import free_port

pytestmark = pytest.mark.cluster


def test_jupyter_through_backend_ai_app(client, gateway):
    name = "jup-" + uuid.uuid4().hex[:6]
    out = ok(client.run("alice", "session", "create", gateway["BRIDGE_DEV_JUPYTER_IMAGE"], "-t", name))
    assert "jupyter" in out
    port = free_port()
    proxy = client.popen("alice", "app", name, "jupyter", "-b", f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/status", timeout=30)
                status = r.status_code
                if status == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert status == 200, proxy.stdout.read() if proxy.poll() is not None else status
        lab = httpx.get(f"http://127.0.0.1:{port}/lab", timeout=30)
        assert lab.status_code == 200 and "JupyterLab" in lab.text
    finally:
        proxy.terminate()
        try:
            proxy.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.communicate()
        ok(client.run("alice", "session", "rm", name))


def test_another_user_gets_no_circuit(gateway):
    alice, bob = Api(gateway), Api(gateway, "BOB_")
    sid = alice("POST", "/session", {"name": "own-" + uuid.uuid4().hex[:6],
                                     "image": gateway["BRIDGE_DEV_JUPYTER_IMAGE"]}).json()["sessionId"]
    try:
        assert [a["name"] for a in alice("GET", f"/stream/session/{sid}/apps").json()] == ["jupyter", "jupyterlab"]
        assert bob("GET", f"/stream/session/{sid}/apps").status_code == 404
        base = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://")

        async def handshake(who: str, app: str) -> bool:
            path = f"/stream/session/{sid}/tcpproxy?app={app}"
            try:
                async with connect(base + path, additional_headers=ws_headers(gateway, path, who)) as ws:
                    await ws.send(b"GET /api/status HTTP/1.0\r\n\r\n")
                    return b"200 OK" in await asyncio.wait_for(ws.recv(), 60)
            except Exception:
                return False

        assert asyncio.run(handshake("BACKEND_", "jupyter")) is True
        assert asyncio.run(handshake("BOB_", "jupyter")) is False
        assert asyncio.run(handshake("BACKEND_", "no-such-app")) is False
    finally:
        alice("DELETE", f"/session/{sid}")
