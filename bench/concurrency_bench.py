"""50 concurrent session creations while 500 signed requests run (issue 18's last row): no error, no session
lost, and the p95 of each.

Against the running `bai-bridge dev up` gateway (uses .bridge-dev/env). The admin raises the default
policy's concurrent sessions (and restores it after). Then, at once:
- --creates batch sessions (`true`, 256 MiB, enqueueOnly) are created by alice, all at the same moment;
- --requests signed `GET /session/{id}` (alice's own session, made beforehand) go over 8 connections.
Every created session must then end TERMINATED with result SUCCESS (none lost, none stuck), within
--settle-s. A baseline in the same run: the same requests with no creation under way.
Writes bench/results/concurrency.json.
    .venv/bin/python bench/concurrency_bench.py [--creates 50] [--requests 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bridge.api import signing
from bridge.client.api import BackendAIClient

VERSION = "v6.20220615"


class Signed:
    def __init__(self, endpoint: str, access: str, secret: str, connections: int = 8) -> None:
        self.access, self.secret, self.host = access, secret, urlsplit(endpoint).netloc
        self.http = httpx.AsyncClient(base_url=endpoint, timeout=120,
                                      limits=httpx.Limits(max_connections=connections))

    async def __call__(self, method: str, path: str, body: Any = None) -> tuple[int, float, Any]:
        headers = signing.auth_headers(self.access, self.secret, method=method, path_qs=path, host=self.host,
                                       content_type="application/json", version=VERSION)
        t0 = time.perf_counter()
        r = await self.http.request(method, path, headers=headers,
                                    content=json.dumps(body) if body is not None else None)
        return r.status_code, time.perf_counter() - t0, r.json() if r.content else None


def p95(xs: list[float]) -> float:
    return round(sorted(xs)[max(int(len(xs) * 0.95) - 1, 0)] * 1000, 1) if xs else 0.0


async def requests(call: Signed, path: str, n: int, parallel: int = 8) -> tuple[list[float], list[int]]:
    times: list[float] = []
    errors: list[int] = []
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            queue.pop()
            status, took, _ = await call("GET", path)
            (times if status == 200 else errors).append(took if status == 200 else status)

    await asyncio.gather(*(worker() for _ in range(parallel)))
    return times, errors


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--creates", type=int, default=50)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--settle-s", type=float, default=600)
    args = ap.parse_args()
    env = os.environ
    admin = BackendAIClient(env["BACKEND_ENDPOINT"], env["ADMIN_ACCESS_KEY"], env["ADMIN_SECRET_KEY"])
    alice = Signed(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])
    policy = admin.request("POST", "/admin/gql", {"query": "{ keypair_resource_policy(name: \"default\") "
                                                           "{ max_concurrent_sessions } }"})
    before = policy["data"]["keypair_resource_policy"]["max_concurrent_sessions"]
    mutation = ("mutation($p: ModifyKeyPairResourcePolicyInput!) { modify_keypair_resource_policy(name: \"default\", "
                "props: $p) { ok msg } }")
    admin.request("POST", "/admin/gql", {"query": mutation, "variables": {"p": {"max_concurrent_sessions":
                                                                               args.creates + 10}}})
    tag = uuid.uuid4().hex[:6]
    try:
        status, _, probe = await alice("POST", "/session", {
            "name": f"cc-probe-{tag}", "image": "python", "type": "batch", "startupCommand": "sleep 600",
            "enqueueOnly": True, "resources": {"mem": "256m"}})
        assert status in (200, 201), probe
        path = f"/session/{probe['sessionId']}"
        base_times, base_errors = await requests(alice, path, args.requests)

        async def create(i: int) -> tuple[int, float, Any]:
            return await alice("POST", "/session", {
                "name": f"cc-{tag}-{i}", "image": "python", "type": "batch", "startupCommand": "true",
                "enqueueOnly": True, "resources": {"mem": "256m"}})

        t0 = time.perf_counter()
        created, (load_times, load_errors) = await asyncio.gather(
            asyncio.gather(*(create(i) for i in range(args.creates))), requests(alice, path, args.requests))
        burst_s = time.perf_counter() - t0
        create_times = [took for status, took, _ in created if status in (200, 201)]
        create_errors = [(status, body) for status, _, body in created if status not in (200, 201)]
        ids = [body["sessionId"] for status, _, body in created if status in (200, 201)]
        ended: dict[str, str] = {}
        deadline = time.monotonic() + args.settle_s
        while len(ended) < len(ids) and time.monotonic() < deadline:
            for sid in ids:
                if sid not in ended:
                    _, _, info = await alice("GET", f"/session/{sid}")
                    if info and info.get("status") in ("TERMINATED", "CANCELLED", "ERROR"):
                        ended[sid] = f"{info['status']}/{info.get('result')}"
            await asyncio.sleep(1)
        outcome: dict[str, int] = {}
        for sid in ids:
            key = ended.get(sid, "not ended")
            outcome[key] = outcome.get(key, 0) + 1
        await alice("DELETE", path)
    finally:
        admin.request("POST", "/admin/gql", {"query": mutation, "variables": {"p": {"max_concurrent_sessions":
                                                                                   before}}})
    result = {
        "creates": args.creates, "requests": args.requests, "burst_s": round(burst_s, 2),
        "create_ms": {"p50": round(statistics.median(create_times) * 1000, 1) if create_times else None,
                      "p95": p95(create_times)},
        "create_errors": create_errors, "sessions_by_outcome": outcome,
        "requests_ms_under_load": {"p50": round(statistics.median(load_times) * 1000, 1), "p95": p95(load_times)},
        "request_errors_under_load": load_errors,
        "requests_ms_baseline": {"p50": round(statistics.median(base_times) * 1000, 1), "p95": p95(base_times)},
        "request_errors_baseline": base_errors,
    }
    out = Path(__file__).parent / "results" / "concurrency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
