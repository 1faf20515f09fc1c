"""The terminal WebSocket (/stream/session/{ref}/pty): a real pty in the container, as the session's user."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import connect

from bridge.api import signing
from tests.e2e.test_session_rest import Api

pytestmark = pytest.mark.cluster


def ws_headers(env: dict[str, str], path: str, prefix: str = "BACKEND_") -> dict[str, str]:
    return signing.auth_headers(env[prefix + "ACCESS_KEY"], env[prefix + "SECRET_KEY"], method="GET", path_qs=path,
                                host=urlsplit(env["BACKEND_ENDPOINT"]).netloc,
                                content_type="application/octet-stream", version="v6.20220615",
                                send_content_type=False)


async def read_until(ws, needle: str, wait_s: float = 20) -> str:
    seen = ""
    async with asyncio.timeout(wait_s):
        while needle not in seen:
            msg = json.loads(await ws.recv())
            if msg["type"] == "out":
                seen += base64.b64decode(msg["data"]).decode(errors="replace")
    return seen


def stdin(text: str) -> str:
    return json.dumps({"type": "stdin", "chars": base64.b64encode(text.encode()).decode()})


def test_terminal_runs_commands_as_the_user(gateway):
    api = Api(gateway)
    sid = api("POST", "/session", {"name": "pty-" + uuid.uuid4().hex[:6], "image": "python"}).json()["sessionId"]
    path = f"/stream/session/{sid}/pty"
    url = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://") + path

    async def go() -> None:
        async with connect(url, additional_headers=ws_headers(gateway, path)) as ws:
            await ws.send(json.dumps({"type": "resize", "rows": 30, "cols": 100}))
            await ws.send(json.dumps({"type": "ping"}))
            await ws.send(stdin("echo marker-$((6*7)); id -un; stty size; pwd\n"))
            out = await read_until(ws, "/home/work")
            assert "marker-42" in out and "alice" in out and "30 100" in out
        with pytest.raises(Exception):  # noqa: B017 - bob's handshake is refused, however the library says it
            async with connect(url, additional_headers=ws_headers(gateway, path, "BOB_")) as ws:
                await ws.recv()

    try:
        asyncio.run(go())
    finally:
        api("DELETE", f"/session/{sid}")
