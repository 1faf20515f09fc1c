"""create -> RUNNING seen through the API, with and without Slurm's job-start notices, against a raw
`sbatch` -> RUNNING baseline measured in the same run (issue 18's first row).

Against the running `bai-bridge dev up` gateway (uses .bridge-dev/env): each round runs, in turn,
  baseline   `sbatch --wrap true` as alice, then squeue polled every 20 ms until the job runs (no gateway)
  notices    POST /session (batch, waits for RUNNING, as the clients do) with the gateway registered for
             PrologSlurmctld notices (slurm_plugins/bridge_notify.py)
  polling    the same with the registration file moved away: the watcher's polling alone
and prints the medians and p90s, and each gateway path minus the baseline. Writes bench/results/running.json.
    .venv/bin/python bench/running_bench.py [--runs 7]

Slurm 24.11 never starts a batch job at its submission: sbatch only asks for a scheduling pass, and slurmctld's
background thread, which wakes at each whole second, runs it (src/slurmctld/controller.c, `queue_job_scheduler`
and `_slurmctld_background`; job_allocate() is called with allocate=0 for batch jobs). Where in the second a
submission lands therefore decides most of its wait (uniform over 0-1 s). Each round draws one phase and starts
all three paths at that phase of a second, so that they are compared at the same point of Slurm's clock (a
round that started right after the previous job began would always land just after a pass).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from bridge.client.api import BackendAIClient
from bridge.devcluster.devenv import notice_file, read_env

ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))
STATE = Path(".bridge-dev")


def baseline() -> float:
    t0 = time.monotonic()
    job = subprocess.run(["chroot", str(ROOT), "runuser", "-u", "alice", "--", "sbatch", "--parsable", "-A",
                          "default", "--chdir=/tmp", "-o", "/dev/null", "--mem=256M", "--wrap", "sleep 2"],
                         check=True, capture_output=True, text=True).stdout.strip().split(";")[0]
    while True:
        state = subprocess.run(["chroot", str(ROOT), "squeue", "-h", "-j", job, "-o", "%T"], capture_output=True,
                               text=True).stdout.strip()
        if state in ("RUNNING", "COMPLETING", "COMPLETED", ""):
            return time.monotonic() - t0
        time.sleep(0.02)


def through_gateway(client: BackendAIClient) -> float:
    t0 = time.monotonic()
    created = client.request("POST", "/session", {"name": "rb-" + uuid.uuid4().hex[:6], "image": "python",
                                                   "type": "batch", "startupCommand": "sleep 2"})
    took = time.monotonic() - t0
    assert created["status"] == "RUNNING", created
    return took


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}


def at_phase(phase: float) -> None:
    """Sleep until `phase` (0-1) of the next whole second of the clock slurmctld also reads."""
    now = time.time()
    time.sleep((int(now) + 1 + phase) - now)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    env = read_env(STATE / "env")
    client = BackendAIClient(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])
    registered = notice_file(STATE)
    parked = registered.with_suffix(".parked")
    if not registered.exists():
        raise SystemExit(f"{registered} is missing: run `bai-bridge dev up` on a cluster with slurm_plugins")
    runs: dict[str, list[float]] = {"phase": [], "baseline": [], "notices": [], "polling": []}
    try:
        for _ in range(args.runs):
            phase = random.random()
            runs["phase"].append(phase)
            at_phase(phase)
            runs["baseline"].append(baseline())
            at_phase(phase)
            runs["notices"].append(through_gateway(client))
            registered.rename(parked)
            at_phase(phase)
            runs["polling"].append(through_gateway(client))
            parked.rename(registered)
            time.sleep(2.5)   # the batch jobs end: every round starts on idle nodes
    finally:
        if parked.exists():
            parked.rename(registered)
    stats = {k: summary(v) for k, v in runs.items() if k != "phase"}
    added = {k: {q: stats[k][q] - stats["baseline"][q] for q in ("p50", "p90")} for k in ("notices", "polling")}
    # paired: each round's gateway time minus the same round's baseline (same phase of Slurm's clock)
    paired = {k: summary([g - b for g, b in zip(runs[k], runs["baseline"], strict=True)])
              for k in ("notices", "polling")}
    result = {**stats, "added": added, "paired": paired}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "running.json").write_text(json.dumps({"runs": runs, **result}, indent=2))
    print("| path | p50 (s) | p90 (s) | added to the baseline, p50 / p90 (ms) |\n|---|---|---|---|")
    for k in ("baseline", "notices", "polling"):
        extra = f"{added[k]['p50'] * 1000:.0f} / {added[k]['p90'] * 1000:.0f}" if k in added else "-"
        print(f"| {k} | {stats[k]['p50']:.3f} | {stats[k]['p90']:.3f} | {extra} |")
    for k in ("notices", "polling"):
        print(f"paired, {k} minus the same round's baseline: p50 {paired[k]['p50'] * 1000:.0f} ms, "
              f"p90 {paired[k]['p90'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
