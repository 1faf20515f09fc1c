"""`/folders`: virtual folders on the cluster's shared storage, in the shapes each client version reads
(client-compat.md §5.14). A folder is named by its name (22.x, 23.x) or its id in hex (26.x)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel, Field

from bridge.api.deps import CurrentUser
from bridge.api.wire.folders import folder
from bridge.errors import InvalidAPIParameters
from bridge.services.folders import FolderService

router = APIRouter()
Payload = Annotated[dict[str, Any] | None, Body()]


def service(request: Request) -> FolderService:
    return request.app.state.folders


class CreateFolder(BaseModel):
    name: Any = None
    host: str | None = None
    group: str | None = None
    usage_mode: str = "general"
    permission: str = "rw"
    cloneable: bool = False
    unmanaged_path: str | None = None
    quota: Any = None

    model_config = {"extra": "ignore"}


class MakeDir(BaseModel):
    path: str | list[str] = Field(...)
    parents: bool = False
    exist_ok: bool = False


@router.get("/config/vfolder-types")
async def vfolder_types(auth: CurrentUser) -> list[str]:
    return ["user"]


@router.get("/folders/_/hosts")
async def hosts(request: Request, auth: CurrentUser) -> dict[str, Any]:
    return service(request).hosts()


@router.get("/folders/_/all-hosts")
async def all_hosts(request: Request, auth: CurrentUser) -> dict[str, Any]:
    return service(request).hosts()


@router.get("/folders/_/allowed-types")
async def allowed_types(auth: CurrentUser) -> list[str]:
    return ["user"]


@router.get("/folders/_/id")
async def folder_id(request: Request, auth: CurrentUser, name: str | None = None,
                    body: Payload = None) -> dict[str, Any]:
    row = await service(request).get(auth, name or str((body or {}).get("name") or ""))
    return {"id": folder(row, auth.user_uuid)["id"], "name": row.name}


@router.post("/folders", status_code=201)
async def create(request: Request, auth: CurrentUser, req: CreateFolder) -> dict[str, Any]:
    if req.unmanaged_path:
        raise InvalidAPIParameters("unmanaged_path: only folders on the configured storage hosts are served")
    row = await service(request).create(auth, req.name, req.host, group=req.group, usage_mode=req.usage_mode,
                                        permission=req.permission, cloneable=req.cloneable)
    return folder(row, auth.user_uuid)


@router.get("/folders")
async def list_(request: Request, auth: CurrentUser, owner_access_key: str | None = None) -> list[dict[str, Any]]:
    return [folder(r, auth.user_uuid) for r in await service(request).owned(auth, owner_access_key)]


@router.delete("/folders", status_code=204)
async def delete_by_id(request: Request, auth: CurrentUser, body: Payload = None) -> Response:
    await service(request).delete(auth, str((body or {}).get("id") or (body or {}).get("name") or ""))
    return Response(status_code=204)


@router.get("/folders/{ref}")
async def info(request: Request, auth: CurrentUser, ref: str) -> dict[str, Any]:
    row, entries = await service(request).files(auth, ref, ".")
    return folder(row, auth.user_uuid, num_files=len(entries))


@router.delete("/folders/{ref}", status_code=204)
async def delete(request: Request, auth: CurrentUser, ref: str) -> Response:
    await service(request).delete(auth, ref)
    return Response(status_code=204)


@router.get("/folders/{ref}/files")
async def files(request: Request, auth: CurrentUser, ref: str, path: str | None = None,
                body: Payload = None) -> dict[str, Any]:
    rel = path if path is not None else (body or {}).get("path", ".")
    row, entries = await service(request).files(auth, ref, rel)
    old = [{"filename": e["name"], "size": e["size"], "mode": e["mode"], "type": e["type"],
            "mtime": e["mtime"]} for e in entries]   # a Unix time: the clients call fromtimestamp() on it
    new = [{"name": e["name"], "size": e["size"], "mode": e["mode"], "type": e["type"],
            "modified": datetime.fromtimestamp(float(e["mtime"]), UTC).isoformat()} for e in entries]
    # 22.x and 23.x read `files` as a JSON string; 26.x reads `items`
    return {"files": json.dumps(old), "items": new, "folder_path": rel}


@router.post("/folders/{ref}/mkdir", status_code=201)
async def mkdir(request: Request, auth: CurrentUser, ref: str, req: MakeDir) -> dict[str, Any]:
    paths = [req.path] if isinstance(req.path, str) else list(req.path)
    success, failed = [], []
    for p in paths:
        try:
            success.append({"item": await service(request).mkdir(auth, ref, p, parents=req.parents,
                                                                  exist_ok=req.exist_ok)})
        except InvalidAPIParameters as e:
            if len(paths) == 1:
                raise
            failed.append({"item": p, "msg": e.msg})
    return {"results": {"success": success, "failed": failed}}
