"""`bai-bridge dev up|down`: the contract every later test and every new user relies on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bridge.devcluster.devenv import read_env

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bai_bridge(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # the gateway's own settings stay out; the dev cluster's (BRIDGE_DEV_*: root, GPUs, cgroups) pass through
    passed = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_") or k.startswith("BRIDGE_DEV_")}
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=cwd, env=passed | (env or {}), text=True,
                          capture_output=True, timeout=300)


def test_dev_up_writes_keys_starts_a_gateway_runs_a_first_job_and_dev_down_stops_it(cluster, tmp_path):
    port = free_port()
    state = tmp_path / "state"
    up = bai_bridge("dev", "up", "--no-webui", "--state-dir", str(state), "--port", str(port), cwd=tmp_path)
    assert up.returncode == 0, up.stderr + up.stdout
    assert "first session" in up.stdout and "as uid 1001 in /home/work" in up.stdout
    assert "CUDA_VISIBLE_DEVICES=0" in up.stdout
    env = read_env(state / "env")
    for prefix in ("BACKEND_", "BOB_", "ADMIN_"):
        assert env[prefix + "ACCESS_KEY"].startswith("AKIA") and len(env[prefix + "SECRET_KEY"]) == 40
    assert len({env["BACKEND_ACCESS_KEY"], env["BOB_ACCESS_KEY"], env["ADMIN_ACCESS_KEY"]}) == 3
    assert env["BACKEND_ENDPOINT"] == f"http://127.0.0.1:{port}" and env["BRIDGE_DEV_IMAGE"] == "python"
    assert env["BRIDGE_DEV_JUPYTER_IMAGE"] == "python-jupyter"
    assert (state / "env").stat().st_mode & 0o077 == 0  # secrets: owner only
    assert httpx.get(env["BACKEND_ENDPOINT"] + "/").json()["version"] == "v6.20220615"

    again = bai_bridge("dev", "up", "--no-webui", "--state-dir", str(state), "--port", str(port), "--no-first-job",
                       cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert read_env(state / "env") == env  # idempotent: same keys, same gateway

    pid = int((state / "gateway.pid").read_text())
    down = bai_bridge("dev", "down", "--state-dir", str(state), cwd=tmp_path)
    assert down.returncode == 0 and "gateway stopped" in down.stdout
    assert not (state / "gateway.pid").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(env["BACKEND_ENDPOINT"] + "/", timeout=2)
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "Z" in status.read_text().split("State:")[1].split()[0]
