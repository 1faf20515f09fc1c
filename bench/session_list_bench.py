"""`compute_session_list` (a page of 50) with 10,000 sessions in the database: the WebUI's session list.

A fresh database (PostgreSQL from BRIDGE_TEST_POSTGRES_DSN, which `scripts/postgres.sh` prints, or --db) is
migrated and given --sessions sessions of two users in one project (most of them ended, as on a site that
has run for a while), then the gateway app answers signed GraphQL requests in process (httpx's ASGI
transport: the app's own cost, no sockets). Each query runs --runs times after 5 warm-up runs:
- alice's running tab (`status: "PENDING,SCHEDULED,PREPARING,PULLING,RUNNING,..."`, the WebUI's list);
- alice's finished tab, first page and a page 4,000 sessions deep;
- the superadmin's list of everyone's sessions;
- the baseline: a signed GraphQL request that reads nothing (`{ __typename }`), same app, same run.

Writes bench/results/session_list.json. Usage:
    BRIDGE_TEST_POSTGRES_DSN=$(bash scripts/postgres.sh) .venv/bin/python bench/session_list_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from bridge.adapters.db.engine import Database, upgrade
from bridge.adapters.db.tables import SessionRow
from bridge.api import signing
from bridge.api.app import create_app
from bridge.config import BridgeSettings
from bridge.services import accounts

FIELDS = ("id session_id name status status_info created_at terminated_at occupied_slots occupying_slots "
          "access_key image type mounts result group_id domain_name containers { container_id agent }")
LIVE = "PENDING,SCHEDULED,PREPARING,PULLING,RUNNING,RESTARTING,TERMINATING,RESIZING,SUSPENDED,ERROR"
QUERY = ("query($limit: Int!, $offset: Int!, $status: String) { compute_session_list(limit: $limit, "
         f"offset: $offset, status: $status) {{ items {{ {FIELDS} }} total_count }} }}")


async def seed(url: str, sessions: int) -> dict[str, tuple[str, str]]:
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    keys = {}
    async with db.unit_of_work() as s:
        await accounts.ensure_domain(s, "default")
        await accounts.ensure_policy(s, "default")
        g = await accounts.create_group(s, name="default", slurm_account="default")
        users = {}
        for who, role in (("alice", "user"), ("bob", "user"), ("root", "superadmin")):
            u = await accounts.create_user(s, email=f"{who}@x.org", username=who, password=f"{who}-pw", role=role,
                                           unix_user=who.replace("root", "sysadm"))
            await accounts.add_member(s, g, u)
            kp = await accounts.create_keypair(s, u)
            keys[who], users[who] = (kp.access_key, kp.secret_key), (u, kp.access_key)
        group_id = g.id
    start = datetime.now(UTC) - timedelta(days=365)
    for batch in range(0, sessions, 1000):
        async with db.unit_of_work() as s:
            for i in range(batch, min(batch + 1000, sessions)):
                u, ak = users["alice" if i % 10 else "bob"]
                status = "RUNNING" if i % 20 == 0 else "PENDING" if i % 50 == 1 else "TERMINATED"
                created = start + timedelta(minutes=i * 50)
                s.add(SessionRow(
                    id=str(uuid.uuid4()), name=f"s{i}", access_key=ak, user_uuid=u.uuid, domain_name="default",
                    group_id=group_id, unix_user=u.unix_user, slurm_account="default", partition="debug",
                    image="cr.backend.ai/stable/python:3.11-ubuntu22.04", image_path="/images/python.sif",
                    status=status, job_id=str(10_000 + i), job_tag=f"bench:{i}", work_dir=f"/work/{i}",
                    resources={"cpu": 1, "mem": 1 << 30}, created_at=created, status_changed=created,
                    terminated_at=created + timedelta(minutes=30) if status == "TERMINATED" else None,
                    result="SUCCESS" if status == "TERMINATED" else "UNDEFINED", nodes=["node1"]))
    await db.dispose()
    return keys


async def timed(http: httpx.AsyncClient, key: tuple[str, str], query: str, variables: dict[str, object],
                runs: int) -> dict[str, float]:
    body = json.dumps({"query": query, "variables": variables})
    times = []
    for i in range(runs + 5):
        headers = signing.auth_headers(key[0], key[1], method="POST", path_qs="/admin/gql", host="bench",
                                       content_type="application/json", version="v6.20220615")
        t0 = time.perf_counter()
        r = await http.post("/admin/gql", content=body, headers=headers)
        took = time.perf_counter() - t0
        assert r.status_code == 200 and "errors" not in r.json(), r.text[:300]
        if i >= 5:
            times.append(took * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(len(times) * 0.95) - 1], 1),
            "items": len((r.json()["data"].get("compute_session_list") or {}).get("items", []))}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--db", help="a database URL (default: a new database on BRIDGE_TEST_POSTGRES_DSN)")
    args = ap.parse_args()
    dsn, made = args.db, None
    if dsn is None:
        base = os.environ.get("BRIDGE_TEST_POSTGRES_DSN")
        if not base:
            raise SystemExit("set BRIDGE_TEST_POSTGRES_DSN (bash scripts/postgres.sh prints one) or pass --db")
        made = "bridge_bench_" + uuid.uuid4().hex[:6]
        admin = await asyncpg.connect(base.replace("postgresql+asyncpg://", "postgresql://"))
        await admin.execute(f'CREATE DATABASE "{made}"')
        dsn = base.rsplit("/", 1)[0] + "/" + made
    try:
        keys = await seed(dsn, args.sessions)
        app = create_app(BridgeSettings(database={"url": dsn}), start_background=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench") as http:
            rows = {
                "baseline: { __typename }": await timed(http, keys["alice"], "{ __typename }", {}, args.runs),
                "alice, running tab": await timed(http, keys["alice"], QUERY,
                                                  {"limit": 50, "offset": 0, "status": LIVE}, args.runs),
                "alice, finished tab": await timed(http, keys["alice"], QUERY,
                                                   {"limit": 50, "offset": 0, "status": "TERMINATED,CANCELLED"},
                                                   args.runs),
                "alice, finished tab, offset 4000": await timed(
                    http, keys["alice"], QUERY, {"limit": 50, "offset": 4000, "status": "TERMINATED,CANCELLED"},
                    args.runs),
                "superadmin, all sessions": await timed(http, keys["root"], QUERY, {"limit": 50, "offset": 0},
                                                        args.runs),
            }
    finally:
        if made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)')
            await admin.close()
    result = {"sessions": args.sessions, "runs": args.runs, "database": dsn.split(":", 1)[0], "rows": rows}
    out = Path(__file__).parent / "results" / "session_list.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| query | p50 ms | p95 ms | items |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['p50_ms']} | {r['p95_ms']} | {r['items']} |")


if __name__ == "__main__":
    asyncio.run(main())
