"""Short-lived signed claims (HMAC-SHA256 with the gateway's secret): `<base64url json>.<base64url mac>`.
For links that carry their own proof, such as a folder's upload and download URLs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from bridge.errors import AuthorizationFailed


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue(secret: str, purpose: str, claims: dict[str, Any], ttl_s: int, now: float | None = None) -> str:
    body = {**claims, "p": purpose, "e": int((now or time.time()) + ttl_s)}
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())}"


def open_(secret: str, purpose: str, token: str, now: float | None = None) -> dict[str, Any]:
    """The claims of a genuine, unexpired token issued for `purpose`; AuthorizationFailed otherwise."""
    payload, _, mac = (token or "").partition(".")
    if not mac or not (payload + mac).isascii():
        raise AuthorizationFailed("invalid token")
    good = _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac.encode(), good.encode()):
        raise AuthorizationFailed("invalid token")
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        raise AuthorizationFailed("invalid token") from None
    if not isinstance(claims, dict) or claims.get("p") != purpose:
        raise AuthorizationFailed("the token is for something else")
    if int(claims.get("e", 0)) < (now or time.time()):
        raise AuthorizationFailed("the token has expired")
    return claims
