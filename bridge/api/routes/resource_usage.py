"""`/resource/usage/*`, `/resource/stats/*`, `/resource/recalculate-usage`: usage of sessions from Slurm
accounting, in the shapes of Backend.AI manager 23.09 (bridge/services/usage.py; docs/usage.md).

Parameters come from the query string, as the manager reads them on GET; a JSON body is read too, since
older clients (`backend.ai` 23.09's `Resource.usage_per_month`) send their parameters that way.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from bridge.api.deps import CurrentUser, SuperAdmin
from bridge.errors import InvalidAPIParameters
from bridge.services.usage import UsageService

router = APIRouter(prefix="/resource")

Payload = Annotated[dict[str, Any] | None, Body()]


def service(request: Request) -> UsageService:
    """One service per app, made on first use: it keeps the usage of finished jobs between requests."""
    state = request.app.state
    svc: UsageService | None = getattr(state, "usage", None)
    if svc is None:
        svc = state.usage = UsageService(state.db, state.slurm)
    return svc


def _param(request: Request, body: dict[str, Any] | None, name: str) -> Any:
    if name in request.query_params:
        return request.query_params[name]
    return (body or {}).get(name)


def _text(request: Request, body: dict[str, Any] | None, name: str, *, required: bool = True) -> str | None:
    value = _param(request, body, name)
    if value in (None, ""):
        if required:
            raise InvalidAPIParameters("Input validation error", data={"errors": {name: "is required"}})
        return None
    if not isinstance(value, str):
        raise InvalidAPIParameters("Input validation error", data={"errors": {name: "value is not a string"}})
    return value


def _group_ids(request: Request, body: dict[str, Any] | None) -> list[str]:
    """`group_ids=a,b` (the current client), `group_ids=a&group_ids=b`, or a JSON list."""
    values: list[Any] = request.query_params.getlist("group_ids")
    if not values:
        raw = (body or {}).get("group_ids")
        values = raw if isinstance(raw, list) else [] if raw is None else [raw]
    out: list[str] = []
    for v in values:
        if not isinstance(v, str):
            raise InvalidAPIParameters("Input validation error", data={"errors": {"group_ids": "not a string"}})
        out += [g.strip() for g in v.split(",") if g.strip()]
    return out


@router.get("/usage/month")
async def usage_per_month(request: Request, _: SuperAdmin, body: Payload = None) -> JSONResponse:
    month = _text(request, body, "month")
    assert month is not None
    return JSONResponse(await service(request).month(month, _group_ids(request, body) or None))


@router.get("/usage/period")
async def usage_per_period(request: Request, _: SuperAdmin, body: Payload = None) -> JSONResponse:
    start = _text(request, body, "start_date")
    end = _text(request, body, "end_date")
    assert start is not None and end is not None
    return JSONResponse(await service(request).days(start, end, _text(request, body, "group_id", required=False)))


@router.get("/stats/user/month")
async def user_month_stats(request: Request, auth: CurrentUser) -> JSONResponse:
    return JSONResponse(await service(request).monthly_stats(auth.user_uuid))


@router.get("/stats/admin/month")
async def admin_month_stats(request: Request, _: SuperAdmin) -> JSONResponse:
    return JSONResponse(await service(request).monthly_stats(None))


@router.post("/recalculate-usage")
async def recalculate_usage(request: Request, _: SuperAdmin) -> dict[str, Any]:
    """Nothing here is counted incrementally (Slurm does the counting); what the gateway keeps is the usage of
    finished jobs read from accounting, which this drops so that the next answers read accounting again."""
    service(request).forget()
    return {}
