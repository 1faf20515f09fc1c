"""Service ports of a session, from its image's `ai.backend.service-ports` label (name:protocol:port,...)."""

from __future__ import annotations

from typing import Any


def parse(label: str | None) -> list[dict[str, Any]]:
    out = []
    for item in (label or "").strip().strip('"').split(","):
        parts = item.strip().split(":")
        if len(parts) != 3 or not parts[0]:
            continue
        name, protocol, port = parts
        try:
            ports = [int(port)]
        except ValueError:
            continue
        out.append({"name": name, "protocol": protocol, "ports": ports, "container_ports": ports,
                    "host_ports": [None], "is_inference": False})
    return out
