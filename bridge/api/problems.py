"""The one place errors become Backend.AI JSON problem bodies ({type, title, msg}); no traceback ever leaks."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.errors import PROBLEM_TYPE_BASE, BridgeError

logger = logging.getLogger(__name__)

_HTTP_SLUGS = {
    400: ("invalid-api-params", "Missing or invalid API parameters."),
    401: ("unauthorized", "Credential/signature mismatch."),
    403: ("forbidden", "Forbidden operation."),
    404: ("not-found", "Unknown URL path."),
    405: ("method-not-allowed", "Method not allowed."),
    413: ("request-too-large", "Request entity too large."),
    429: ("too-many-requests", "Too many API requests."),
}


def problem(status: int, slug: str, title: str, msg: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "msg": msg or title}
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


def count_error(app: Any, slug: str) -> None:
    """One more problem answer of this type (bridge_errors_total)."""
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is not None:
        metrics.errors.inc(slug)


def install(app: FastAPI) -> None:
    @app.exception_handler(BridgeError)
    async def _bridge_error(_req: Request, exc: BridgeError) -> JSONResponse:
        count_error(_req.app, exc.slug)
        extra = {"data": exc.data} if exc.data else {}
        response = problem(exc.status, exc.slug, exc.title, exc.msg, **extra)
        retry = getattr(exc, "retry_after_s", None)
        if retry:
            response.headers["Retry-After"] = str(retry)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()
        ]
        count_error(_req.app, "invalid-api-params")
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        field = ".".join(x for x in first["loc"] if x not in ("body", "query", "path"))
        msg = str(first["msg"])
        return problem(400, "invalid-api-params", "Missing or invalid API parameters.",
                       f"{field}: {msg}" if field else msg, data={"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error."))
        count_error(_req.app, slug)
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail else title
        return problem(exc.status_code, slug, title, detail)

    @app.exception_handler(Exception)
    async def _unexpected(_req: Request, exc: Exception) -> JSONResponse:
        count_error(_req.app, "internal-server-error")
        request_id = uuid.uuid4().hex[:12]
        logger.error("unexpected error (request %s): %s", request_id, exc, exc_info=exc)
        return problem(500, "internal-server-error", "Internal server error.",
                       f"An unexpected error occurred (request id {request_id}).", request_id=request_id)
