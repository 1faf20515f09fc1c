"""An in-process gateway on a fresh SQLite database with signed clients for a few users.

Slurm is the one boundary replaced here (by tests/support/fake_slurm.py: two partitions, one node, jobs in memory);
integration tests use the real cluster.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.adapters.db import engine
from bridge.api import signing
from bridge.api.app import create_app
from bridge.config import BridgeSettings
from bridge.services import accounts
from bridge.wiring import Overrides
from tests.support.fake_slurm import FakeSlurm

HOST = "gw.test"


@dataclass
class Key:
    access: str
    secret: str
    email: str


class Gateway:
    def __init__(self, app, keys: dict[str, Key]):
        self.app, self.keys = app, keys
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{HOST}")

    def headers(self, method: str, path: str, who: str, *, content_type: str = "application/json",
                version: str = "v6.20220615", date: datetime | None = None, secret: str | None = None,
                access: str | None = None) -> dict[str, str]:
        key = self.keys[who]
        return signing.auth_headers(access or key.access, secret or key.secret, method=method, path_qs=path,
                                    host=HOST, content_type=content_type, version=version, date=date)

    async def request(self, method: str, path: str, who: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.http.request(method, path, json=json, headers=self.headers(method, path, who, **kw))

    async def gql(self, who: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        r = await self.request("POST", "/admin/gql", who, json={"query": query, "variables": variables})
        assert r.status_code == 200, r.text
        return r.json()


async def seed(url: str) -> dict[str, Key]:
    await asyncio.to_thread(engine.upgrade, url)
    db = engine.Database(url)
    keys = {}
    async with db.unit_of_work() as s:
        await accounts.ensure_domain(s, "default")
        await accounts.ensure_domain(s, "other")
        await accounts.ensure_policy(s, "default")
        g = await accounts.create_group(s, name="default", slurm_account="default")
        g2 = await accounts.create_group(s, name="physics", slurm_account="phys")
        await accounts.create_group(s, name="elsewhere", domain="other", slurm_account="elsewhere")
        # ladmin: a domain admin in the superadmin's own domain, where a rank rule matters most
        for who, role, domain in [("alice", "user", "default"), ("bob", "user", "default"),
                                  ("root", "superadmin", "default"), ("dadmin", "admin", "other"),
                                  ("ladmin", "admin", "default")]:
            u = await accounts.create_user(s, email=f"{who}@x.org", username=who, password=f"{who}-pw",
                                           role=role, domain=domain, unix_user=who.replace("root", "sysadm"))
            if domain == "default":
                await accounts.add_member(s, g, u)
            if who == "bob":
                await accounts.add_member(s, g2, u)
            kp = await accounts.create_keypair(s, u)
            keys[who] = Key(kp.access_key, kp.secret_key, u.email)
    await db.dispose()
    return keys


@pytest.fixture(scope="session")
def seeded(tmp_path_factory) -> tuple[Path, dict[str, Key]]:
    """Migrate and seed once (argon2 hashing is slow on purpose); each test gets a copy of the file."""
    path = tmp_path_factory.mktemp("seed") / "gw.db"
    keys = asyncio.run(seed(f"sqlite+aiosqlite:///{path}"))
    return path, keys


@pytest.fixture
async def gw(tmp_path, seeded):
    template, keys = seeded
    shutil.copy(template, tmp_path / "gw.db")
    url = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    app = create_app(BridgeSettings(database={"url": url}, auth={"rate_limit_per_window": 30000}),
                     start_background=False, overrides=Overrides(slurm=FakeSlurm()))
    async with app.router.lifespan_context(app):
        g = Gateway(app, keys)
        yield g
        await g.http.aclose()


class SubmitForbidden(AssertionError):
    pass


@pytest.fixture
async def gw_no_submit(gw):
    """A gateway whose Slurm refuses every submission: for requests that must be refused before sbatch."""
    async def submit(*a, **kw):
        raise SubmitForbidden("nothing must reach Slurm")

    gw.app.state.slurm.submit = submit   # the one client: the sessions and the watcher hold the same
    return gw


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)
