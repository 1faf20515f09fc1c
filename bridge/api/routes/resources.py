"""`/resource/presets`, `/resource/check-presets` and `/scaling-groups`: what a user may start, and where."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from bridge.api.deps import CurrentUser
from bridge.services import accounts

router = APIRouter()


@router.get("/resource/presets")
async def presets(request: Request, auth: CurrentUser) -> dict[str, Any]:
    return {"presets": await request.app.state.presets.listing()}


class CheckPresets(BaseModel):
    group: str = Field("default", min_length=1)   # the official client's Resource.check_presets() sends no body
    scaling_group: str | None = None


@router.post("/resource/check-presets")
async def check_presets(request: Request, auth: CurrentUser, req: CheckPresets | None = None) -> dict[str, Any]:
    req = req or CheckPresets()
    checked: dict[str, Any] = await request.app.state.presets.check(auth, req.group, req.scaling_group)
    return checked


@router.get("/scaling-groups")
async def scaling_groups(request: Request, auth: CurrentUser,
                         group: str = Query(..., min_length=1)) -> dict[str, Any]:
    """The resource groups the caller may start sessions in for project `group` (a name or an id)."""
    state = request.app.state
    async with state.db.unit_of_work() as s:
        project = await accounts.caller_project(s, auth, group)
        names = await state.sessions.resource_groups.allowed(
            s, domain=auth.domain_name, group_id=project.id, access_key=auth.access_key)
    return {"scaling_groups": [{"name": n} for n in names]}
