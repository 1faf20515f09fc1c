"""The official Backend.AI WebUI in front of a dev gateway: Redis (Debian's redis-server) for its login
sessions and the official `backend.ai-webserver` 23.9.10 (which carries the compiled WebUI), installed by
scripts/install-webui.sh into .webui/, as a site runs them (docs/webui.md).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bridge import units
from bridge.devcluster.devenv import answers, start_background

REPO = Path(__file__).resolve().parents[2]
WEBSERVER_VERSION = "23.9.10"


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
    if ui.pid_file.exists() and answers(ui.url):
        return ui   # Redis with it
    subprocess.run(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(ui.redis_pid_file.resolve()),
                    "--logfile", str((state_dir / "redis.log").resolve()), "--dir", str(state_dir.resolve())],
                   check=True, stdout=subprocess.DEVNULL)
    conf = state_dir / "webserver.conf"
    conf.write_text(units.webserver_config(endpoint=endpoint, port=port, redis=f"127.0.0.1:{redis_port}",
                                           ssl_verify=False))
    start_background([str(python()), "-m", "ai.backend.web.server", "-f", str(conf.resolve())],
                     pid_file=ui.pid_file, log=ui.log, url=ui.url, what="the webserver", timeout_s=60, cwd=state_dir)
    return ui


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
