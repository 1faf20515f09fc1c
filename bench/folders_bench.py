"""Folder transfers through the gateway against a plain copy of the same file on the same disk.

For each run: a file of --size-mb is uploaded into a folder with the clients' protocol (request-upload,
then tus: one PATCH with the whole file) and downloaded again (request-download, one GET), both through the
running dev gateway, which has the folder's owner open the file and then writes and reads it. The HTTP
client is curl: the Python clients (httpx here, aiohttp in `backend.ai`) cost more CPU than the gateway and
would measure themselves. Baseline in the same run: `cp` of the same file into the same
storage host directory, as root (no HTTP, no user switch), and `cat` of it to /dev/null.
Both sides run on warm page cache, the file being smaller than memory: `upload_vs_cp` measures the
gateway's path, not the disk. `upload_vs_cp_on_disk` times both until their bytes are on the disk (each
followed by `sync`): what a copy onto the same disk costs when the disk, not memory, takes the bytes.

Needs `bai-bridge dev up` (uses .bridge-dev/env). Writes bench/results/folders.json.
    .venv/bin/python bench/folders_bench.py [--runs 3] [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
import uuid
from pathlib import Path

from bridge.client.api import BackendAIClient

ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


def curl(*args: str) -> str:
    done = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *args], capture_output=True,
                          text=True, check=True)
    return done.stdout


def upload(client: BackendAIClient, folder: str, src: Path) -> float:
    """request-upload, then the file in one tus PATCH (curl: a client that is not the bottleneck)."""
    size = src.stat().st_size
    t0 = time.perf_counter()
    link = client.request("POST", f"/folders/{folder}/request-upload", {"path": src.name, "size": size})
    status = curl("-X", "PATCH", "-T", str(src), "-H", "Tus-Resumable: 1.0.0", "-H", "Upload-Offset: 0",
                  "-H", "Content-Type: application/offset+octet-stream", f"{link['url']}?token={link['token']}")
    assert status == "204", status
    return time.perf_counter() - t0


def download(client: BackendAIClient, folder: str, name: str, size: int) -> float:
    t0 = time.perf_counter()
    link = client.request("POST", f"/folders/{folder}/request-download", {"path": name})
    assert curl(f"{link['url']}?token={link['token']}") == "200"
    return time.perf_counter() - t0


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mb", type=int, default=1024)
    args = ap.parse_args()
    client = BackendAIClient.from_env()
    name = "bench-" + uuid.uuid4().hex[:6]
    created = client.request("POST", "/folders", {"name": name, "host": "local"})
    src = ROOT / "srv/shared" / f"{name}.bin"
    subprocess.run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={args.size_mb}", "status=none"],
                   check=True)
    size = src.stat().st_size
    folder_dir = ROOT / "srv/shared/vfolders/alice" / created["id"]
    rows = []
    try:
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)   # warm the cache
        for _ in range(args.runs):   # each step starts with nothing left to write back (sync)
            subprocess.run(["sync"], check=True)
            cp = timed(["cp", str(src), str(folder_dir / "plain.bin")])
            cp_synced = cp + timed(["sync"])   # until the copy is on the disk
            cat = timed(["sh", "-c", f"cat '{folder_dir / 'plain.bin'}' > /dev/null"])
            up = upload(client, name, src)
            up_synced = up + timed(["sync"])
            down = download(client, name, src.name, size)
            rows.append({"cp_s": cp, "upload_s": up, "cp_on_disk_s": cp_synced, "upload_on_disk_s": up_synced,
                         "cat_s": cat, "download_s": down})
            os.unlink(folder_dir / "plain.bin")
    finally:
        client.request("DELETE", f"/folders/{name}")
        src.unlink()
    mb = size / 1e6
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {
        "size_mb": round(mb), "runs": args.runs, "median_s": {k: round(v, 3) for k, v in med.items()},
        "MB_per_s": {"cp": round(mb / med["cp_s"]), "upload": round(mb / med["upload_s"]),
                     "cat": round(mb / med["cat_s"]), "download": round(mb / med["download_s"])},
        "upload_vs_cp": round(med["cp_s"] / med["upload_s"], 2),
        "upload_vs_cp_on_disk": round(med["cp_on_disk_s"] / med["upload_on_disk_s"], 2),
        "download_vs_cat": round(med["cat_s"] / med["download_s"], 2),
        "runs_s": rows,
    }
    out = Path(__file__).parent / "results" / "folders.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs_s"}, indent=2))


if __name__ == "__main__":
    main()
