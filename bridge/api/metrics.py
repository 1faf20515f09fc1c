"""What the gateway tells about itself: `GET /metrics` in Prometheus text form for a scraper holding
`server.metrics_token`; the middleware that times every API request by method, route (its template, not the
path: ids stay out of the labels) and status; and the one that gives each request an id for the logs. The
metrics themselves are bridge.domain.metrics."""

from __future__ import annotations

import secrets
import time

from fastapi import APIRouter, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.api.problems import problem
from bridge.domain.metrics import Gauge
from bridge.domain.request_context import REQUEST_ID, request_id_from

router = APIRouter()
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class RequestIds:
    """Each request gets an id (the client's X-Request-ID when sane, else a new one), answered in X-Request-ID
    and carried by every log record the request causes, down to the Slurm commands it runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"), None)
        rid = request_id_from(given)
        token = REQUEST_ID.set(rid)

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            REQUEST_ID.reset(token)


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:   # a method outside the known set is one label: no series per made-up method
                method = scope["method"] if scope["method"] in METHODS else "OTHER"
                metrics.requests.observe(time.perf_counter() - t0, method, route, str(status[0]))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    state = request.app.state
    token = state.settings.server.metrics_token
    if token is None:
        return problem(404, "not-found", "Unknown URL path.", "metrics are off (set server.metrics_token)")
    given = request.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {token.get_secret_value()}".encode()):
        return problem(401, "unauthorized", "Credential/signature mismatch.",
                       "send Authorization: Bearer <server.metrics_token>")
    try:
        by_status = await state.sessions.count_by_status()
    except Exception:  # noqa: BLE001 - the database down shows as bridge_dependency_up{name="database"} 0
        by_status = {}
    sessions = Gauge("bridge_sessions", "Sessions not yet ended, by status.", ("status",),
                     lambda: {(k,): float(v) for k, v in by_status.items()})
    return Response(state.metrics.render([sessions]), media_type="text/plain; version=0.0.4; charset=utf-8")
