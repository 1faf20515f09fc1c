"""Issue 12: the published OpenAPI schema, fuzzed with schemathesis against the whole gateway in-process.
Whatever a signed client sends, the answer is never a 5xx and never a traceback: every refusal is a
Backend.AI problem body. Slurm and the command runner are the boundaries replaced here."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from bridge.adapters.runner import Completed
from bridge.api.app import create_app
from bridge.config import BridgeSettings
from bridge.wiring import Overrides
from tests.support.fake_slurm import FakeSlurm
from tests.unit.api.conftest import HOST, Gateway, seed

# the event streams (SSE) never end, and httpx's in-process transport waits for a whole body: their
# refusals are tested end to end (tests/e2e); everything else is fuzzed
SCHEMA = schemathesis.openapi.from_dict(create_app(BridgeSettings(), start_background=False).openapi()) \
    .exclude(path_regex="^/events/")


class QuietSlurm(FakeSlurm):
    async def submit(self, spec: Any, *, user: str) -> str:
        return "4242"

    async def cancel(self, job_ids: Any, *, user: str | None = None, signal: str | None = None) -> None:
        return None


class AgreeingRunner:
    """Every command succeeds, saying what `stat` would of a user's own folder."""

    async def run(self, argv: Any, *, user: str | None = None, **_: Any) -> Completed:
        out = "".join(f"directory|{user}|700|{p}\n" for p in argv[3:]) if argv and argv[0] == "stat" else ""
        return Completed(tuple(argv), 0, out, "", 0.0)


class Live:
    """The gateway on its own event loop in a thread, for the synchronous tests schemathesis generates."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.ready: Future[Gateway] = Future()
        self.done = asyncio.run_coroutine_threadsafe(self._serve(path), self.loop)
        self.gw = self.ready.result(timeout=120)

    async def _serve(self, path: Path) -> None:
        url = f"sqlite+aiosqlite:///{path}"
        keys = await seed(url)
        app = create_app(BridgeSettings(database={"url": url}, auth={"rate_limit_per_window": 10**6}),
                         start_background=False, overrides=Overrides(slurm=QuietSlurm()))
        self.stop = asyncio.Event()
        async with app.router.lifespan_context(app):
            app.state.sessions.runner = app.state.folders.runner = AgreeingRunner()
            gw = Gateway(app, keys)
            self.ready.set_result(gw)
            await self.stop.wait()
            await gw.http.aclose()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.done.result(timeout=120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=60)
        self.loop.close()   # its self-pipe would otherwise be collected, with a ResourceWarning, mid-way a later test


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("fuzz") / "gw.db")
    yield server
    server.close()


@SCHEMA.parametrize()
@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_gateway_fail(live, case):
    path = case.formatted_path
    query = {k: v for k, v in (case.query or {}).items() if v is not None}
    path_qs = str(httpx.URL(path, params=query).raw_path.decode()) if query else path
    body = case.body if isinstance(case.body, (dict, list, str, int, float, bool)) else None
    who = "root" if path.startswith(("/admin", "/manager", "/resource")) else "alice"
    headers = live.gw.headers(case.method, path_qs, who)

    async def send() -> httpx.Response:
        return await live.gw.http.request(case.method, path_qs, headers=headers,
                                          content=json.dumps(body) if body is not None else None)

    r = live.call(send())
    assert r.status_code < 500, f"{case.method} {path_qs} {body!r} -> {r.status_code} {r.text[:500]}"
    assert "Traceback" not in r.text
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/") \
            and case.method != "HEAD":   # a HEAD answer has the problem's headers, never its body
        problem = r.json()
        assert isinstance(problem, dict) and {"type", "title", "msg"} <= set(problem), problem


def test_the_fuzzer_reaches_the_routes(live):
    """Not a fuzzer lost in 401s: signing as the generator's request is what the gateway checks."""
    r = live.call(live.gw.request("GET", "/auth/test", "alice"))
    assert r.status_code == 200
    assert len(list(SCHEMA.get_all_operations())) > 40
    assert HOST == "gw.test" and urlencode({"a": 1}) == "a=1"
