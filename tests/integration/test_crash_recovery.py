"""SIGKILL the gateway in the middle of concurrent creations, restart it: no orphan job stays in Slurm and
every session ends in a correct state (ran and succeeded, or cancelled before it reached Slurm)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bridge.api import signing
from tests.integration.test_dev_env import bai_bridge, free_port, read_env

pytestmark = pytest.mark.cluster


def signed_post(env: dict[str, str], path: str, body: dict) -> httpx.Request:
    headers = signing.auth_headers(env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"], method="POST", path_qs=path,
                                   host=urlsplit(env["BACKEND_ENDPOINT"]).netloc, content_type="application/json",
                                   version="v6.20220615")
    return httpx.Request("POST", env["BACKEND_ENDPOINT"] + path, json=body, headers=headers)


async def fire(env: dict[str, str], n: int) -> list[object]:
    async with httpx.AsyncClient(timeout=30) as client:
        async def one(i: int) -> object:
            body = {"name": f"crash-{i}-{os.getpid()}", "image": "python", "type": "batch", "enqueueOnly": True,
                    "startupCommand": "sleep 2; echo ran"}
            try:
                return (await client.send(signed_post(env, "/session", body))).status_code
            except httpx.HTTPError as e:
                return type(e).__name__
        return await asyncio.gather(*(one(i) for i in range(n)))


def tagged_jobs(root: Path, prefix: str) -> list[tuple[str, str, str]]:
    out = subprocess.run(["chroot", str(root), "squeue", "-h", "-t", "all", "-o", "%i|%T|%k"],
                         capture_output=True, text=True).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines() if prefix in line]  # type: ignore[misc]


def test_sigkill_during_creations_leaves_no_orphan(cluster, tmp_path):
    state, port = tmp_path / "state", free_port()
    up = bai_bridge("dev", "up", "--no-webui", "--state-dir", str(state), "--port", str(port), "--no-first-job",
                    cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    env = read_env(state / "env")
    prefix = f"bridge-{(state / 'instance-id').read_text().strip()}:"
    pid = int((state / "gateway.pid").read_text())

    def recorded() -> int:
        try:
            with sqlite3.connect(state / "bridge.sqlite3", timeout=1) as db:
                return db.execute("SELECT count(*) FROM sessions").fetchone()[0]
        except sqlite3.Error:
            return 0

    async def crash() -> list[object]:
        task = asyncio.create_task(fire(env, 8))
        # the kill lands once the first session is written: some creations done, some mid-way (a fixed
        # pause was too short on a loaded machine, and then nothing had been written at all)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if await asyncio.to_thread(recorded):
                break
            await asyncio.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        return await task

    results = asyncio.run(crash())
    assert any(r == 201 for r in results) or any(isinstance(r, str) for r in results), results
    time.sleep(0.5)
    up = bai_bridge("dev", "up", "--no-webui", "--state-dir", str(state), "--port", str(port), "--no-first-job",
                    cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    try:
        db = sqlite3.connect(state / "bridge.sqlite3")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            rows = db.execute("SELECT id, status, status_info, result, job_id FROM sessions").fetchall()
            if rows and all(r[1] in ("TERMINATED", "CANCELLED", "ERROR") for r in rows):
                break
            time.sleep(1)
        assert rows, "no session was recorded before the kill"
        print("requests:", results, "\nsessions:", rows)
        for sid, status, info, result, job_id in rows:
            if job_id is None:
                assert status == "CANCELLED" and info.startswith("failed-to-start"), (sid, status, info)
            else:
                assert (status, result) == ("TERMINATED", "SUCCESS"), (sid, status, info, result)
        known = {r[0] for r in rows}
        for job_id, state_, comment in tagged_jobs(cluster, prefix):
            assert comment[len(prefix):] in known, f"orphan job {job_id} ({state_}) tagged {comment}"
            assert state_ in ("COMPLETED", "CANCELLED", "FAILED"), (job_id, state_)
    finally:
        bai_bridge("dev", "down", "--state-dir", str(state), cwd=tmp_path)
