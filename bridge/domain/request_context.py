"""The id of the API request being served, for the log records it causes (down to the Slurm commands it
runs): set by the API's request-id middleware, read by the log formatter. A context variable, so each
request (and each task it starts) sees its own."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
_GIVEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_from(given: str | None) -> str:
    """The client's own X-Request-ID when it is a sane token (a proxy's, say), else a new one."""
    if given and _GIVEN.fullmatch(given):
        return given
    return secrets.token_hex(8)
