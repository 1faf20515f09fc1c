"""`bai-bridge dev up|down`: the dev cluster, a gateway in the background (SQLite), keys in .bridge-dev/env.

Everything is idempotent: a second `dev up` reuses the cluster, the database and the users' keys,
and restarts the gateway only if it is not answering.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select

from bridge.adapters.db import engine as dbengine
from bridge.adapters.db.tables import KeypairRow
from bridge.adapters.runner import LocalRunner
from bridge.adapters.slurm.factory import build_accounting
from bridge.config import DEV_ROOT, BridgeSettings, dev_cluster_overrides, load_settings
from bridge.devcluster import testbed
from bridge.services import accounts
from bridge.services.images import ImageResolver
from bridge.wiring import Parts

DEV_PROJECT = "default"
DEV_ACCOUNT = "default"


@dataclass(frozen=True)
class DevUser:
    env_prefix: str      # BACKEND_ / BOB_ / ADMIN_
    email: str
    unix_user: str
    role: str


DEV_USERS = (
    DevUser("BACKEND_", "alice@example.com", "alice", "user"),
    DevUser("BOB_", "bob@example.com", "bob", "user"),
    DevUser("ADMIN_", "admin@example.com", "hpcadmin", "superadmin"),
)


def kept(path: Path, fresh: str) -> str:
    """A value the state folder keeps across `dev up`s: `fresh` the first time, written owner-only from the
    start (no moment when others could read it)."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(fresh)
    return path.read_text().strip()


def dev_settings(state_dir: Path, port: int) -> dict[str, object]:
    """The config.toml content of the dev gateway."""
    data: dict[str, object] = dev_cluster_overrides()
    data["server"] = {"host": "127.0.0.1", "port": port}
    data["database"] = {"url": f"sqlite+aiosqlite:///{(state_dir / 'bridge.sqlite3').resolve()}"}
    # every gateway sharing a cluster needs its own job tag: start-up reconciliation cancels tagged jobs
    # that its own database does not know
    slurm, server = data["slurm"], data["server"]
    assert isinstance(slurm, dict) and isinstance(server, dict)
    slurm["job_tag_prefix"] = f"bridge-{kept(state_dir / 'instance-id', secrets.token_hex(4))}:"
    # Slurm's job start/end notices (slurm_plugins/bridge_notify.py): one secret per gateway
    slurm["notify_secret"] = kept(state_dir / "notify-secret", secrets.token_urlsafe(32))
    # GET /metrics for a local Prometheus (or curl): the token is in .bridge-dev/env as BRIDGE_DEV_METRICS_TOKEN
    server["metrics_token"] = kept(state_dir / "metrics-token", secrets.token_urlsafe(24))
    # the gpu resource group reaches its kernels through SSH forwarding via the login node, as at a site
    # whose GPU nodes are not routable from the gateway; debug connects directly: both paths get exercised
    data["tunnels"] = {"partitions": {"gpu": "ssh"}}
    # registries on this machine's loopback (a test's or your own `docker-registry`) are trusted over HTTP,
    # and sessions may name their images directly (docker://127.0.0.1:PORT/...): they show PULLING first
    data["images"] = {**data.get("images", {}),  # type: ignore[dict-item]
                      "insecure_registries": ["127.0.0.1:*", "localhost:*"],
                      "pull_on_create": ["127.0.0.1:*", "localhost:*"]}
    # folder transfers on a port of their own (any free one; the links name it): bytes move inside the kernel
    data["storage"] = {**data.get("storage", {}), "transfer_port": 0}  # type: ignore[dict-item]
    return data


def _toml(data: dict[str, object], prefix: str = "") -> str:
    """A tiny TOML writer for nested dicts of str/int/bool/list (enough for our config)."""
    lines, tables = [], []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {json.dumps(v)}")
    out = ([f"[{prefix}]"] if prefix and lines else []) + lines
    for k, v in tables:
        out += ["", _toml(v, f"{prefix}.{k}" if prefix else k)]
    return "\n".join(out).strip() + "\n"


