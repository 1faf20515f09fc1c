"""Refusals seen on the wire of the running gateway: each is a JSON problem body, never a traceback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from bridge.api import signing

pytestmark = pytest.mark.cluster


def signed(env, path="/auth/test", *, secret=None, access=None, date=None, version="v6.20220615"):
    host = urlsplit(env["BACKEND_ENDPOINT"]).netloc
    date_header = (date or datetime.now(UTC)).isoformat()
    to_sign = signing.string_to_sign("GET", path, date_header, host, "text/plain", version)
    sig = signing.signature(secret or env["BACKEND_SECRET_KEY"], signing.parse_date(date_header), host, to_sign)
    credential = f"{access or env['BACKEND_ACCESS_KEY']}:{sig}"
    headers = {"Date": date_header, "X-BackendAI-Version": version, "Content-Type": "text/plain",
               "Authorization": f"BackendAI signMethod=HMAC-SHA256, credential={credential}"}
    return httpx.get(env["BACKEND_ENDPOINT"] + path, headers=headers, timeout=10)


def problem(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert {"type", "title", "msg"} <= set(body) and body["type"].startswith("https://api.backend.ai/probs/")
    assert "Traceback" not in r.text
    return body


def test_the_signed_request_itself_passes(gateway):
    assert signed(gateway).json()["authorized"] == "yes"


def test_wrong_signature(gateway):
    assert problem(signed(gateway, secret="x" * 40), 401)["msg"] == "signature mismatch"


def test_stale_date(gateway):
    body = problem(signed(gateway, date=datetime.now(UTC) - timedelta(minutes=20)), 401)
    assert "away from the server time" in body["msg"]


def test_unknown_key(gateway):
    assert "unknown" in problem(signed(gateway, access="AKIA1111111111111111"), 401)["msg"]


def test_unknown_version(gateway):
    assert "v9" in problem(signed(gateway, version="v9.20250722"), 400)["msg"]
