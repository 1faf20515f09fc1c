"""Service ports of a session: the image's `ai.backend.service-ports` label (name:protocol:port,...) plus
the intrinsic `sshd` (2200) and `ttyd` (7681) every kernel offers, as Backend.AI lists them.

Web services run under the gateway's HTTP proxy path (`/proxy/{session}/{name}/`), so their
`url_template` carries that path: `backend.ai app` prints a URL that opens the app at once.
"""

from __future__ import annotations

from typing import Any

INTRINSIC = (("sshd", "tcp", 2200), ("ttyd", "http", 7681))
PROTOCOLS = ("tcp", "http", "pty", "preopen")


def proxy_path(session_id: str, name: str) -> str:
    return f"/proxy/{session_id}/{name}/"


def parse(label: str | None, session_id: str = "{session}") -> list[dict[str, Any]]:
    declared: list[tuple[str, str, int]] = []
    for item in (label or "").strip().strip('"').split(","):
        parts = item.strip().split(":")
        if len(parts) != 3 or not parts[0] or parts[1] not in PROTOCOLS:
            continue
        try:
            declared.append((parts[0], parts[1], int(parts[2])))
        except ValueError:
            continue
    names = {d[0] for d in declared}
    out = []
    for name, protocol, port in [*declared, *(i for i in INTRINSIC if i[0] not in names)]:
        entry: dict[str, Any] = {"name": name, "protocol": protocol, "ports": [port], "container_ports": [port],
                                 "host_ports": [None], "is_inference": False}
        if protocol == "http":
            entry["url_template"] = "http://{host}:{port}" + proxy_path(session_id, name)
        out.append(entry)
    return out


def find(ports: list[dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    return next((p for p in ports or [] if p.get("name") == name), None)