async def provision(settings: BridgeSettings) -> dict[str, str]:
    """Slurm accounts, database, domain/project/users/keypairs. Returns the env file's variables."""
    root_runner = LocalRunner(settings.slurm.cli.prefix, settings.slurm.cli.user_switch)
    acct = build_accounting(settings, root_runner)
    await acct.ensure_account(DEV_ACCOUNT, description="bridge dev project")
    for u in DEV_USERS:
        await acct.ensure_association(u.unix_user, DEV_ACCOUNT)

    await asyncio.to_thread(dbengine.upgrade, settings.database.url)
    parts = Parts(settings)   # the composition root, as the gateway builds its parts
    env: dict[str, str] = {}
    try:
        async with parts.db.unit_of_work() as s:
            await accounts.ensure_domain(s, "default", "the default domain")
            await accounts.ensure_policy(s, "default")
            group = await accounts.get_group(s, DEV_PROJECT) or await accounts.create_group(
                s, name=DEV_PROJECT, slurm_account=DEV_ACCOUNT, description="dev project")
            for u in DEV_USERS:
                user = await accounts.get_user_by_email(s, u.email) or await accounts.create_user(
                    s, email=u.email, username=u.email.split("@")[0], password=u.unix_user + "-dev-password",
                    role=u.role, unix_user=u.unix_user)
                await accounts.add_member(s, group, user)
                kp = (await s.execute(select(KeypairRow).where(KeypairRow.user == user.uuid, KeypairRow.is_active)
                                      .order_by(KeypairRow.created_at))).scalars().first()
                if kp is None:
                    new = await accounts.create_keypair(s, user)
                    access, secret = new.access_key, new.secret_key
                else:
                    access, secret = kp.access_key, kp.secret_key
                p = u.env_prefix
                env[f"{p}ACCESS_KEY"], env[f"{p}SECRET_KEY"] = access, secret
        await register_images(settings, parts.images)
    finally:
        await parts.aclose()
    return env


async def register_images(settings: BridgeSettings, registry: ImageResolver) -> None:
    """Every image the dev cluster built from containers/*.def, under its file name (python, ...)."""
    root = settings.dev.root
    known = {r.name for r in await registry.list()}
    for path in sorted((root / settings.sessions.image_dir.lstrip("/")).glob("*")):
        if path.is_dir() and not path.name.startswith(".") and not path.name.endswith(".tmp"):
            if path.name not in known:
                await registry.add(path.name, f"{settings.sessions.image_dir}/{path.name}", [f"{path.name}:latest"])


def answers(url: str) -> bool:
    """Whether a server of ours answers 200 at the root of `url`."""
    try:
        return httpx.get(url + "/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_background(argv: list[str], *, pid_file: Path, log: Path, url: str, what: str,
                     timeout_s: int = 30, cwd: Path | None = None) -> int:
    """Start a server in a session of its own, logging to `log`, and wait until it answers at `url`; one
    that answers there already (by its pid file) is kept. Its pid."""
    if pid_file.exists() and answers(url):
        return int(pid_file.read_text())
    with open(log, "ab") as out:   # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd,
                                start_new_session=True)
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see {log}")
        if answers(url):
            return proc.pid
        time.sleep(0.1)
    raise SystemExit(f"{what} did not answer on {url} within {timeout_s} s; see {log}")


def start_gateway(state_dir: Path, config: Path, url: str) -> int:
    return start_background([sys.executable, "-m", "bridge", "--config", str(config), "serve"],
                            pid_file=state_dir / "gateway.pid", log=state_dir / "gateway.log", url=url,
                            what="the gateway")


def stop_pid(pid_file: Path, timeout_s: float = 10.0) -> bool:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            with open(f"/proc/{pid}/status") as f:
                if any(line.startswith("State:") and "Z" in line.split()[1] for line in f):
                    break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


FIRST_CODE = ("import os, platform\n"
              "gpus = os.environ.get('CUDA_VISIBLE_DEVICES')\n"
              "print(f'hello from {platform.node()}: Python {platform.python_version()} "
              "as uid {os.getuid()} in {os.getcwd()}, CUDA_VISIBLE_DEVICES={gpus}')")


def first_session(env: dict[str, str], image: str) -> str:
    """A real session through the gateway, as alice: an interactive Apptainer kernel with one GPU runs code."""
    from bridge.client.api import BackendAIClient

    client = BackendAIClient(env["BACKEND_ENDPOINT"], env["BACKEND_ACCESS_KEY"], env["BACKEND_SECRET_KEY"])
    created = client.request("POST", "/session", {"name": "first-" + secrets.token_hex(3), "image": image,
                                                  "config": {"resources": {"cpu": "1", "mem": "512m",
                                                                           "cuda.device": "1"}}})
    sid = created["sessionId"]
    try:
        if created["status"] != "RUNNING":
            raise SystemExit(f"the first session did not start: {created}")
        result = client.request("POST", f"/session/{sid}", {"mode": "query", "runId": "first", "code": FIRST_CODE})
        while result["result"]["status"] == "continued":
            result = client.request("POST", f"/session/{sid}", {"mode": "query", "runId": "first", "code": ""})
        out = "".join(text for kind, text in result["result"]["console"] if kind in ("stdout", "stderr"))
        if result["result"]["exitCode"] != 0:
            raise SystemExit(f"the first session's code failed:\n{out}")
        return f"first session {created['sessionName']} ({sid}): {out.strip()}"
    finally:
        client.request("DELETE", f"/session/{sid}")


