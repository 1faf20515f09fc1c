"""ASGI middleware that authenticates every request but the version probe, for HTTP and WebSocket alike.

It checks the API version header, the Date skew, and the HMAC signature of the keypair; refuses a
signature used before (domain/replay.py); applies the per-key rolling rate limit with X-RateLimit-*
headers; honours X-Method-Override (the signature covers the method the request takes effect as); and
puts the AuthContext in `scope["state"]["auth"]`. Secrets and signatures are never logged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.api import signing
from bridge.api.problems import count_error, problem
from bridge.config import AuthSettings
from bridge.domain.auth import AuthContext
from bridge.domain.ratelimit import RateLimiter
from bridge.domain.replay import ReplayGuard
from bridge.domain.versions import parse_version
from bridge.services.auth import load_keypair

logger = logging.getLogger(__name__)

# the version probe, and the password login the official webserver sends unsigned (its own guard: routes/auth)
UNSIGNED = {("GET", "/"), ("HEAD", "/"), ("POST", "/auth/authorize"), ("POST", "/auth/update-password-no-auth")}
OVERRIDABLE = {"GET", "PUT", "PATCH", "DELETE", "REPORT", "HEAD", "OPTIONS"}
BAD_PARAMS = ("invalid-api-params", "Missing or invalid API parameters.")
UNAUTHORIZED = ("unauthorized", "Credential/signature mismatch.")


class Refused(Exception):
    def __init__(self, status: int, slug: str, title: str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.slug, self.title, self.msg = status, slug, title, msg


class SignatureAuthMiddleware:
    def __init__(self, app: ASGIApp, settings: AuthSettings, exempt_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.settings = settings
        self.exempt_prefixes = exempt_prefixes
        self.limiter = RateLimiter(settings.rate_limit_window_s)
        self.replays = ReplayGuard(2 * settings.max_clock_skew_s + 60)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        path = scope["path"]
        if (method, path) in UNSIGNED or any(path.startswith(p) for p in self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        override = headers.get("x-method-override")
        try:
            auth, limit, remaining = await self._authenticate(scope, headers, method, override)
        except Refused as r:
            await self._refuse(scope, receive, send, r.status, r.slug, r.title, r.msg)
            return
        except Exception as e:  # the database is down, ...: still a problem body, never a traceback
            logger.error("authentication failed unexpectedly: %s", e, exc_info=e)
            await self._refuse(scope, receive, send, 500, "internal-server-error", "Internal server error.",
                               "authentication is unavailable")
            return
        scope.setdefault("state", {})["auth"] = auth
        if override and method == "POST":
            scope["method"] = override.upper()
        if remaining < 0:
            await problem(429, "too-many-requests", "Too many API requests.",
                          f"rate limit of {limit} requests per {self.settings.rate_limit_window_s} s exceeded",
                          )(scope, receive, self._with_rate_headers(send, limit, 0))
            return
        await self.app(scope, receive, self._with_rate_headers(send, limit, remaining))

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, slug: str, title: str,
                      msg: str) -> None:
        count_error(scope["app"], slug)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4000 + status, "reason": msg[:120]})
            return
        await problem(status, slug, title, msg)(scope, receive, send)

    def _with_rate_headers(self, send: Send, limit: int, remaining: int) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [
                    (b"x-ratelimit-limit", str(limit).encode()),
                    (b"x-ratelimit-remaining", str(remaining).encode()),
                    (b"x-ratelimit-window", str(self.settings.rate_limit_window_s).encode()),
                ]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        return wrapped

    async def _authenticate(self, scope: Scope, headers: Headers, method: str,
                            override: str | None) -> tuple[AuthContext, int, int]:
        version = headers.get("x-backendai-version")
        if not version:
            raise Refused(400, *BAD_PARAMS, "X-BackendAI-Version header is required")
        try:
            parse_version(version)
        except ValueError as e:
            raise Refused(400, *BAD_PARAMS, str(e)) from None
        authz = headers.get("authorization")
        if not authz:
            raise Refused(401, *UNAUTHORIZED, "Authorization header is missing")
        try:
            hash_name, access_key, given = signing.parse_authorization(authz)
        except ValueError as e:
            raise Refused(401, *UNAUTHORIZED, str(e)) from None
        if hash_name != "sha256":
            raise Refused(401, *UNAUTHORIZED, f"unsupported sign method HMAC-{hash_name}")
        date_header = headers.get("date") or headers.get("x-backendai-date")
        if not date_header:
            raise Refused(401, *UNAUTHORIZED, "Date header is missing")
        try:
            date = signing.parse_date(date_header)
        except ValueError as e:
            raise Refused(401, *UNAUTHORIZED, str(e)) from None
        skew = abs((datetime.now(UTC) - date).total_seconds())
        if skew > self.settings.max_clock_skew_s:
            raise Refused(401, *UNAUTHORIZED, (
                f"the request date is {skew:.0f} s away from the server time "
                f"(allowed: {self.settings.max_clock_skew_s} s)"))
        db = scope["app"].state.db
        async with db.unit_of_work() as s:
            found = await load_keypair(s, access_key)
        if found is None:
            raise Refused(401, *UNAUTHORIZED, "unknown or inactive access key")
        auth, secret = found
        raw_path = scope.get("raw_path") or scope["path"].encode()
        qs = scope.get("query_string", b"")
        path_qs = raw_path.decode("latin-1") + ("?" + qs.decode("latin-1") if qs else "")
        content_type = (headers.get("content-type") or "application/octet-stream").split(";")[0].strip()
        host = headers.get("host", "")
        effective = method
        if override:
            if method != "POST" or override.upper() not in OVERRIDABLE:
                raise Refused(400, *BAD_PARAMS, f"X-Method-Override: {override!r} is not allowed on {method}")
            effective = override.upper()
        # the signature must cover the method the request takes effect as: a POST signed as POST and resent
        # with X-Method-Override: DELETE must not delete anything
        if not signing.verify(secret, given, method=effective, path_qs=path_qs, date_header=date_header, date=date,
                              host=host, content_type=content_type, version=version):
            logger.info("signature mismatch for access key %s on %s %s", access_key, effective, scope["path"])
            raise Refused(401, *UNAUTHORIZED, "signature mismatch")
        if not self.replays.first_use(access_key, given):
            logger.warning("replayed signature for access key %s on %s %s", access_key, effective, scope["path"])
            raise Refused(401, *UNAUTHORIZED, "this signed request was already used (sign every request anew)")
        allowed, remaining = self.limiter.hit(access_key, auth.rate_limit)
        scope["app"].state.key_usage.hit(access_key)   # written a second later, with the others
        return auth, auth.rate_limit, remaining if allowed else -1
