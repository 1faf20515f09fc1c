"""Service-port tunnels: throughput and latency of each way to a session's JupyterLab, against a direct
connection to the service measured in the same run.

Paths, all to the same JupyterLab server (HTTP/1.1):
  direct     the service's own Unix socket, opened from the host (no runner, no gateway): the baseline
  runner     the kernel runner's node port with the session secret (what the gateway itself connects to)
  tcpproxy   the gateway's WebSocket relay, as `backend.ai app` uses it (debug group: direct transport)
  tcpproxy+ssh  the same for a session of the gpu group, whose transport is SSH forwarding (login node)
  httpproxy  the gateway's browser proxy with an app-token cookie (httpx as the browser, keep-alive)
Latency: median of `GET api/status` on an open circuit. Throughput: one GET of a 64 MiB file (Jupyter's
/files/, with a same-origin Referer as a browser sends: Jupyter without a token wants one).

Needs `bai-bridge dev up` (reads .bridge-dev/env and its config for the database). Writes
bench/results/tunnels.json. Each cell of the table is the median over --rounds whole runs.
    .venv/bin/python bench/tunnel_bench.py [--mib 64] [--pings 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from bridge.adapters.db import sealed
from bridge.api.signing import auth_headers
from bridge.client.api import BackendAIClient
from bridge.config import load_settings
from bridge.devcluster.devenv import read_env
from bridge.domain import runner_auth

ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


class Stream:
    """A byte stream with `send` and `recv`: asyncio streams or a tcpproxy WebSocket."""

    def __init__(self, send: Any, recv: Any) -> None:
        self.send, self.recv, self.buf = send, recv, bytearray()

    async def _more(self) -> None:
        data = await self.recv()
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    async def get(self, path: str) -> bytes:
        await self.send(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nReferer: http://localhost/\r\n\r\n".encode())
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            await self._more()
        head = bytes(self.buf[:end])
        del self.buf[:end + 4]
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(self.buf) < length:
            await self._more()
        body = bytes(self.buf[:length])
        del self.buf[:length]
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        return body


async def asyncio_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Stream:
    async def send(data: bytes) -> None:
        writer.write(data)
        await writer.drain()

    return Stream(send, lambda: reader.read(1 << 20))


async def measure(stream: Stream, base: str, pings: int, size: int) -> dict[str, float]:
    await stream.get(base + "api/status")   # warm: the service is started, the circuit open
    lat = []
    for _ in range(pings):
        t = time.perf_counter()
        await stream.get(base + "api/status")
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    body = await stream.get(base + "files/bench.bin")
    dt = time.perf_counter() - t
    assert len(body) == size
    return {"latency_ms": statistics.median(lat) * 1000, "throughput_mib_s": size / dt / (1 << 20)}


async def bench(env: dict[str, str], db_path: str, mib: int, pings: int) -> dict[str, dict[str, float]]:
    client = BackendAIClient(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])
    results: dict[str, dict[str, float]] = {}
    sids = {}
    try:
        for group in ("debug", "gpu"):
            sids[group] = client.request("POST", "/session", {
                "name": f"tb-{group}-" + uuid.uuid4().hex[:4], "image": env["BRIDGE_DEV_JUPYTER_IMAGE"],
                "config": {"scaling_group": group, "resources": {"cpu": 2, "mem": "2g"}}})["sessionId"]
        for sid in sids.values():
            code = f"open('bench.bin', 'wb').write(os.urandom({mib << 20}))"
            client.request("POST", f"/session/{sid}", {"mode": "query", "runId": "w", "code": "import os; " + code})
            client.request("POST", f"/session/{sid}/start-service", {"app": "jupyter"})
        sid = sids["debug"]
        base = f"/proxy/{sid}/jupyter/"
        size = mib << 20
        with sqlite3.connect(db_path) as db:
            host, port, sealed_secret, work = db.execute("SELECT kernel_host, kernel_port, kernel_secret, work_dir "
                                                         "FROM sessions WHERE id = ?", (sid,)).fetchone()
        secret = sealed.unseal(sealed_secret)   # credentials are sealed at rest with the gateway's secret

        sock = ROOT / work.lstrip("/") / ".bridge" / "jupyter.sock"
        results["direct"] = await measure(await asyncio_stream(*await asyncio.open_unix_connection(
            str(sock), limit=1 << 22)), base, pings, size)

        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        body = json.dumps({"name": "jupyter", "arguments": {}, "envs": {}}).encode()
        signed = runner_auth.header(secret, "POST", "/service", body, time.time(), runner_auth.new_nonce())
        writer.write(b"POST /service HTTP/1.1\r\nHost: k\r\nContent-Type: application/json\r\n"
                     + f"{runner_auth.HEADER}: {signed}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        results["runner"] = await measure(await asyncio_stream(reader, writer), base, pings, size)

        ws_base = env["BACKEND_ENDPOINT"].replace("http://", "ws://")
        host_hdr = env["BACKEND_ENDPOINT"].split("://", 1)[1]
        for name, s in (("tcpproxy", sids["debug"]), ("tcpproxy+ssh", sids["gpu"])):
            path = f"/stream/session/{s}/tcpproxy?app=jupyter"
            headers = auth_headers(env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"], method="GET", path_qs=path,
                                   host=host_hdr, content_type="application/octet-stream", version="v6.20220615")
            async with connect(ws_base + path, additional_headers=headers, max_size=None, compression=None) as ws:
                results[name] = await measure(Stream(ws.send, ws.recv), f"/proxy/{s}/jupyter/", pings, size)

        url = client.request("POST", f"/session/{sid}/start-service", {"app": "jupyter"})["url"]
        async with httpx.AsyncClient(follow_redirects=True, timeout=300) as browser:
            await browser.get(url)

            async def send(data: bytes) -> None:
                send.path = data.split(b" ")[1].decode()  # type: ignore[attr-defined]

            async def recv() -> bytes:
                r = await browser.get(env["BACKEND_ENDPOINT"] + send.path,  # type: ignore[attr-defined]
                                      headers={"Referer": url.split("?")[0]})
                return f"HTTP/1.1 {r.status_code} OK\r\nContent-Length: {len(r.content)}\r\n\r\n".encode() + r.content

            results["httpproxy"] = await measure(Stream(send, recv), base, pings, size)
            floor = []
            for _ in range(pings):   # the framework's own floor: the gateway's unauthenticated GET /
                t = time.perf_counter()
                await browser.get(env["BACKEND_ENDPOINT"] + "/")
                floor.append(time.perf_counter() - t)
            results["httpproxy"]["gateway_get_root_ms"] = statistics.median(floor) * 1000
    finally:
        for s in sids.values():
            client.request("DELETE", f"/session/{s}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--pings", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3, help="Whole runs; the table shows the median of each cell.")
    ap.add_argument("--state-dir", default=".bridge-dev")
    args = ap.parse_args()
    env = read_env(Path(args.state_dir) / "env")
    config = tomllib.loads(Path(env["BRIDGE_CONFIG"]).read_text())
    db_path = config["database"]["url"].split(":///", 1)[1]
    sealed.use_secret(load_settings(env["BRIDGE_CONFIG"]).secret.get_secret_value())
    rounds = [asyncio.run(bench(env, db_path, args.mib, args.pings)) for _ in range(args.rounds)]
    results = {path: {k: statistics.median(r[path][k] for r in rounds) for k in rounds[0][path]}
               for path in rounds[0]}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "tunnels.json").write_text(json.dumps({"median": results, "rounds": rounds}, indent=2))
    base = results["direct"]
    print("| path | latency (ms, median) | × direct | throughput (MiB/s) | × direct |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['latency_ms']:.2f} | {r['latency_ms'] / base['latency_ms']:.1f} | "
              f"{r['throughput_mib_s']:.0f} | {r['throughput_mib_s'] / base['throughput_mib_s']:.2f} |")
    print(f"\nthe gateway's plain `GET /` with the same client: {results['httpproxy']['gateway_get_root_ms']:.2f} ms")


if __name__ == "__main__":
    main()
