"""Session create -> first code result, split into its parts, through the running dev gateway's API.

For each run: POST /session (interactive, waits for RUNNING), then POST /session/{id} with a query. The
timeline, in seconds from the create request (same machine, one clock):
  running_seen   the watcher saw the job RUNNING (Slurm queue + the watcher's next look)
  runner_ready   the kernel runner inside Apptainer reported its port (Slurm queue + container start +
                 runner start; it may come before running_seen, the two run in parallel)
  first_result   the first query's answer reached the client
Baseline in the same run: `sbatch` of `apptainer exec <image> python3 -c 'print(1)'` until its output
exists (Slurm + container start + Python, no gateway). Rounds alternate the two and start both at one drawn
phase of a second (Slurm starts batch jobs at its passes, once a second: bench/running_bench.py says why).

Needs `bai-bridge dev up` (uses .bridge-dev/env). Writes bench/results/first_result.json.
    .venv/bin/python bench/first_result_bench.py [--runs 5]
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
from datetime import datetime
from pathlib import Path

from running_bench import at_phase  # bench/, beside this script

from bridge.client.api import BackendAIClient
from bridge.devcluster.devenv import read_env

ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


def ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def one(client: BackendAIClient) -> dict[str, float]:
    t0 = time.time()
    created = client.request("POST", "/session", {"name": "fr-" + uuid.uuid4().hex[:6], "image": "python"})
    t_created = time.time()
    sid = created["sessionId"]
    try:
        res = client.request("POST", f"/session/{sid}", {"mode": "query", "runId": "r", "code": "print(1)"})
        t_result = time.time()
        assert res["result"]["console"] == [["stdout", "1\n"]], res
        info = client.request("GET", f"/session/{sid}")
        t_ready = ts(info["statusData"]["kernel_ready_at"])
        return {"running_seen": t_created - t0, "runner_ready": t_ready - t0, "first_result": t_result - t0}
    finally:
        client.request("DELETE", f"/session/{sid}")


def baseline() -> float:
    out = f"/tmp/bench-baseline-{uuid.uuid4().hex[:6]}.out"
    t0 = time.time()
    subprocess.run(["chroot", str(ROOT), "runuser", "-u", "alice", "--", "sbatch", "--parsable", "-A", "default",
                    "--chdir=/tmp", "-o", out, "--mem=256M", "--wrap",
                    "apptainer -s exec /srv/images/python python3 -c 'print(1)'"], check=True, capture_output=True)
    path = ROOT / out.lstrip("/")
    while not (path.exists() and path.read_text().strip() == "1"):
        time.sleep(0.02)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    env = read_env(Path(".bridge-dev/env"))
    client = BackendAIClient(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])
    runs, base, phases = [], [], []
    for _ in range(args.runs):
        phases.append(random.random())
        at_phase(phases[-1])
        base.append(baseline())
        at_phase(phases[-1])
        runs.append(one(client))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    paired = statistics.median(r["first_result"] - b for r, b in zip(runs, base, strict=True))
    result = {"runs": runs, "phases": phases, "median_s": med, "baseline_sbatch_apptainer_python_s": base,
              "baseline_median_s": statistics.median(base), "paired_added_median_s": paired}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "first_result.json").write_text(json.dumps(result, indent=2))
    print("| milestone (from the create request) | median (s) |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| baseline: sbatch + apptainer + python3, no gateway | {result['baseline_median_s']:.2f} |")
    print(f"added: {(med['first_result'] - statistics.median(base)) * 1000:.0f} ms (medians), "
          f"{paired * 1000:.0f} ms (paired median)")


if __name__ == "__main__":
    main()
