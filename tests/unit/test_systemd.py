"""The gateway under systemd without systemd: sd_notify datagrams to a socket of the test's own, the unit
files as `bai-bridge systemd-units` writes them (checked by `systemd-analyze verify` where installed), and a
real `bai-bridge serve` that says READY=1 only once its port takes connections, and STOPPING=1 at the end."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bridge import units
from bridge.adapters import systemd
from bridge.config import load_settings

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "bridge.sample.toml"


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_notify_speaks_only_under_systemd(notify_socket, monkeypatch):
    assert systemd.notify("READY=1", "STATUS=up")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=up"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.notify("READY=1")   # outside systemd: nothing, no error


def test_units_take_their_writable_paths_from_the_configuration(tmp_path):
    settings = load_settings(SAMPLE)
    rendered = units.render(settings, config=SAMPLE, user="bridge", secret_file="/etc/bai-bridge/secrets",
                            webui_venv=Path(sys.prefix), webui_config=tmp_path / "webserver.conf")
    gateway = rendered["bai-bridge.service"]
    for line in ("Type=notify", "Restart=on-failure", "User=bridge", f"Environment=BRIDGE_CONFIG={SAMPLE}",
                 "EnvironmentFile=/etc/bai-bridge/secrets", "ProtectSystem=strict",
                 f"ExecStart={Path(sys.prefix).resolve()}/bin/bai-bridge serve"):
        assert line + "\n" in gateway, line
    writable = next(x for x in gateway.splitlines() if x.startswith("ReadWritePaths=")).split("=", 1)[1].split()
    assert {f"-{settings.sessions.work_root}", f"-{settings.sessions.image_dir}", "-/home",
            *(f"-{p}" for p in settings.storage.hosts.values())} <= set(writable)
    assert f"-{SAMPLE.parent}" not in writable   # the configuration stays read-only to the gateway
    assert "\nNoNewPrivileges" not in gateway   # sudo (the user switch) needs it off
    assert "NoNewPrivileges=yes" in rendered["bai-bridge-webui.service"]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for name, text in rendered.items():
        (tmp_path / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in rendered)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_serve_says_ready_once_its_port_answers_and_stopping_at_the_end(notify_socket, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "bridge.toml"
    config.write_text(f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
                      f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/db.sqlite3"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env |= {"BRIDGE_CONFIG": str(config), "NOTIFY_SOCKET": os.environ["NOTIFY_SOCKET"]}
    assert subprocess.run([sys.executable, "-m", "bridge", "db", "upgrade"], env=env, capture_output=True,
                          timeout=120).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "bridge", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        message = notify_socket.recv(4096).decode()
        assert message.startswith("READY=1") and f"127.0.0.1:{port}" in message
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200   # it does answer
        proc.send_signal(signal.SIGTERM)
        assert notify_socket.recv(4096) == b"STOPPING=1"
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)   # uvicorn re-raises it; systemd counts it clean
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