def dev_up(state_dir: Path, port: int, run_first_session: bool = True, apps_domain: str | None = None,
           slurm_driver: str = "cli", webui_port: int | None = 8099) -> Path:
    from bridge.devcluster import webui  # imported here: it starts its servers with start_background

    state_dir.mkdir(parents=True, exist_ok=True)
    started_cluster = testbed("status", check=False) != 0
    testbed("up")
    if started_cluster:
        (state_dir / "cluster.started-by-dev-up").touch()
    config = state_dir / "config.toml"
    data = dev_settings(state_dir, port)
    if apps_domain:
        data["server"] = {**data["server"], "apps_domain": apps_domain}  # type: ignore[dict-item]
    data["slurm"]["driver"] = slurm_driver  # type: ignore[index]
    config.write_text(_toml(data))
    settings = load_settings(config)
    env = asyncio.run(provision(settings))
    url = f"http://127.0.0.1:{port}"
    register_notices(state_dir, settings.slurm.job_tag_prefix, url, settings.slurm.notify_secret)
    pid = start_gateway(state_dir, config, url)
    image = "python"  # the reference of the default kernel image (containers/python.def)
    env_file = state_dir / "env"
    lines = [f"export BACKEND_ENDPOINT={url}", "export BACKEND_ENDPOINT_TYPE=api",
             f"export BRIDGE_CONFIG={config.resolve()}", f"export BRIDGE_DEV_IMAGE={image}",
             "export BRIDGE_DEV_JUPYTER_IMAGE=python-jupyter",
             f"export BRIDGE_DEV_METRICS_TOKEN={settings.server.metrics_token.get_secret_value()}"
             if settings.server.metrics_token else "# no metrics token"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    env_file.write_text("\n".join(lines) + "\n")
    env_file.chmod(0o600)
    print(f"gateway: {url} (pid {pid}, log {state_dir / 'gateway.log'})")
    why = "--no-webui" if webui_port is None else webui.installed()
    if why is None and webui_port is not None:
        try:   # the gateway is up either way; the WebUI's trouble is named, not fatal
            ui = webui.start(state_dir, url, webui_port or webui.free_port(), webui.free_port())
        except SystemExit as e:
            why = str(e)
        else:
            lines.append(f"export BRIDGE_DEV_WEBUI={ui.url}")
            env_file.write_text("\n".join(lines) + "\n")
            print(f"webui:   {ui.url} (the official webserver {webui.WEBSERVER_VERSION}; log in as "
                  "alice@example.com, password alice-dev-password)")
    if why is not None:
        print(f"webui:   not started: {why}")
    print(f"env:     source {env_file}")
    if run_first_session:
        print(first_session(read_env(env_file), image))
    return env_file


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0] if value else ""
    return env


def notice_file(state_dir: Path) -> Path:
    instance = (state_dir / "instance-id").read_text().strip()
    return Path(DEV_ROOT) / "etc/slurm/bridge-notify.d" / f"{instance}.json"


def register_notices(state_dir: Path, prefix: str, url: str, secret: str) -> None:
    """Tell the cluster's PrologSlurmctld/EpilogSlurmctld (slurm_plugins/bridge_notify.py) where this gateway
    is: its job tag prefix, url and notify secret, in a file only slurm reads."""
    path = notice_file(state_dir)
    if not path.parent.is_dir():
        print(f"notices: {path.parent} is missing (a cluster built before slurm_plugins): the watcher polls alone")
        return
    owner = path.parent.stat()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"prefix": prefix, "url": url, "secret": secret}))
    os.chown(tmp, owner.st_uid, owner.st_gid)
    tmp.chmod(0o600)
    tmp.replace(path)


def dev_down(state_dir: Path) -> None:
    if (state_dir / "instance-id").exists():
        notice_file(state_dir).unlink(missing_ok=True)
    if stop_pid(state_dir / "webserver.pid"):
        print("webserver stopped")
    if stop_pid(state_dir / "redis.pid"):
        print("redis stopped")
    if stop_pid(state_dir / "gateway.pid"):
        print("gateway stopped")
    marker = state_dir / "cluster.started-by-dev-up"
    if marker.exists():
        testbed("down", check=False)
        marker.unlink()
        print("dev cluster stopped")
