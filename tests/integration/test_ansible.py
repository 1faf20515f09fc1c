"""ansible/ run for real against this machine (a local connection), into a folder of the test's own: the
gateway's role installs the wheel built from the checkout into a venv, renders its configuration (TOML that
the gateway reads back as given) and its secrets (0600), upgrades the database and installs the systemd unit;
the Slurm role installs the plugins into a copy of the dev cluster's slurm.conf folder; the compute role
makes the shared folders. A second run changes nothing. Services are left alone (no systemd here)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.integration.test_dev_env import free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "ansible-test-secret-0123456789"
JWT_KEY = "jwt-key-of-the-test-0123456789abcdefghij"


def head_revision() -> str:
    """The newest migration of the checkout (what `db upgrade` brings a new installation to)."""
    from alembic.script import ScriptDirectory

    from bridge.adapters.db.engine import alembic_config

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def playbook(tmp_path: Path, extra: dict, groups: tuple[str, ...] = ("gateway", "slurm_controller", "compute")
             ) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory.ini"
    host = f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}"
    inventory.write_text("".join(f"[{g}]\n{host}\n" for g in groups))
    (tmp_path / "vars.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_STDOUT_CALLBACK": "default"}
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                           str(REPO / "ansible/site.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                          capture_output=True, text=True, env=env, timeout=900)


def recap(out: str, host: str = "localhost") -> dict[str, int]:
    """The PLAY RECAP counts of `host`."""
    line = next(x for x in out.splitlines() if x.startswith(host + " ") and "ok=" in x)
    return {k: int(v) for k, v in (part.split("=") for part in line.split(":", 1)[1].split())}


def test_the_playbook_installs_the_gateway_and_a_second_run_changes_nothing(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("bai_bridge-*.whl"))
    slurm = tmp_path / "etc/slurm"
    slurm.mkdir(parents=True)
    (slurm / "slurm.conf").write_text("ClusterName=test\nSlurmctldHost=localhost\n")
    (tmp_path / "units").mkdir()   # /etc/systemd/system on a real host
    settings = {"mode": "production", "server": {"host": "127.0.0.1", "port": 8090,
                                                 "public_url": "https://bai.example.org",
                                                 "apps_domain": "apps.bai.example.org"},
                "images": {"pull_user": "nobody"}, "slurm": {"job_tag_prefix": "bridge-site:"},
                "storage": {"hosts": {"local": str(tmp_path / "shared/vfolders")}, "transfer_port": 8091,
                            "transfer_url": "https://files.bai.example.org"},
                "sessions": {"work_root": str(tmp_path / "shared/work"), "image_dir": str(tmp_path / "images")}}
    extra = {
        "bridge_package": str(wheel), "bridge_venv": str(tmp_path / "venv"), "bridge_python": sys.executable,
        "bridge_config_dir": str(tmp_path / "etc/bai-bridge"), "bridge_state_dir": str(tmp_path / "var"),
        "bridge_units_dir": str(tmp_path / "units"), "bridge_user": "root", "bridge_manage_service": False,
        "bridge_check_prerequisites": False,
        "bridge_secret": SECRET, "bridge_notify_secret": "notify-0123456789", "bridge_settings": settings,
        "slurm_conf_dir": str(slurm), "slurm_user": "root", "bridge_slurm_reconfigure": False,
        "bridge_gateways": [{"name": "site", "url": "http://127.0.0.1:8090", "prefix": "bridge-site:",
                             "secret": "notify-0123456789"}],
        "bridge_shared_dirs": [str(tmp_path / "shared/work"), str(tmp_path / "shared/vfolders")],
        "bridge_image_dir": str(tmp_path / "images"),
        # slurmrestd with JWT: the key for slurmctld and for the gateway, slurmrestd's options
        "bridge_slurm_jwt": True, "bridge_slurm_jwt_key": JWT_KEY, "bridge_slurmrestd_manage_service": False,
        "slurm_jwt_key_file": str(tmp_path / "jwt_hs256.key"), "bridge_slurmrestd_user": "nobody",
        "bridge_slurmrestd_defaults": str(tmp_path / "default-slurmrestd"),
        "bridge_gpus": True,   # no GresTypes in this slurm.conf: a hint
        "bridge_apptainer_conf": {"allow setuid": "no", "mount hostfs": "no"},
        "bridge_apptainer_conf_file": str(tmp_path / "apptainer.conf"),
    }
    (tmp_path / "apptainer.conf").write_text("# Apptainer\nallow setuid = yes\n#mount hostfs = no\nmount home = yes\n")
    first = playbook(tmp_path, extra)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert recap(first.stdout)["changed"] > 0 and recap(first.stdout)["failed"] == 0

    config = tmp_path / "etc/bai-bridge/bridge.toml"
    rendered = tomllib.loads(config.read_text())
    assert rendered["server"] == settings["server"] and rendered["storage"] == settings["storage"]
    assert rendered["database"]["url"] == f"sqlite+aiosqlite:///{tmp_path}/var/bridge.sqlite3"
    assert "secret" not in config.read_text().lower().replace("notify_secret", "")   # secrets stay out of it
    secrets = tmp_path / "etc/bai-bridge/secrets.env"
    assert secrets.stat().st_mode & 0o777 == 0o600 and f"BRIDGE_SECRET=\"{SECRET}\"" in secrets.read_text()
    unit = (tmp_path / "units/bai-bridge.service").read_text()
    assert f"ExecStart={tmp_path}/venv/bin/bai-bridge serve" in unit and f"EnvironmentFile={secrets}" in unit
    version = subprocess.run([str(tmp_path / "venv/bin/bai-bridge"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and "bai-bridge, version" in version.stdout
    current = subprocess.run([str(tmp_path / "venv/bin/bai-bridge"), "--config", str(config), "db", "current"],
                             capture_output=True, text=True, env={**os.environ, "BRIDGE_SECRET": SECRET})
    assert current.returncode == 0 and head_revision() in current.stdout, current.stdout + current.stderr
    conf = (slurm / "slurm.conf").read_text()
    assert f"PrologSlurmctld={slurm}/bridge/bridge_notify.sh" in conf and "JobSubmitPlugins=lua" in conf
    assert (slurm / "job_submit.lua").read_text() == (REPO / "slurm_plugins/job_submit.lua").read_text()
    registration = slurm / "bridge-notify.d/site.json"
    assert registration.stat().st_mode & 0o777 == 0o600
    assert json.loads(registration.read_text())["prefix"] == "bridge-site:"
    assert (tmp_path / "shared/work").stat().st_mode & 0o7777 == 0o1777
    assert f"AuthAltTypes=auth/jwt\nAuthAltParameters=jwt_key={tmp_path}/jwt_hs256.key" in conf
    for key in (tmp_path / "jwt_hs256.key", tmp_path / "etc/bai-bridge/slurm_jwt.key"):
        assert key.read_text() == JWT_KEY and key.stat().st_mode & 0o777 == 0o600
    assert rendered["slurm"]["rest"]["jwt_key_file"] == f"{tmp_path}/etc/bai-bridge/slurm_jwt.key"
    assert '"-a rest_auth/jwt -u nobody -g nobody"' in (tmp_path / "default-slurmrestd").read_text()
    assert (tmp_path / "apptainer.conf").read_text() == \
        "# Apptainer\nallow setuid = no\nmount hostfs = no\nmount home = yes\n"
    assert "slurm.conf has no GresTypes with gpu" in first.stdout

    again = playbook(tmp_path, extra)   # idempotent: nothing to change
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)["changed"] == 0, again.stdout[-4000:]


@pytest.mark.parametrize(("line", "extra", "message"), [
    ("PrologSlurmctld=/usr/local/sbin/site-prolog", {}, "slurm.conf already sets PrologSlurmctld"),
    ("AuthAltTypes=auth/jwt", {"bridge_slurm_jwt": True, "bridge_slurm_jwt_key": JWT_KEY},
     "without AuthAltTypes/AuthAltParameters of its own"),
    ("ClusterName=other", {"bridge_slurm_jwt": True, "bridge_slurm_jwt_key": "short"}, "32 characters or more"),
])
def test_a_slurm_conf_the_role_would_clash_with_stops_it_with_a_clear_message(tmp_path, line, extra, message):
    slurm = tmp_path / "etc/slurm"
    slurm.mkdir(parents=True)
    (slurm / "slurm.conf").write_text(f"ClusterName=test\n{line}\n")
    extra = {"slurm_conf_dir": str(slurm), "slurm_user": "root", "bridge_slurm_reconfigure": False, **extra}
    done = playbook(tmp_path, extra, groups=("slurm_controller",))
    assert done.returncode != 0 and message in done.stdout, done.stdout[-3000:]
    assert "bai-bridge" not in (slurm / "slurm.conf").read_text()   # left as it was


def test_the_webui_role_installs_the_official_webserver_that_serves_the_webui(tmp_path):
    """The webui role beside the gateway's: backend.ai-webserver in a venv of its own (Python 3.11), its
    configuration written by the gateway's package for this gateway, its unit; started as the unit says, it
    serves the WebUI and keeps its logins in the Redis it was given."""
    if shutil.which("python3.11") is None or shutil.which("redis-server") is None:
        pytest.skip("the webserver needs python3.11 and redis-server (scripts/install-webui.sh)")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    port, redis = free_port(), free_port()
    extra = {
        "bridge_package": str(next((tmp_path / "dist").glob("bai_bridge-*.whl"))),
        "bridge_venv": str(tmp_path / "venv"), "bridge_python": sys.executable,
        "bridge_config_dir": str(tmp_path / "etc/bai-bridge"), "bridge_state_dir": str(tmp_path / "var"),
        "bridge_units_dir": str(tmp_path / "units"), "bridge_manage_service": False,
        "bridge_check_prerequisites": False,
        "bridge_secret": SECRET, "bridge_settings": {"server": {"host": "127.0.0.1", "port": 8090}},
        "bridge_webui": True, "bridge_webui_venv": str(tmp_path / "webui"),
        "bridge_webui_config_dir": str(tmp_path / "etc/webui"), "bridge_webui_port": port,
        "bridge_webui_redis": f"127.0.0.1:{redis}", "bridge_webui_install_redis": False,
        "bridge_webui_manage_service": False, "bridge_webui_user": "nobody",
    }
    (tmp_path / "units").mkdir()
    first = playbook(tmp_path, extra, groups=("gateway",))
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    conf = tomllib.loads((tmp_path / "etc/webui/webserver.conf").read_text())
    assert conf["api"]["endpoint"] == "http://127.0.0.1:8090"
    assert conf["session"]["redis"]["addr"] == f"127.0.0.1:{redis}"
    unit = (tmp_path / "units/bai-bridge-webui.service").read_text()
    start = next(shlex.split(x.split("=", 1)[1]) for x in unit.splitlines() if x.startswith("ExecStart="))
    assert start[0] == f"{tmp_path}/webui/bin/python" and "User=nobody" in unit

    again = playbook(tmp_path, extra, groups=("gateway",))
    assert again.returncode == 0 and recap(again.stdout)["changed"] == 0, again.stdout[-4000:]

    subprocess.run(["redis-server", "--port", str(redis), "--bind", "127.0.0.1", "--save", "", "--daemonize", "yes",
                    "--pidfile", str(tmp_path / "redis.pid"), "--dir", str(tmp_path)], check=True, capture_output=True)
    server = subprocess.Popen(start, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, page = time.monotonic() + 60, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert page is not None and page.status_code == 200 and "backend-ai-webui" in page.text.lower(), page
    finally:
        server.terminate()
        server.wait(timeout=30)
        subprocess.run(["kill", (tmp_path / "redis.pid").read_text().strip()], capture_output=True)
