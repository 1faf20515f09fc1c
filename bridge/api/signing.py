"""Backend.AI request signing (HMAC-SHA256), exactly as the official clients compute it.

signing key = HMAC(HMAC(secret, UTC date of the Date header as YYYYMMDD), host)
signature   = hex HMAC(signing key, METHOD \\n path?query \\n Date \\n host:H \\n content-type:T \\n
                        x-backendai-version:V \\n sha256(b"").hex())
The body is never hashed (the clients always send the hash of the empty string).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime

EMPTY_BODY_HASH = hashlib.sha256(b"").hexdigest()
_AUTH = re.compile(r"^BackendAI\s+signMethod=HMAC-(\w+)\s*,\s*credential=([^:\s]+):([0-9a-fA-F]+)\s*\Z")


def parse_authorization(value: str) -> tuple[str, str, str]:
    """(hash name, access key, hex signature); ValueError when the header is not Backend.AI's."""
    m = _AUTH.match(value.strip())
    if not m:
        raise ValueError("malformed Authorization header")
    return m.group(1).lower(), m.group(2), m.group(3).lower()


def parse_date(value: str) -> datetime:
    """The Date header: ISO 8601 (the clients' form) or RFC 1123; no zone means UTC."""
    v = value.strip()
    try:
        d = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            d = parsedate_to_datetime(v)
        except (TypeError, ValueError):
            raise ValueError(f"unparsable date {value!r}") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def string_to_sign(method: str, path_qs: str, date_header: str, host: str, content_type: str,
                   version: str) -> str:
    return "\n".join([
        method.upper(), path_qs, date_header, f"host:{host}", f"content-type:{content_type.lower()}",
        f"x-backendai-version:{version}", EMPTY_BODY_HASH,
    ])


def signing_key(secret_key: str, date: datetime, host: str, hash_name: str = "sha256") -> bytes:
    k1 = hmac.new(secret_key.encode(), date.astimezone(UTC).strftime("%Y%m%d").encode(), hash_name).digest()
    return hmac.new(k1, host.encode(), hash_name).digest()


def signature(secret_key: str, date: datetime, host: str, to_sign: str, hash_name: str = "sha256") -> str:
    return hmac.new(signing_key(secret_key, date, host, hash_name), to_sign.encode(), hash_name).hexdigest()


def verify(secret_key: str, given: str, *, method: str, path_qs: str, date_header: str, date: datetime,
           host: str, content_type: str, version: str, hash_name: str = "sha256") -> bool:
    expected = signature(secret_key, date, host,
                         string_to_sign(method, path_qs, date_header, host, content_type, version), hash_name)
    return hmac.compare_digest(expected, given)


def auth_headers(access_key: str, secret_key: str, *, method: str, path_qs: str, host: str, content_type: str,
                 version: str, date: datetime | None = None, send_content_type: bool = True) -> dict[str, str]:
    """The headers of a signed request, as the clients send them (a WebSocket or SSE request signs
    `application/octet-stream` but sends no Content-Type: pass send_content_type=False)."""
    date_header = (date or datetime.now(UTC)).isoformat()
    sig = signature(secret_key, parse_date(date_header), host,
                    string_to_sign(method, path_qs, date_header, host, content_type, version))
    headers = {"Date": date_header, "X-BackendAI-Version": version,
               "Authorization": f"BackendAI signMethod=HMAC-SHA256, credential={access_key}:{sig}"}
    if send_content_type:
        headers["Content-Type"] = content_type
    return headers
