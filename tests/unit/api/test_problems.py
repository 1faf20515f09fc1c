from contextlib import asynccontextmanager

import httpx

import bridge
from bridge.api.app import create_app
from bridge.config import BridgeSettings


@asynccontextmanager
async def client(tmp_path):
    app = create_app(BridgeSettings(database={"url": f"sqlite+aiosqlite:///{tmp_path}/t.db"}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            yield c


async def test_version_probe_is_unsigned(tmp_path):
    async with client(tmp_path) as c:
        r = await c.get("/")
        assert r.status_code == 200
        assert r.json() == {"version": "v6.20220615", "manager": "22.09.0", "bridge": bridge.__version__}


async def test_framework_errors_are_problem_bodies(gw):
    r = await gw.request("GET", "/no/such/path", "alice")
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert set(r.json()) >= {"type", "title", "msg"}
    r = await gw.request("DELETE", "/manager/announcement", "alice")
    assert r.status_code == 405 and r.json()["type"].endswith("/method-not-allowed")
    r = await gw.request("PUT", "/manager/status", "root", json={"status": "sleepy"})
    assert r.status_code == 400 and r.json()["type"].endswith("/invalid-api-params") and "status" in r.json()["msg"]
