"""`/logs/error`: clients' own error reports (the WebUI's error log page)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from bridge.api.deps import CurrentUser

router = APIRouter()


@router.post("/logs/error")
async def append(request: Request, auth: CurrentUser,
                 body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    await request.app.state.error_logs.append(auth, body or {})
    return {"success": True}


@router.get("/logs/error")
async def listing(request: Request, auth: CurrentUser, mark_read: bool = False,
                  page_size: Annotated[int, Query(ge=1, le=100)] = 20,
                  page_no: Annotated[int, Query(ge=1, le=1_000_000)] = 1) -> dict[str, Any]:
    page: dict[str, Any] = await request.app.state.error_logs.page(auth, page_no=page_no, page_size=page_size,
                                                                   mark_read=mark_read)
    return page


@router.post("/logs/error/{log_id}/clear")
async def clear(request: Request, auth: CurrentUser, log_id: str) -> dict[str, Any]:
    await request.app.state.error_logs.clear(auth, log_id)
    return {"success": True}
