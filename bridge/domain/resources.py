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
