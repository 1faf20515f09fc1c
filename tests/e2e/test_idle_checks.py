"""Live utilization and idle checks on the real cluster: a running session shows sstat's figures in its
live_stat (REST and GraphQL); an interactive session without traffic is terminated with `idle-timeout` once
its keypair policy's idle_timeout has passed, while one with an open terminal is not."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from websockets.asyncio.client import connect

from tests.e2e.test_pty import read_until, stdin, ws_headers
from tests.e2e.test_session_rest import Api, wait_status

pytestmark = pytest.mark.cluster


def gql(api: Api, query: str, variables: dict | None = None) -> dict:
    res = api("POST", "/admin/gql", {"query": query, "variables": variables or {}}).json()
    assert not res.get("errors"), res
    return res["data"]


def set_idle_timeout(admin: Api, policy: str, seconds: int) -> None:
    gql(admin, "mutation($n: String!, $p: ModifyKeyPairResourcePolicyInput!) { "
               "modify_keypair_resource_policy(name: $n, props: $p) { ok msg } }",
        {"n": policy, "p": {"idle_timeout": seconds}})


def test_idle_session_is_terminated_and_a_busy_one_shows_live_stat(gateway):
    api, admin = Api(gateway), Api(gateway, "ADMIN_")
    me = gql(api, "query { keypair { access_key resource_policy } }")["keypair"]
    policy = me["resource_policy"]
    before = gql(admin, "query { keypair_resource_policies { name idle_timeout } }")["keypair_resource_policies"]
    old = next(p["idle_timeout"] for p in before if p["name"] == policy)
    tag = uuid.uuid4().hex[:6]
    idle = api("POST", "/session", {"name": f"idle-{tag}", "image": "python", "enqueueOnly": True}).json()
    busy = api("POST", "/session", {"name": f"busy-{tag}", "image": "python", "enqueueOnly": True}).json()
    idle_id, busy_id = idle["sessionId"], busy["sessionId"]
    path = f"/stream/session/{busy_id}/pty"
    url = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://") + path

    async def go() -> None:
        await asyncio.to_thread(wait_status, api, busy_id, {"RUNNING"}, 120)
        async with connect(url, additional_headers=ws_headers(gateway, path)) as ws:
            # the busy session's terminal is left open and quiet
            await ws.send(stdin("echo quiet-now\n"))
            await read_until(ws, "quiet-now", 30)
            await asyncio.to_thread(wait_status, api, idle_id, {"RUNNING"}, 120)
            await asyncio.to_thread(set_idle_timeout, admin, policy, 3)
            deadline = time.monotonic() + 120
            info: dict = {}
            while time.monotonic() < deadline:   # the idle one ends within a few monitor intervals
                info = await asyncio.to_thread(lambda: api("GET", f"/session/{idle_id}").json())
                if info["status"] in ("TERMINATED", "CANCELLED"):
                    break
                await asyncio.sleep(0.5)
            assert info["status"] == "TERMINATED" and info["statusInfo"] == "idle-timeout", info
            b = await asyncio.to_thread(lambda: api("GET", f"/session/{busy_id}").json())
            assert b["status"] == "RUNNING", b
            assert b["idleChecks"]["network_timeout"]["remaining"] == 3, b["idleChecks"]
            assert b["idleChecks"]["network_timeout"]["remaining_time_type"] == "expire_after"
            live = b["liveStat"]
            assert live and {"cpu_util", "cpu_used", "mem", "io_read", "io_write"} <= set(live), b
            # what jobacct_gather/linux measures of the job's process tree (a process the terminal starts is
            # not in it: docs/sessions.md#utilization-and-idle-checks)
            assert float(live["mem"]["current"]) > 0 and float(live["io_read"]["current"]) > 0, live
            assert live["mem"]["capacity"] and live["cpu_util"]["unit_hint"] == "percent", live
            data = await asyncio.to_thread(gql, api, "query($id: UUID!) { compute_session(id: $id) { idle_checks "
                                           "containers { live_stat last_stat } } }", {"id": busy_id})
            kernel = data["compute_session"]["containers"][0]
            assert "cpu_util" in json.loads(kernel["live_stat"])
            assert "network_timeout" in json.loads(data["compute_session"]["idle_checks"])

    try:
        asyncio.run(go())
        # the ended session keeps its last figures
        deadline = time.monotonic() + 60
        last: dict = {}
        while time.monotonic() < deadline and not last:
            last = api("GET", f"/session/{idle_id}").json()["lastStat"]
            time.sleep(0.5)
        assert "cpu_used" in last, last
    finally:
        set_idle_timeout(admin, policy, old)
        api("DELETE", f"/session/{busy_id}")
        api("DELETE", f"/session/{idle_id}")
