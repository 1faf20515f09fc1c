"""Backend.AI API versions: `vMAJOR.YYYYMMDD`. The gateway serves v6.20220615 and accepts v4 to v8 headers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

SERVER_VERSION = "v6.20220615"
MIN_MAJOR, MAX_MAJOR = 4, 8
_VERSION = re.compile(r"^v(\d+)\.(\d{8})\Z")


@dataclass(frozen=True, order=True, slots=True)
class ApiVersion:
    major: int
    revision: str  # YYYYMMDD

    def __str__(self) -> str:
        return f"v{self.major}.{self.revision}"


def parse_version(value: str) -> ApiVersion:
    """Parse and validate a client's X-BackendAI-Version; ValueError says why it is refused."""
    m = _VERSION.match(value.strip())
    if not m:
        raise ValueError(f"malformed API version {value!r} (expected vMAJOR.YYYYMMDD)")
    major, revision = int(m.group(1)), m.group(2)
    try:
        date(int(revision[:4]), int(revision[4:6]), int(revision[6:]))
    except ValueError:
        raise ValueError(f"API version {value!r} has an invalid date") from None
    if not MIN_MAJOR <= major <= MAX_MAJOR:
        raise ValueError(f"unsupported API version {value!r}: this server accepts v{MIN_MAJOR} to v{MAX_MAJOR}")
    return ApiVersion(major, revision)
