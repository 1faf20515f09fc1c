"""Signed requests to a Backend.AI endpoint with the keys of the environment (BACKEND_ENDPOINT,
BACKEND_ACCESS_KEY, BACKEND_SECRET_KEY), using the same signing code the gateway verifies with."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

import httpx

from bridge.api import signing

API_VERSION = "v6.20220615"


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body
        msg = body.get("msg") or body.get("title") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status}: {msg}")


class BackendAIClient:
    def __init__(self, endpoint: str, access_key: str, secret_key: str, timeout_s: float = 600) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.access_key, self.secret_key = access_key, secret_key
        self.host = urlsplit(self.endpoint).netloc
        self.http = httpx.Client(timeout=timeout_s)

    @classmethod
    def from_env(cls) -> BackendAIClient:
        try:
            return cls(os.environ["BACKEND_ENDPOINT"], os.environ["BACKEND_ACCESS_KEY"],
                       os.environ["BACKEND_SECRET_KEY"])
        except KeyError as e:
            raise SystemExit(f"{e.args[0]} is not set (source .bridge-dev/env, or export your keys)") from None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        content_type = "application/json" if body is not None else "text/plain"
        headers = signing.auth_headers(self.access_key, self.secret_key, method=method, path_qs=path,
                                       host=self.host, content_type=content_type, version=API_VERSION)
        r = self.http.request(method, self.endpoint + path, headers=headers,
                              content=json.dumps(body) if body is not None else None)
        data = r.json() if r.content and "json" in r.headers.get("content-type", "") else r.text
        if r.status_code >= 400:
            raise ApiError(r.status_code, data)
        return data
