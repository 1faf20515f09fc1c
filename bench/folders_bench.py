"""Folder transfers through the gateway against a plain copy of the same file on the same disk.

For each run, a file of --size-mb is uploaded into a folder with the clients' protocol (request-upload, then
tus: one PATCH with the whole file) and downloaded again (request-download, one GET), through the running dev
gateway, which has the folder's owner open the file. Each transfer goes both ways in the same run:
- `port`: the link as request-upload/request-download hand it out, the transfer port (storage.transfer_port;
  splice and sendfile, bridge/api/transfer_port.py), as the dev gateway is configured;
- `api`: the same token sent to the API port's own transfer routes (uvicorn, the bytes through Python).

Baselines in the same run, as root on the same storage host directory (no HTTP, no user switch):
- upload: `cp` of the source into the folder, on warm page cache; and both timed until their bytes are on
  the disk (each followed by `sync`);
- download: `cat` of the folder's file to /dev/null (the download is read to /dev/null too); and, until on
  the disk, `cp` of the folder's file to a file beside the source against the download written there.

Clients that are not the bottleneck: curl for the uploads and the downloads to /dev/null; for downloads into
a file, a small client here that moves the body from the socket to the file with splice (curl writes 16 KiB
at a time, and would measure itself). The official clients (aiohttp, Python chunks) are slower than both.

Needs `bai-bridge dev up` (uses .bridge-dev/env). Writes bench/results/folders.json.
    .venv/bin/python bench/folders_bench.py [--runs 5] [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import socket
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from bridge.client.api import BackendAIClient

ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


def link(client: BackendAIClient, kind: str, folder: str, body: dict[str, object], via: str) -> str:
    got = client.request("POST", f"/folders/{folder}/request-{kind}", body)
    url = got["url"] if via == "port" else f"{client.endpoint.rstrip('/')}/folders/_/transfer/{kind}"
    return f"{url}?token={got['token']}"


def _answer(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    got = b""
    while b"\r\n\r\n" not in got:
        more = s.recv(65536)
        assert more, "the connection closed before an answer"
        got += more
    head, rest = got.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, rest


def upload(client: BackendAIClient, folder: str, src: Path, name: str, via: str) -> float:
    """request-upload, then the file in one tus PATCH, sent with sendfile."""
    t0 = time.perf_counter()
    size = src.stat().st_size
    url = urlsplit(link(client, "upload", folder, {"path": name, "size": size}, via))
    with socket.create_connection((url.hostname, url.port)) as s, open(src, "rb") as f:
        s.sendall((f"PATCH {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nTus-Resumable: 1.0.0\r\n"
                   f"Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n"
                   f"Content-Length: {size}\r\nConnection: close\r\n\r\n").encode())
        sent = 0
        while sent < size:
            sent += os.sendfile(s.fileno(), f.fileno(), sent, size - sent)
        status, headers, _ = _answer(s)
    assert status == 204 and int(headers["upload-offset"]) == size, (status, headers)
    return time.perf_counter() - t0


def download(client: BackendAIClient, folder: str, name: str, out: Path, via: str) -> float:
    """The file into `out`, moved from the socket to the file with splice."""
    t0 = time.perf_counter()
    url = urlsplit(link(client, "download", folder, {"path": name}, via))
    with socket.create_connection((url.hostname, url.port)) as s:
        s.sendall(f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nConnection: close\r\n\r\n".encode())
        status, headers, rest = _answer(s)
        assert status == 200, status
        size = int(headers["content-length"])
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        r, w = os.pipe()
        try:
            fcntl.fcntl(w, 1031, 1 << 20)   # F_SETPIPE_SZ
            done = os.write(fd, rest)
            while done < size:
                n = os.splice(s.fileno(), w, min(1 << 20, size - done))
                assert n, "the download ended early"
                m = 0
                while m < n:
                    m += os.splice(r, fd, n - m)
                done += n
        finally:
            os.close(fd)
            os.close(r)
            os.close(w)
    return time.perf_counter() - t0


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t0


def sync() -> float:
    return timed(["sync"])


def one_run(client: BackendAIClient, folder: str, folder_dir: Path, src: Path) -> dict[str, float]:
    """Every measurement once; each starts with nothing left to write back (sync) and writes a new file."""
    row: dict[str, float] = {}
    out = src.with_suffix(".out")
    sync()
    row["cp_in_s"] = timed(["cp", str(src), str(folder_dir / "plain.bin")])
    row["cp_in_on_disk_s"] = row["cp_in_s"] + sync()
    row["cp_out_s"] = timed(["cp", str(folder_dir / "plain.bin"), str(out)])
    row["cp_out_on_disk_s"] = row["cp_out_s"] + sync()
    out.unlink()
    (folder_dir / "plain.bin").unlink()
    sync()
    for via in ("port", "api"):
        name = f"up-{via}.bin"
        row[f"upload_{via}_s"] = upload(client, folder, src, name, via)
        row[f"upload_{via}_on_disk_s"] = row[f"upload_{via}_s"] + sync()
        row[f"download_{via}_s"] = download(client, folder, name, out, via)
        row[f"download_{via}_on_disk_s"] = row[f"download_{via}_s"] + sync()
        out.unlink()
        (folder_dir / name).unlink()
        sync()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
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
    try:
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)   # warm the cache
        rows = [one_run(client, name, folder_dir, src) for _ in range(args.runs)]
    finally:
        client.request("DELETE", f"/folders/{name}")
        src.unlink()
    mb = size / 1e6
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratios = {}
    for via in ("port", "api"):
        ratios[via] = {
            "upload_vs_cp": round(med["cp_in_s"] / med[f"upload_{via}_s"], 2),
            "upload_vs_cp_on_disk": round(med["cp_in_on_disk_s"] / med[f"upload_{via}_on_disk_s"], 2),
            "download_vs_cp": round(med["cp_out_s"] / med[f"download_{via}_s"], 2),
            "download_vs_cp_on_disk": round(med["cp_out_on_disk_s"] / med[f"download_{via}_on_disk_s"], 2),
            "upload_MB_per_s": round(mb / med[f"upload_{via}_s"]),
            "download_MB_per_s": round(mb / med[f"download_{via}_s"]),
        }
    result = {"size_mb": round(mb), "runs": args.runs, "median_s": {k: round(v, 3) for k, v in med.items()},
              "ratios": ratios, "runs_s": rows}
    out = Path(__file__).parent / "results" / "folders.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs_s"}, indent=2))


if __name__ == "__main__":
    main()
