"""End-to-end: the official `backend.ai` CLI from PyPI (each version in its own venv under .clients/,
installed by scripts/install-clients.sh) against a gateway brought up with `bai-bridge dev up`.

Nothing in the client is patched: it runs as a subprocess, from an empty directory (23.x loads `.env`
files upward from the working directory), with only the BACKEND_* variables of the user it acts as.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.devcluster.devenv import read_env
from tests.integration.test_dev_env import bai_bridge, free_port

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / ".clients"
VERSIONS = ["22.3.2", "23.9.10"]


def _bridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return bai_bridge(*args, cwd=cwd)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory) -> dict[str, str]:
    """A gateway of its own (own SQLite, own port) on the dev cluster, with the keys of `dev up`."""
    root = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))
    ok = subprocess.run(["chroot", str(root), "scontrol", "ping"], capture_output=True).returncode == 0
    if not ok:
        if os.environ.get("BRIDGE_TEST_REQUIRE_CLUSTER") == "1":
            pytest.fail("the dev cluster is not running")
        pytest.skip("the dev cluster is not running")
    work = tmp_path_factory.mktemp("e2e")
    state = work / "state"
    up = _bridge("dev", "up", "--state-dir", str(state), "--port", str(free_port()), "--no-first-job", "--no-webui",
                 cwd=work)
    assert up.returncode == 0, up.stdout + up.stderr
    yield read_env(state / "env")
    _bridge("dev", "down", "--state-dir", str(state), cwd=work)
    cancel_tagged(root, f"bridge-{(state / 'instance-id').read_text().strip()}:")


def cancel_tagged(root: Path, prefix: str) -> None:
    """Cancel what a test gateway leaves in Slurm (interactive sessions run until destroyed)."""
    out = subprocess.run(["chroot", str(root), "squeue", "-h", "-o", "%i %k"], capture_output=True, text=True).stdout
    ids = [line.split()[0] for line in out.splitlines() if prefix in line]
    if ids:
        subprocess.run(["chroot", str(root), "scancel", *ids], capture_output=True)


@dataclass
class Client:
    version: str
    env: dict[str, str]
    cwd: Path

    def env_for(self, who: str, secret: str | None = None, access: str | None = None) -> dict[str, str]:
        prefix = {"alice": "BACKEND_", "bob": "BOB_", "admin": "ADMIN_"}[who]
        return {
            # its own bin first: `backend.ai ssh` (22.3.2) runs `backend.ai` from PATH
            "PATH": f"{CLIENTS / self.version / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.cwd), "LANG": "C.UTF-8",
            "BACKEND_ENDPOINT": self.env["BACKEND_ENDPOINT"], "BACKEND_ENDPOINT_TYPE": "api",
            "BACKEND_ACCESS_KEY": access or self.env[prefix + "ACCESS_KEY"],
            "BACKEND_SECRET_KEY": secret or self.env[prefix + "SECRET_KEY"],
        }

    @property
    def exe(self) -> str:
        return str(CLIENTS / self.version / "bin" / "backend.ai")

    def run(self, who: str, *args: str, secret: str | None = None, access: str | None = None,
            timeout: float = 120, answer: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the CLI; `answer` is typed at its prompt (otherwise standard input is closed)."""
        return subprocess.run([self.exe, *args], cwd=self.cwd, env=self.env_for(who, secret, access), text=True,
                              capture_output=True, timeout=timeout, input=answer,
                              stdin=None if answer is not None else subprocess.DEVNULL)

    def popen(self, who: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([self.exe, *args], cwd=self.cwd, env=self.env_for(who), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


@pytest.fixture(params=VERSIONS)
def client(request, gateway, tmp_path) -> Client:
    exe = CLIENTS / request.param / "bin" / "backend.ai"
    if not exe.exists():
        msg = f"backend.ai {request.param} is not installed (bash scripts/install-clients.sh)"
        if os.environ.get("BRIDGE_TEST_REQUIRE_CLUSTER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return Client(request.param, gateway, tmp_path)


def limited_project(client: Client, gateway: dict[str, str]) -> str:
    """A project with a quota of 2 CPUs and alice in it, made once per client version through the official
    client's admin commands (`admin group add --total-resource-slots`, `admin group add-users`): the gateway
    (accounts.slurm_sync, on in dev) turns them into a Slurm account with GrpTRES=cpu=2 and an association."""
    from tests.e2e.test_session_rest import Api

    name = "quota-" + client.version.replace(".", "")
    if name in gateway:
        return name
    done = client.run("admin", "admin", "group", "add", "default", name, "--total-resource-slots", '{"cpu": "2"}')
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    admin = Api(gateway, "ADMIN_")
    found = admin("POST", "/admin/gql", {"query": 'query { groups(domain_name: "default") { id name } '
                                                  'user(email: "alice@example.com") { uuid } }'}).json()["data"]
    gid = next(g["id"] for g in found["groups"] if g["name"] == name)
    done = client.run("admin", "admin", "group", "add-users", gid, found["user"]["uuid"])
    assert done.returncode == 0 and "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    root = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))
    show = subprocess.run(["chroot", str(root), "sacctmgr", "-n", "-P", "show", "assoc", f"accounts={name}",
                           "format=account,user,grptres"], capture_output=True, text=True).stdout.split()
    assert f"{name}||cpu=2" in show and f"{name}|alice|" in show, show
    gateway[name] = name
    return name


@pytest.fixture(scope="session")
def web(tmp_path_factory):
    """`bai-bridge dev up` as a developer runs it, on ports of its own: a gateway, and the WebUI in front."""
    from bridge.devcluster import webui

    why = webui.installed()
    if why:
        if os.environ.get("BRIDGE_TEST_REQUIRE_CLUSTER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    work = tmp_path_factory.mktemp("webui")
    state = work / "state"
    up = bai_bridge("dev", "up", "--state-dir", str(state), "--port", str(free_port()), "--no-first-job",
                    "--webui-port", "0", cwd=work)
    assert up.returncode == 0 and "webui:   http" in up.stdout, up.stdout + up.stderr
    env = read_env(state / "env")
    try:
        yield env
    finally:
        bai_bridge("dev", "down", "--state-dir", str(state), cwd=work)
