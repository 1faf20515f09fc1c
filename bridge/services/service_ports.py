"""Service ports of a session: the image's `ai.backend.service-ports` label (name:protocol:port,...) plus
the intrinsic `sshd` (2200) and `ttyd` (7681) every kernel offers, and the session's `preopen_ports`
(services the user starts on those ports, reached like the others), as Backend.AI lists them.

Web services run under the gateway's HTTP proxy path (`/proxy/{session}/{name}/`), so their
`url_template` carries that path: `backend.ai app` prints a URL that opens the app at once.
"""

from __future__ import annotations

from typing import Any

INTRINSIC = (("sshd", "tcp", 2200), ("ttyd", "http", 7681))
PROTOCOLS = ("tcp", "http", "preopen", "vnc", "rdp")   # `pty` entries are skipped, as Backend.AI does
RESERVED = {2000, 2001, 2002, 2003, 2200, 7681}       # the REPL, the legacy pty, the intrinsic sshd and ttyd
MAX_PREOPEN = 10
# services the kernel runner starts under the proxy path (/proxy/{session}/{name}/); every other web service
# is served at its root, and the browser proxy strips the prefix for it
BASE_PATH_AWARE = {"jupyter", "jupyterlab", "ttyd"}


def proxy_path(session_id: str, name: str) -> str:
    return f"/proxy/{session_id}/{name}/"


def app_host(session_id: str, name: str, apps_domain: str) -> str:
    """The host of its own a session's app is served on when the site has an apps domain."""
    return f"{session_id}-{name}.{apps_domain}".lower()


def _ports(text: str) -> list[int] | None:
    try:
        ports = [int(p) for p in text.strip("[]").split(",")] if text.startswith("[") else [int(text)]
    except ValueError:
        return None
    return ports if ports and all(1024 < p < 65535 for p in ports) else None


def _entries(label: str) -> list[tuple[str, str, list[int]]]:
    """`name:proto:port` or `name:proto:[p1,p2]`, comma-separated (commas inside brackets belong to them)."""
    out, depth, item = [], 0, ""
    for ch in label.strip().strip('"') + ",":
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts = item.strip().split(":")
            if len(parts) == 3 and parts[0] and parts[1] in PROTOCOLS and (ports := _ports(parts[2])):
                out.append((parts[0], parts[1], ports))
            item = ""
        else:
            item += ch
    return out


def check_preopen(ports: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """A create request's `preopen_ports`, or a ValueError naming what is wrong."""
    if len(ports) > MAX_PREOPEN:
        raise ValueError(f"preopen_ports: at most {MAX_PREOPEN}")
    for p in ports:
        if not 1024 < p < 65535 or p in RESERVED:
            raise ValueError(f"preopen_ports: {p} is not allowed (1025-65534, not {sorted(RESERVED)})")
    return tuple(dict.fromkeys(ports))


def parse(label: str | None, session_id: str = "{session}", preopen: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    declared = _entries(label or "")
    names = {d[0] for d in declared}
    intrinsic = [(n, proto, [port]) for n, proto, port in INTRINSIC if n not in names]
    out = []
    for name, protocol, ports in [*declared, *intrinsic, *((str(p), "preopen", [p]) for p in preopen)]:
        entry: dict[str, Any] = {"name": name, "protocol": protocol, "ports": ports, "container_ports": ports,
                                 "host_ports": [None] * len(ports), "is_inference": False}
        if protocol == "http":
            entry["url_template"] = "http://{host}:{port}" + (proxy_path(session_id, name)
                                                              if name in BASE_PATH_AWARE else "/")
        out.append(entry)
    return out


def find(ports: list[dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    return next((p for p in ports or [] if p.get("name") == name), None)
