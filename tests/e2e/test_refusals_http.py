"""Refusals seen on the wire of the running gateway: each is a JSON problem body, never a traceback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import pytest

from bridge.api import signing

pytestmark = pytest.mark.cluster


def signed(env, path="/auth/test", *, secret=None, access=None, date=None, version="v6.20220615"):
    headers = signing.auth_headers(access or env["BACKEND_ACCESS_KEY"], secret or env["BACKEND_SECRET_KEY"],
                                   method="GET", path_qs=path, host=urlsplit(env["BACKEND_ENDPOINT"]).netloc,
                                   content_type="text/plain", version=version, date=date)
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
