"""Benchmark of the session layer on the real dev cluster (run as root: `bai-bridge dev-cluster up` first).

1. Slurm calls per watcher tick with 1, 50 and 200 live sessions (must stay constant: one squeue, plus one
   sacct only when a job left the queue).
2. create -> RUNNING latency through the gateway's service layer, against a raw `sbatch` -> RUNNING
   baseline (squeue polled every 20 ms) measured in the same run.

Writes bench/results/sessions.json and prints a Markdown table. Usage:
    .venv/bin/python bench/sessions_bench.py [--sizes 1,50,200] [--latency-runs 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bridge.adapters.db.engine import Database, upgrade
from bridge.adapters.runner import LocalRunner
from bridge.adapters.slurm.accounting import CliSlurmAccounting
from bridge.adapters.slurm.factory import build_runner, build_slurm_client
from bridge.config import BridgeSettings, dev_cluster_overrides
from bridge.domain.auth import AuthContext
from bridge.domain.session import SessionRequest
from bridge.services import accounts
from bridge.services.events import EventBus
from bridge.services.images import ImageResolver
from bridge.services.sessions import SessionService
from bridge.services.watcher import SessionWatcher

ROOT = Path("/srv/slurmroot")


async def setup(tmp: Path, account: str) -> tuple[BridgeSettings, Database, AuthContext]:
    settings = BridgeSettings(**{**dev_cluster_overrides(ROOT),
                                 "database": {"url": f"sqlite+aiosqlite:///{tmp}/bench.db"}})
    settings.slurm.job_tag_prefix = f"bench-{uuid.uuid4().hex[:6]}:"
    await asyncio.to_thread(upgrade, settings.database.url)
    acct = CliSlurmAccounting(LocalRunner(settings.slurm.cli.prefix), cluster=settings.slurm.cluster)
    await acct.ensure_account(account)
    await acct.ensure_association("alice", account)
    db = Database(settings.database.url)
    async with db.unit_of_work() as s:
        await accounts.ensure_domain(s, "default")
        await accounts.ensure_policy(s, "default", max_concurrent_sessions=10000)
        g = await accounts.create_group(s, name="bench", slurm_account=account)
        u = await accounts.create_user(s, email="bench@x.org", unix_user="alice")
        await accounts.add_member(s, g, u)
        kp = await accounts.create_keypair(s, u)
    auth = AuthContext(kp.access_key, u.uuid, u.email, u.username, "user", "default", "alice", False, "default",
                       30000)
    return settings, db, auth


def interactive(name: str) -> SessionRequest:
    return SessionRequest(image="python", name=name, group="bench", enqueue_only=True,
                          resources={"cpu": "1", "mem": "256m"})


async def calls_per_tick(service: SessionService, watcher: SessionWatcher, auth: AuthContext,
                         sizes: list[int], ticks: int) -> list[dict[str, float]]:
    """For each size: that many live sessions, then `ticks` watcher ticks, each timed (median and max)."""
    rows, made = [], 0
    for size in sizes:
        while made < size:
            await service.create(auth, interactive(f"w{made:04d}-{uuid.uuid4().hex[:4]}"))
            made += 1
        await watcher.tick()  # settle
        before, took = watcher.slurm_calls, []
        for _ in range(ticks):
            t0 = time.perf_counter()
            await watcher.tick()
            took.append((time.perf_counter() - t0) * 1000)
        rows.append({"live_sessions": size, "slurm_calls_per_tick": (watcher.slurm_calls - before) / ticks,
                     "tick_ms": statistics.median(took), "tick_ms_max": max(took), "ticks": ticks})
    return rows


def raw_sbatch_to_running(account: str) -> float:
    t0 = time.perf_counter()
    job = subprocess.run(["chroot", str(ROOT), "runuser", "-u", "alice", "--", "sbatch", "--parsable",
                          f"--account={account}", "--chdir=/tmp", "-o", "/dev/null", "--mem=64M",
                          "--wrap", "apptainer -s exec /srv/images/python sleep 30"],
                         capture_output=True, text=True, check=True).stdout.strip()
    while True:
        state = subprocess.run(["chroot", str(ROOT), "squeue", "-h", "-j", job, "-o", "%T"],
                               capture_output=True, text=True).stdout.strip()
        if state == "RUNNING":
            elapsed = time.perf_counter() - t0
            subprocess.run(["chroot", str(ROOT), "scancel", job])
            return elapsed
        time.sleep(0.02)


async def create_to_running(service: SessionService, auth: AuthContext) -> float:
    t0 = time.perf_counter()
    req = SessionRequest(image="python", name=f"lat-{uuid.uuid4().hex[:6]}", group="bench",
                         resources={"cpu": "1", "mem": "256m"})
    body, _ = await service.create(auth, req)
    elapsed = time.perf_counter() - t0
    assert body["status"] == "RUNNING", body
    await service.destroy(auth, body["sessionId"])
    return elapsed


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,50,200")
    ap.add_argument("--latency-runs", type=int, default=10, help="0: only the watcher's ticks")
    ap.add_argument("--ticks", type=int, default=7, help="ticks timed at each size")
    args = ap.parse_args()
    account = "bench" + uuid.uuid4().hex[:4]
    with tempfile.TemporaryDirectory() as tmp:
        settings, db, auth = await setup(Path(tmp), account)
        slurm = build_slurm_client(settings)
        runner = build_runner(settings)
        service = SessionService(db, slurm, runner, ImageResolver(runner, "/srv/images", {}), EventBus(), settings)
        watcher = SessionWatcher(db, slurm, service, floor_s=0.5, max_s=10, lost_after_s=300)
        try:
            # latency first, on an idle cluster; the watcher runs as in the gateway
            watcher.start()
            baseline = [raw_sbatch_to_running(account) for _ in range(args.latency_runs)]
            ours = [await create_to_running(service, auth) for _ in range(args.latency_runs)]
            await watcher.stop()
            ticks = await calls_per_tick(service, watcher, auth, [int(x) for x in args.sizes.split(",")], args.ticks)
        finally:
            await asyncio.to_thread(subprocess.run, ["chroot", str(ROOT), "scancel", f"--account={account}"])
            await slurm.aclose()
            await db.dispose()
    result: dict[str, object] = {"calls_per_tick": ticks}
    if baseline:
        result["latency_s"] = {"raw_sbatch_median": statistics.median(baseline),
                               "gateway_create_median": statistics.median(ours), "raw_sbatch": baseline,
                               "gateway_create": ours,
                               "ratio_median": statistics.median(ours) / statistics.median(baseline)}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sessions.json").write_text(json.dumps(result, indent=2))
    print("| live sessions | Slurm calls per watcher tick | tick duration, median / max (ms) |\n|---|---|---|")
    for r in ticks:
        print(f"| {r['live_sessions']} | {r['slurm_calls_per_tick']:.1f} | {r['tick_ms']:.0f} / "
              f"{r['tick_ms_max']:.0f} |")
    if not baseline:
        return
    lat = result["latency_s"]
    assert isinstance(lat, dict)
    print(f"\ncreate->RUNNING median {lat['gateway_create_median']:.2f} s vs raw sbatch->RUNNING median "
          f"{lat['raw_sbatch_median']:.2f} s (ratio {lat['ratio_median']:.1f}x, {args.latency_runs} runs each)")


if __name__ == "__main__":
    asyncio.run(main())
