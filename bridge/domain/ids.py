"""Identifiers the clients send: UUIDs with or without dashes (26.x sends folder ids as 32 hex digits)."""

from __future__ import annotations

import re

UUID_SHAPE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z")


def normalize_uuid(value: str) -> str | None:
    """The canonical (dashed, lower-case) form of a UUID in any of those shapes, or None for anything else."""
    if not UUID_SHAPE.match(value):
        return None
    h = value.replace("-", "").lower()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
