"""Usage from accounting, on the wire of the running gateway: a real batch session runs to its end, and what
/resource/usage/period and /resource/stats/user/month say of it matches what `sacct` prints for its job
(read here as text, apart from the gateway's own parser)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.e2e.test_session_rest import Api, wait_status

pytestmark = pytest.mark.cluster

ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


def cpu_ms(text: str) -> int:
    """sacct's TotalCPU ([D-][HH:]MM:SS[.mmm]) in milliseconds."""
    days, _, rest = text.rpartition("-")
    parts = [float(p) for p in rest.split(":")]
    seconds = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return int(round((int(days or 0) * 86400 + seconds) * 1000))


def tres(text: str, key: str) -> int:
    for item in text.split(","):
        k, _, v = item.partition("=")
        if k == key and v.isdigit():
            return int(v)
    return 0


def sacct(job_id: str) -> dict[str, int]:
    """What sacct prints of the job (elapsed, CPU time) and of its steps (peak RSS, bytes read and written)."""
    out = subprocess.run(["chroot", str(ROOT), "sacct", "-j", job_id, "-P", "-n", "--noconvert", "-o",
                          "JobID,ElapsedRaw,TotalCPU,TRESUsageInMax,TRESUsageInTot,TRESUsageOutTot"],
                         capture_output=True, text=True, check=True).stdout
    got = {"elapsed": 0, "cpu": 0, "rss": 0, "read": 0, "write": 0}
    for line in out.splitlines():
        step, elapsed, total_cpu, in_max, in_tot, out_tot = line.split("|")
        if step == job_id:   # the job's own line: elapsed time, and TotalCPU summed over its steps
            got["elapsed"], got["cpu"] = int(elapsed), cpu_ms(total_cpu)
            continue
        got["rss"] = max(got["rss"], tres(in_max, "mem"))
        got["read"] += tres(in_tot, "fs/disk")
        got["write"] += tres(out_tot, "fs/disk")
    return got


def test_a_finished_sessions_usage_matches_sacct(gateway):
    api, admin = Api(gateway), Api(gateway, "ADMIN_")
    name = "usage-" + uuid.uuid4().hex[:6]
    r = api("POST", "/session", {"name": name, "image": "python", "type": "batch",
                                 "startupCommand": "python3 -c 'print(sum(i * i for i in range(300000)))'"})
    assert r.status_code in (200, 201), r.text
    sid = r.json()["sessionId"]
    info = wait_status(api, sid, {"TERMINATED"}, timeout=120)
    job_id = info["containerId"]
    assert job_id
    expected = {}
    deadline = time.monotonic() + 30   # slurmdbd records the end of the job a moment after slurmctld
    while time.monotonic() < deadline:
        expected = sacct(job_id)
        if expected["elapsed"] or time.monotonic() > deadline - 1:
            break
        time.sleep(0.5)

    today = datetime.now(UTC).strftime("%Y%m%d")
    r = admin("GET", f"/resource/usage/period?start_date={today}&end_date={today}")
    assert r.status_code == 200, r.text
    [c] = [c for g in r.json() for c in g["c_infos"] if c["session_id"] == sid]
    assert c["container_id"] == job_id and c["name"] == name and c["status"] == "TERMINATED"
    assert c["cpu_used"] == float(expected["cpu"])
    assert c["mem_used"] == expected["rss"]
    assert (c["io_read"], c["io_write"]) == (expected["read"], expected["write"])
    assert c["cpu_allocated"] >= 1 and c["mem_allocated"] > 0 and c["used_time"] and c["used_days"] >= 1

    r = admin("GET", f"/resource/usage/month?month={today[:6]}&group_ids={c['group_id']}")
    assert r.status_code == 200 and sid in {x["session_id"] for g in r.json() for x in g["c_infos"]}
    stats = api("GET", "/resource/stats/user/month").json()
    assert len(stats) == 2880 and stats[-1]["num_sessions"]["value"] >= 0
    assert max(b["num_sessions"]["value"] for b in stats) >= 1
    assert api("POST", "/resource/recalculate-usage").status_code == 403
    assert admin("POST", "/resource/recalculate-usage").json() == {}
