"""`/user-config/dotfiles`, `/user-config/bootstrap-script`, `/group-config/dotfiles`, `/domain-config/dotfiles`:
what every new session of a user, a project or a domain finds in its home ([sessions](../../../docs/sessions.md)).
Parameters come in the query string or (the clients' habit, even for GET and DELETE) a JSON body."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from bridge.api.deps import CurrentUser
from bridge.services.user_config import UserConfig

router = APIRouter()
Payload = Annotated[dict[str, Any] | None, Body()]
SCOPES = {"user-config": "user", "group-config": "group", "domain-config": "domain"}


def service(request: Request) -> UserConfig:
    svc: UserConfig = request.app.state.user_config
    return svc


def params(request: Request, body: dict[str, Any] | None) -> dict[str, Any]:
    return {**dict(request.query_params), **(body or {})}


def _target(p: dict[str, Any]) -> dict[str, Any]:
    return {k: p.get(k) for k in ("owner_access_key", "domain", "group")}


def _routes(prefix: str, scope: str) -> None:
    path = f"/{prefix}/dotfiles"

    @router.get(path, name=f"{scope}-dotfiles-get")
    async def get(request: Request, auth: CurrentUser, body: Payload = None) -> Any:
        p = params(request, body)
        return await service(request).list(auth, scope, _target(p), p.get("path") or None)

    async def put(request: Request, auth: CurrentUser, body: Payload = None) -> dict[str, Any]:
        """POST adds a dotfile, PATCH replaces one."""
        p = params(request, body)
        await service(request).put(auth, scope, _target(p), p.get("path"), p.get("data"), p.get("permission"),
                                   create=request.method == "POST")
        return {}

    router.add_api_route(path, put, methods=["POST"], name=f"{scope}-dotfiles-create")
    router.add_api_route(path, put, methods=["PATCH"], name=f"{scope}-dotfiles-update")

    @router.delete(path, name=f"{scope}-dotfiles-delete")
    async def delete(request: Request, auth: CurrentUser, body: Payload = None) -> dict[str, Any]:
        p = params(request, body)
        await service(request).remove(auth, scope, _target(p), p.get("path"))
        return {"success": True}


for _prefix, _scope in SCOPES.items():
    _routes(_prefix, _scope)


@router.get("/user-config/bootstrap-script")
async def get_bootstrap_script(request: Request, auth: CurrentUser, body: Payload = None) -> str:
    return await service(request).bootstrap_script(auth, params(request, body).get("owner_access_key"))


@router.post("/user-config/bootstrap-script")
async def set_bootstrap_script(request: Request, auth: CurrentUser, body: Payload = None) -> dict[str, Any]:
    p = params(request, body)
    await service(request).set_bootstrap_script(auth, p.get("script", ""), p.get("owner_access_key"))
    return {}
