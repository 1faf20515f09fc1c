"""A site deployed from nothing: ansible/ run for real, over SSH, against a fresh Debian root that plays a site's
login node beside the dev cluster (bridge/devcluster/site-target.sh: Slurm's client commands, Apptainer, the
users, the shared file systems, nothing of bai-bridge). The gateway role installs the wheel built from this
checkout into a venv there, makes the gateway an account of its own that acts as the users through a sudo rule,
renders and checks a production configuration, upgrades the database and installs the systemd unit. The
gateway is then started the way its unit says (no systemd in the root), and proven with the official
`backend.ai` CLI: code runs in a session (as the user's own Unix account, in Slurm), and JupyterLab answers
through `backend.ai app`. A second run of the playbook changes nothing."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import CLIENTS, Client
from tests.e2e.test_admin_cli import ok
from tests.e2e.test_apps_cli import _app_url, _get_until_ok, _stop
from tests.integration.test_ansible import recap
from tests.integration.test_dev_env import free_port

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bridge/devcluster/site-target.sh"
SITE = Path(os.environ.get("BRIDGE_SITE_ROOT", "/srv/siteroot"))
DEV = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))
KEY = SITE / "etc/bridge-site/controller_ed25519"
SSH_PORT = int(os.environ.get("BRIDGE_SITE_SSH_PORT", "2223"))
CLI_VERSION = "23.9.10"
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def _unavailable(why: str) -> None:
    if os.environ.get("BRIDGE_TEST_REQUIRE_CLUSTER") == "1":
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def target():
    """The login node, fresh (an empty overlay on the installed system; its first build, debootstrap and apt,
    takes about 40 s)."""
    if os.geteuid() != 0:
        _unavailable("the site target is built as root")
    if subprocess.run(["chroot", str(DEV), "scontrol", "ping"], capture_output=True).returncode != 0:
        _unavailable("the dev cluster is not running")
    if not (CLIENTS / CLI_VERSION / "bin/backend.ai").exists():
        _unavailable(f"backend.ai {CLI_VERSION} is not installed (bash scripts/install-clients.sh)")
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=1200)
    assert up.returncode == 0, up.stdout + up.stderr
    yield SITE
    subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, timeout=120)


def playbook(work: Path, extra: dict) -> subprocess.CompletedProcess[str]:
    """ansible-playbook site.yml with the target as the gateway and as a compute/login node, over SSH."""
    ssh_args = f"-o UserKnownHostsFile={KEY}.known_hosts -o StrictHostKeyChecking=yes"
    host = (f"site ansible_host=127.0.0.1 ansible_port={SSH_PORT} ansible_user=root "
            f"ansible_ssh_private_key_file={KEY} ansible_python_interpreter=/usr/bin/python3 "
            f"ansible_ssh_common_args='{ssh_args}'")
    (work / "inventory.ini").write_text(f"[gateway]\n{host}\n[compute]\n{host}\n")
    (work / "vars.json").write_text(json.dumps(extra))
    control = tempfile.mkdtemp(prefix="bsite-", dir="/tmp")   # a unix socket's path must stay short
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_HOME": str(work / "ansible-home"),
           "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"), "ANSIBLE_SSH_CONTROL_PATH_DIR": control,
           "ANSIBLE_STDOUT_CALLBACK": "default"}
    try:
        return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(work / "inventory.ini"),
                               str(REPO / "ansible/site.yml"), "-e", f"@{work / 'vars.json'}"],
                              capture_output=True, text=True, env=env, timeout=1200)
    finally:
        shutil.rmtree(control, ignore_errors=True)


def unit_of(path: Path) -> tuple[str, dict[str, str], list[str]]:
    """User, environment (Environment= and the EnvironmentFile's quoted lines) and ExecStart of a unit."""
    user, env, start = "root", {}, []
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "User":
            user = value
        elif key == "Environment":
            k, _, v = value.partition("=")
            env[k] = v
        elif key == "EnvironmentFile":
            for item in (SITE / value.lstrip("/")).read_text().splitlines():
                if item and not item.startswith("#"):
                    k, _, v = item.partition("=")
                    env[k] = shlex.split(v)[0]
        elif key == "ExecStart":
            start = shlex.split(value)
    return user, env, start


def inside_argv(user: str, env: dict[str, str], *argv: str) -> list[str]:
    """argv run in the target as `user` with exactly `env` (what systemd would give the unit)."""
    return ["bash", str(SCRIPT), "enter", "runuser", "-u", user, "--", "env", "-i", f"PATH={PATH}",
            *(f"{k}={v}" for k, v in env.items()), *argv]


def inside(user: str, env: dict[str, str], *argv: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(inside_argv(user, env, *argv), capture_output=True, text=True, **kw)


def test_ansible_deploys_a_working_gateway_onto_a_fresh_debian_login_node(target, tmp_path):
    dist = SITE / "root/dist"
    shutil.rmtree(dist, ignore_errors=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next(dist.glob("bai_bridge-*.whl"))
    port, prefix = free_port(), f"bridge-site{uuid.uuid4().hex[:6]}:"
    settings = {
        "mode": "production",
        "server": {"host": "127.0.0.1", "port": port, "public_url": "https://bai.site.example",
                   "apps_domain": "apps.site.example"},
        # the kernels call back on the internal network, not through the public (TLS) name
        "sessions": {"callback_url": f"http://127.0.0.1:{port}", "callback_allowed_networks": ["127.0.0.0/8"],
                     "shards_per_gpu": 4},
        "slurm": {"cluster": "devcluster", "job_tag_prefix": prefix, "cli": {"user_switch": "sudo"}},
        "images": {"pull_user": "nobody"},
    }
    extra = {"bridge_package": f"/root/dist/{wheel.name}", "bridge_user": "bai-bridge",
             "bridge_sudo_runas": ["alice", "bob", "hpcadmin"], "bridge_secret": "site-secret-" + uuid.uuid4().hex,
             "bridge_notify_secret": "", "bridge_settings": settings,
             "bridge_shared_dirs": ["/srv/shared/bridge", "/srv/shared/vfolders"], "bridge_image_dir": "/srv/images"}

    first = playbook(tmp_path, extra)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    assert recap(first.stdout, "site")["changed"] > 0
    sudoers = SITE / "etc/sudoers.d/bai-bridge"
    assert sudoers.stat().st_mode & 0o777 == 0o440 and "(BAI_BRIDGE_USERS)" in sudoers.read_text()
    assert "alice, bob, hpcadmin, nobody, !root, !#0" in sudoers.read_text()

    user, env, start = unit_of(SITE / "etc/systemd/system/bai-bridge.service")
    assert user == "bai-bridge" and start[-1] == "serve" and env["BRIDGE_SECRET"] == extra["bridge_secret"]
    # the gateway's account acts as the mapped users and nobody else: not root, not a system account
    assert inside(user, {}, "sudo", "-n", "-u", "alice", "id", "-un").stdout.strip() == "alice"
    for other in ("root", "bin"):
        refused = inside(user, {}, "sudo", "-n", "-u", other, "id")
        assert refused.returncode != 0, (other, refused.stdout)
    log = (tmp_path / "gateway.log").open("w")
    gateway = subprocess.Popen(inside_argv(user, env, *start), stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()[-4000:]
            assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-4000:]
            time.sleep(0.3)

        admin = [*start[:-1], "admin"]
        ok(inside(user, env, *admin, "group", "create", "site", "--slurm-account", "default", timeout=120))
        made = inside(user, env, *admin, "user", "create", "alice@site.example", "--unix-user", "alice",
                      "--group", "site", "--json", timeout=120)
        assert made.returncode == 0, made.stdout + made.stderr
        keys = json.loads(made.stdout)
        client = Client(CLI_VERSION, {"BACKEND_ENDPOINT": base, "BACKEND_ACCESS_KEY": keys["access_key"],
                                      "BACKEND_SECRET_KEY": keys["secret_key"]}, tmp_path)

        out = ok(client.run("alice", "run", "--rm", "-g", "site", "python", "-c",
                            "import os; print(40 + 2, os.getuid())", timeout=180))
        assert "42 1001" in out.splitlines() and "exit code = 0" in out   # alice's own uid

        name = "site-jup-" + uuid.uuid4().hex[:6]
        ok(client.run("alice", "session", "create", "-g", "site", "-t", name, "python-jupyter", timeout=180))
        try:
            jobs = subprocess.run(["chroot", str(DEV), "squeue", "-h", "-o", "%u %k"], capture_output=True,
                                  text=True).stdout
            owners = [line.split()[0] for line in jobs.splitlines() if prefix in line]
            assert owners and set(owners) == {"alice"}, jobs   # the user's own Unix account, not the gateway's
            proxy, url = _app_url(client, name, "jupyter", free_port())
            try:
                assert _get_until_ok(url + "api/status").json()["kernels"] == 0
                assert "JupyterLab" in httpx.get(url + "lab", timeout=30).text
            finally:
                _stop(proxy)
        finally:
            ok(client.run("alice", "session", "rm", name))

        again = playbook(tmp_path, extra)   # idempotent, with the gateway running
        assert again.returncode == 0, again.stdout[-6000:]
        assert recap(again.stdout, "site")["changed"] == 0, again.stdout[-6000:]
    finally:
        os.killpg(gateway.pid, signal.SIGTERM)
        try:
            gateway.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait()
        log.close()
        left = subprocess.run(["chroot", str(DEV), "squeue", "-h", "-o", "%i %k"], capture_output=True,
                              text=True).stdout
        ids = [line.split()[0] for line in left.splitlines() if prefix in line]
        if ids:
            subprocess.run(["chroot", str(DEV), "scancel", *ids], capture_output=True)
