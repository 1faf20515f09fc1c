"""What a site installs beside the package: systemd units for the gateway (Type=notify, sandboxed, its writable
paths taken from the configuration) and, where the WebUI is served, the official webserver, with that
webserver's configuration. `bai-bridge systemd-units` and `bai-bridge webui-config` write them; the Ansible
roles install the same (docs/operations.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import jinja2

from bridge.config import BridgeSettings
from bridge.package_data import data_dir


def writable_paths(settings: BridgeSettings, home_root: str) -> list[str]:
    """What the gateway and the commands it runs as users write: its database (SQLite), the session folders,
    the folders' storage hosts, the image directory and cache, and the users' homes. Not its configuration."""
    paths: set[str] = set()
    url = settings.database.url
    if url.startswith("sqlite"):
        paths.add(str(Path(url.split(":///", 1)[-1]).parent))
    paths.add(settings.sessions.work_root)
    paths.update(settings.storage.hosts.values())
    paths.add(settings.sessions.image_dir)
    if settings.images.cache_dir:
        paths.add(settings.images.cache_dir)
    paths.add(home_root)
    # "-" before a path: not an error where it does not exist on this host (a storage host mounted later)
    return sorted(f"-{p}" for p in paths if p)


def _templates(folder: str) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(data_dir("templates") / folder),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def webserver_config(*, endpoint: str, port: int, redis: str, host: str = "127.0.0.1", ssl_verify: bool = True,
                     login_block_s: int = 1200, login_allowed_failures: int = 10) -> str:
    """The official webserver's webserver.conf: the WebUI on host:port, its API calls to the gateway at
    `endpoint`, its login sessions in the Redis at `redis` (host:port), logins blocked for `login_block_s`
    after `login_allowed_failures` wrong passwords (the gateway locks the account on its own as well)."""
    return _templates("webui").get_template("webserver.conf.j2").render(
        endpoint=endpoint, port=port, redis=redis, host=host, ssl_verify=ssl_verify, login_block_s=login_block_s,
        login_allowed_failures=login_allowed_failures)


def render(settings: BridgeSettings, *, config: Path, venv: Path | None = None, user: str = "root",
           secret_file: str | None = None, home_root: str = "/home", webui_venv: Path | None = None,
           webui_config: Path | None = None, webui_user: str = "bai-webui") -> dict[str, str]:
    """{unit file name: its text}."""
    env = _templates("systemd")
    values = {"user": user, "config": config.resolve(), "secret_file": secret_file,
              "venv": (venv or Path(sys.prefix)).resolve(), "postgres": settings.database.url.startswith("postgres"),
              "switch": settings.slurm.cli.user_switch, "writable": writable_paths(settings, home_root)}
    units = {"bai-bridge.service": env.get_template("bai-bridge.service.j2").render(values)}
    if webui_venv is not None and webui_config is not None:
        units["bai-bridge-webui.service"] = env.get_template("bai-bridge-webui.service.j2").render(
            webui_venv=webui_venv.resolve(), webui_config=webui_config.resolve(), webui_user=webui_user)
    return units
