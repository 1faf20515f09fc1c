"""Resource slots and units: Backend.AI's user strings ("2", "1g", "512m") as numbers."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def parse_binary_size(value: str | int) -> int:
    """'1g' -> 1073741824, '512m' -> 536870912, '1.5G' -> 1610612736, 1024 -> 1024 (binary units)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"invalid size {value!r} (examples: 1024, 512m, 1g)")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        raise ValueError(f"invalid size {value!r}") from None
    return int(number * (1024 ** _UNITS[m.group(2).lower()]))


VFOLDER_HOST_PERMISSIONS = (
    "create-vfolder", "modify-vfolder", "delete-vfolder", "mount-in-session", "upload-file", "download-file",
    "invite-others", "set-user-specific-permission",
)


def normalize_vfolder_hosts(value: object) -> dict[str, list[str]]:
    """allowed_vfolder_hosts in any shape clients send it: {host: [perms]} (JSON text or object, 23+),
    or a list / comma list of host names (22.x), which get every permission."""
    import json

    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            if value.startswith("["):  # 22.x sends str() of a Python list: "['local']"
                import ast

                try:
                    value = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    raise ValueError(f"unreadable allowed_vfolder_hosts {value!r}") from None
            else:
                value = [h.strip() for h in value.split(",") if h.strip()]
    if isinstance(value, dict):
        return {str(k): [str(p) for p in (v or [])] for k, v in value.items()}
    if isinstance(value, list | tuple):
        return {str(h): list(VFOLDER_HOST_PERMISSIONS) for h in value}
    raise ValueError("allowed_vfolder_hosts must be a mapping of host to permissions or a list of hosts")
