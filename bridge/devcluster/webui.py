"""The official Backend.AI WebUI in front of a dev gateway: Redis (Debian's redis-server) for its login
sessions and the official `backend.ai-webserver` 23.9.10 (which carries the compiled WebUI), installed by
scripts/install-webui.sh into .webui/, as a site runs them (docs/webui.md).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
WEBSERVER_VERSION = "23.9.10"
CONFIG = """\
[service]
ip = "127.0.0.1"
port = {port}
wsproxy.url = ""
mode = "webui"
enable_signup = false
allow_change_signin_mode = false
allow_project_resource_monitor = false
allow_manual_image_name_for_session = true
single_sign_on_vendors = []
is_directory_size_visible = true

[resources]

[environments]

[plugin]
page = ""

[ui]
brand = "bridge"

[api]
domain = "default"
endpoint = "{endpoint}"
text = "bridge"
ssl_verify = false

[session]
redis.addr = "127.0.0.1:{redis_port}"
max_age = 604800
login_block_time = 1200
login_allowed_fail_count = 10

[webserver]
event-loop = "asyncio"

[logging]
level = "INFO"
drivers = ["console"]

[logging.console]
colored = false
format = "simple"

[debug]
enabled = false
"""


@dataclass(frozen=True)
class WebUI:
    url: str
    pid_file: Path
    redis_pid_file: Path
    log: Path


def python(version: str = WEBSERVER_VERSION) -> Path:
    return REPO / ".webui" / version / "bin" / "python"


def installed() -> str | None:
    """Why the WebUI cannot start here, or None."""
    if not python().exists():
        return "the webserver is not installed (bash scripts/install-webui.sh)"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (bash scripts/install-webui.sh, as root)"
    return None


def start(state_dir: Path, endpoint: str, port: int, redis_port: int) -> WebUI:
    """Redis and the webserver for the gateway at `endpoint`, in the background; reused when answering."""
    why = installed()
    if why:
        raise SystemExit(why)
    state_dir.mkdir(parents=True, exist_ok=True)
    ui = WebUI(f"http://127.0.0.1:{port}", state_dir / "webserver.pid", state_dir / "redis.pid",
               state_dir / "webserver.log")
    if ui.pid_file.exists() and _answers(ui.url):
        return ui
    subprocess.run(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(ui.redis_pid_file.resolve()),
                    "--logfile", str((state_dir / "redis.log").resolve()), "--dir", str(state_dir.resolve())],
                   check=True, stdout=subprocess.DEVNULL)
    conf = state_dir / "webserver.conf"
    conf.write_text(CONFIG.format(port=port, endpoint=endpoint, redis_port=redis_port))
    with open(ui.log, "ab") as log:   # the webserver keeps its own copy of the descriptor
        proc = subprocess.Popen([str(python()), "-m", "ai.backend.web.server", "-f", str(conf.resolve())],
                                cwd=state_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    ui.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the webserver exited with {proc.returncode}; see {ui.log}")
        if _answers(ui.url):
            return ui
        time.sleep(0.2)
    raise SystemExit(f"the webserver did not answer on {ui.url} within 60 s; see {ui.log}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
