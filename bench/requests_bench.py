"""Signed `GET /session/{id}` requests per second through the dev gateway, against a bare FastAPI endpoint on
the same server software (uvicorn, same options, same access log, one process) in the same run.

The gateway's side of each request: the signature check (HMAC over method, path, Date, host, version), the
replay guard, the rate limit, the key's lookup, the session's lookup and its JSON. The bare endpoint returns
a small JSON object and checks nothing. The load comes from --connections keep-alive connections, each
sending its next request when the last answer is in; every gateway request is signed beforehand with its
own Date (a signature is good once), so the client's cost is the same for both sides.

Needs `bai-bridge dev up` (uses .bridge-dev/env): one batch session (`sleep`) is created for the requests to
read, and destroyed at the end. Writes bench/results/requests.json.
    .venv/bin/python bench/requests_bench.py [--runs 5] [--seconds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from bridge.api import signing
from bridge.client.api import BackendAIClient

VERSION = "v6.20220615"


def bare_app():   # noqa: ANN201   (run as `--serve-bare PORT`)
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/session/{ref}")
    async def info(ref: str) -> dict[str, object]:
        return {"sessionId": ref, "status": "RUNNING", "type": "batch"}

    return app


def serve_bare(port: int) -> None:
    import uvicorn

    from bridge.api import access_log
    from bridge.cli import _larger_request_reads

    access_log.install()
    _larger_request_reads()
    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="info", proxy_headers=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_for(client: BackendAIClient | None, path: str, host: str, count: int) -> list[bytes]:
    """`count` requests ready to send; signed, each with a Date of its own, when a client's keys are given."""
    out = []
    base = datetime.now(UTC)
    for i in range(count):
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
        if client is not None:
            headers = signing.auth_headers(client.access_key, client.secret_key, method="GET", path_qs=path,
                                           host=host, content_type="application/json", version=VERSION,
                                           date=base + timedelta(microseconds=i))
            lines += [f"{k}: {v}" for k, v in headers.items()]
        out.append(("\r\n".join(lines) + "\r\n\r\n").encode())
    return out


async def one_connection(port: int, reqs: list[bytes], deadline: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for req in reqs:
            if time.perf_counter() >= deadline:
                return
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            assert status == 200, head[:200]
            counts[0] += 1
        raise SystemExit("ran out of prepared requests: raise --prepared")
    finally:
        writer.close()


async def rate(port: int, reqs: list[bytes], connections: int, seconds: float) -> float:
    counts = [0]
    per = len(reqs) // connections
    t0 = time.perf_counter()
    await asyncio.gather(*(one_connection(port, reqs[i * per:(i + 1) * per], t0 + seconds, counts)
                           for i in range(connections)))
    return counts[0] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--prepared", type=int, default=8000, help="signed requests prepared per run")
    ap.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        return serve_bare(args.serve_bare)
    client = BackendAIClient.from_env()
    gw = urlsplit(client.endpoint)
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(bare_port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    created = client.request("POST", "/session", {
        "image": os.environ.get("BRIDGE_DEV_IMAGE", "python"), "sessionName": f"reqbench{os.getpid()}",
        "sessionType": "batch", "startupCommand": "sleep 600", "config": {}})
    sid = created["sessionId"]
    path = f"/session/{sid}"
    rows = []
    try:
        for _ in range(50):   # the bare server is up
            try:
                socket.create_connection(("127.0.0.1", bare_port)).close()
                break
            except OSError:
                time.sleep(0.1)
        for _ in range(args.runs):
            signed = requests_for(client, path, gw.netloc, args.prepared)
            plain = requests_for(None, path, f"127.0.0.1:{bare_port}", 1) * 400_000   # the same bytes each time
            gateway = asyncio.run(rate(gw.port or 80, signed, args.connections, args.seconds))
            baseline = asyncio.run(rate(bare_port, plain, args.connections, args.seconds))
            rows.append({"gateway_rps": round(gateway), "bare_rps": round(baseline)})
    finally:
        client.request("DELETE", path)
        bare.terminate()
        bare.wait()
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    result = {"runs": args.runs, "seconds": args.seconds, "connections": args.connections, "median": med,
              "ratio": round(med["gateway_rps"] / med["bare_rps"], 2), "rows": rows}
    out = Path(__file__).parent / "results" / "requests.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
