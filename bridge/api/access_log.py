"""The access log never shows an app token: the browser proxy's start-service link carries one in its
query (`?token=...`), and whoever reads the log could open the app as its owner until it expires."""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"(?i)([?&](?:token|app_token)=)[^&\s]*")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """For uvicorn's access logger: its args are (client, method, path with query, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install() -> None:
    logging.getLogger("uvicorn.access").addFilter(RedactTokens())
