"""Folder transfers through the gateway against a plain copy of the same file on the same disk.

For each run: a file of --size-mb is uploaded into a folder with the clients' protocol (request-upload,
then tus PATCHes of 16 MiB, as `backend.ai vfolder upload` sends them) and downloaded again
(request-download, one GET, as `vfolder download`), both through the running dev gateway, which writes and
reads the file as the folder's owner. Baseline in the same run: `cp` of the same file into the same
storage host directory, as root (no HTTP, no user switch), and `cat` of it to /dev/null.
Both sides run on warm page cache, the file being smaller than memory: this measures the gateway's path,
not the disk.

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
from collections.abc import Iterator
from pathlib import Path

import httpx

from bridge.client.api import BackendAIClient

ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))
CHUNK = 16 * 1024 * 1024


def chunks(path: Path, start: int, size: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = size
        while left > 0:
            data = f.read(min(1 << 20, left))
            if not data:
                break
            left -= len(data)
            yield data


def upload(client: BackendAIClient, folder: str, src: Path) -> float:
    size = src.stat().st_size
    t0 = time.perf_counter()
    link = client.request("POST", f"/folders/{folder}/request-upload", {"path": src.name, "size": size})
    with httpx.Client(timeout=600) as http:
        offset = 0
        while offset < size:
            n = min(CHUNK, size - offset)
            r = http.patch(link["url"], params={"token": link["token"]}, content=chunks(src, offset, n),
                           headers={"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                                    "Content-Type": "application/offset+octet-stream", "Content-Length": str(n)})
            assert r.status_code == 204, r.text
            offset = int(r.headers["upload-offset"])
    return time.perf_counter() - t0


def download(client: BackendAIClient, folder: str, name: str, size: int) -> float:
    t0 = time.perf_counter()
    link = client.request("POST", f"/folders/{folder}/request-download", {"path": name})
    got = 0
    with httpx.Client(timeout=600) as http, http.stream("GET", link["url"], params={"token": link["token"]}) as r:
        assert r.status_code == 200
        for data in r.iter_bytes(1 << 20):
            got += len(data)
    assert got == size, (got, size)
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
        for _ in range(args.runs):
            cp = timed(["cp", str(src), str(folder_dir / "plain.bin")])
            cat = timed(["sh", "-c", f"cat '{folder_dir / 'plain.bin'}' > /dev/null"])
            up = upload(client, name, src)
            down = download(client, name, src.name, size)
            rows.append({"cp_s": cp, "upload_s": up, "cat_s": cat, "download_s": down})
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
        "download_vs_cat": round(med["cat_s"] / med["download_s"], 2),
        "runs_s": rows,
    }
    out = Path(__file__).parent / "results" / "folders.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs_s"}, indent=2))


if __name__ == "__main__":
    main()
