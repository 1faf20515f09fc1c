"""`/folders`: virtual folders on the cluster's shared storage, in the shapes each client version reads
(client-compat.md §5.14). A folder is named by its name (22.x, 23.x) or its id in hex (26.x)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from bridge.api.deps import CurrentUser
from bridge.api.wire.folders import folder
from bridge.domain.resources import VFOLDER_HOST_PERMISSIONS
from bridge.errors import InvalidAPIParameters
from bridge.services.folders import FolderService, resume_offset

router = APIRouter()
Payload = Annotated[dict[str, Any] | None, Body()]


def service(request: Request) -> FolderService:
    svc: FolderService = request.app.state.folders
    return svc


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


# ---- transfers: the links request-upload and request-download hand out carry their own proof (a token),
# no signature, as the clients send them to the storage proxy's URL (client-compat.md §5.15)


def _transfer_url(request: Request, kind: str) -> str:
    """The transfer port's address where one is open (bridge.api.transfer_port), else this API's own."""
    settings = request.app.state.settings
    port = getattr(request.app.state, "transfer_port", None)
    if settings.storage.transfer_url:
        base = settings.storage.transfer_url
    elif port is not None:
        host = (urlsplit(settings.server.public_url).hostname if settings.server.public_url else None) \
            or request.url.hostname or settings.server.host
        base = f"http://{f'[{host}]' if ':' in host else host}:{port.port}"
    else:
        base = settings.server.public_url or str(request.base_url)
    return f"{base.rstrip('/')}/folders/_/transfer/{kind}"


@router.patch("/folders/_/transfer/upload", status_code=204)
async def tus_patch(request: Request, token: str = "") -> Response:
    try:
        offset = int(request.headers.get("upload-offset", ""))
    except ValueError:
        raise InvalidAPIParameters("Upload-Offset: a byte offset is required") from None
    new = await service(request).upload_chunk(token, offset, request.stream())
    return Response(status_code=204, headers={"Upload-Offset": str(new), "Tus-Resumable": "1.0.0"})


@router.head("/folders/_/transfer/upload")
async def tus_head(request: Request, token: str = "") -> Response:
    now, announced = await service(request).upload_state(token)
    return Response(status_code=200, headers={"Upload-Offset": str(now), "Upload-Length": str(announced),
                                              "Tus-Resumable": "1.0.0", "Cache-Control": "no-store"})


@router.options("/folders/_/transfer/upload")
async def tus_options() -> Response:
    return Response(status_code=204, headers={"Tus-Resumable": "1.0.0", "Tus-Version": "1.0.0"})


@router.get("/folders/_/transfer/download")
async def download(request: Request, token: str = "") -> Response:
    got = await service(request).download(token, resume_offset(request.headers.get("range", "")))
    status, headers = got.answer()
    if status == 416:
        return Response(status_code=416, headers=headers)
    return StreamingResponse(got.stream(), status_code=status, headers=headers)


@router.post("/folders/{ref}/request-upload")
async def request_upload(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    body = body or {}
    token = await service(request).request_upload(auth, ref, body.get("path"), body.get("size"))
    return {"token": token, "url": _transfer_url(request, "upload")}


@router.post("/folders/{ref}/request-download")
async def request_download(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    token = await service(request).request_download(auth, ref, (body or {}).get("path"))
    return {"token": token, "url": _transfer_url(request, "download")}


@router.get("/config/vfolder-types")
async def vfolder_types(auth: CurrentUser) -> list[str]:
    return ["user", "group"]


@router.get("/acl")
async def host_permissions(auth: CurrentUser) -> dict[str, list[str]]:
    """The permissions a folder host can grant (what `allowed_vfolder_hosts` maps each host to); the WebUI
    asks for them on its resource-policy pages."""
    return {"vfolder_host_permission_list": list(VFOLDER_HOST_PERMISSIONS)}


@router.get("/folders/_/hosts")
async def hosts(request: Request, auth: CurrentUser) -> dict[str, Any]:
    return await service(request).hosts_with_usage()


@router.get("/folders/_/all-hosts")
async def all_hosts(request: Request, auth: CurrentUser) -> dict[str, Any]:
    return await service(request).hosts_with_usage()


@router.get("/folders/_/allowed-types")
@router.get("/folders/_/allowed_types", include_in_schema=False)   # the WebUI 23.09 spelling
async def allowed_types(auth: CurrentUser) -> list[str]:
    return ["user", "group"]


# ---- sharing (docs/folders.md): invitations to user folders, per-member permissions on project folders


@router.get("/folders/invitations/list")
async def invitations(request: Request, auth: CurrentUser) -> dict[str, Any]:
    return {"invitations": await service(request).invitations(auth)}


@router.get("/folders/invitations/list-sent")
async def invitations_sent(request: Request, auth: CurrentUser) -> dict[str, Any]:
    return {"invitations": await service(request).invitations(auth, sent=True)}


@router.post("/folders/invitations/update/{inv_id}")
async def update_invitation(request: Request, auth: CurrentUser, inv_id: str, body: Payload = None) -> dict[str, Any]:
    await service(request).update_invitation(auth, inv_id, (body or {}).get("perm"))
    return {"msg": f"invitation {inv_id} updated"}


@router.post("/folders/invitations/accept")
async def accept_invitation(request: Request, auth: CurrentUser, body: Payload = None) -> dict[str, Any]:
    await service(request).accept(auth, (body or {}).get("inv_id"))
    return {}


@router.delete("/folders/invitations/delete")
async def delete_invitation(request: Request, auth: CurrentUser, inv_id: str | None = None,
                            body: Payload = None) -> dict[str, Any]:
    await service(request).reject(auth, inv_id or (body or {}).get("inv_id"))
    return {"msg": "invitation deleted"}


@router.get("/folders/_/shared")
async def shared(request: Request, auth: CurrentUser, vfolder_id: str | None = None,
                 body: Payload = None) -> list[dict[str, Any]]:
    return await service(request).shared(auth, vfolder_id or (body or {}).get("vfolder_id"))   # a root array


@router.post("/folders/_/shared")
async def set_shared(request: Request, auth: CurrentUser, body: Payload = None) -> dict[str, Any]:
    body = body or {}
    await service(request).set_shared(auth, body.get("vfolder"), body.get("user"), body.get("perm"))
    return {"msg": "shared folder permission updated"}


@router.get("/folders/_/id")
async def folder_id(request: Request, auth: CurrentUser, name: str | None = None,
                    body: Payload = None) -> dict[str, Any]:
    acc = await service(request).get(auth, name or str((body or {}).get("name") or ""))
    return {"id": folder(acc)["id"], "name": acc.row.name}


@router.get("/folders/_/quota")
async def quota(request: Request, auth: CurrentUser, id: str = "", folder_host: str | None = None) -> dict[str, Any]:
    svc = service(request)
    row = (await svc.get(auth, id)).row
    used, _ = await svc.usage(row)
    return {"used_bytes": used, "limit_bytes": await svc.size_limit(row)}


@router.post("/folders/_/quota")
async def set_quota(request: Request, auth: CurrentUser, body: Payload = None) -> dict[str, Any]:
    raise InvalidAPIParameters("a folder's size limit is its owner's keypair resource policy's max_vfolder_size "
                               "(the gateway does not set file-system quotas per folder)")


@router.get("/folders/_/usage")
async def usage(request: Request, auth: CurrentUser, id: str = "", folder_host: str | None = None) -> dict[str, Any]:
    row = (await service(request).get(auth, id)).row
    used, files = await service(request).usage(row)
    return {"file_count": files, "used_bytes": used}


@router.get("/folders/_/used-bytes")
async def used_bytes(request: Request, auth: CurrentUser, id: str = "",
                     folder_host: str | None = None) -> dict[str, Any]:
    row = (await service(request).get(auth, id)).row
    return {"used_bytes": (await service(request).usage(row))[0]}


@router.post("/folders", status_code=201)
async def create(request: Request, auth: CurrentUser, req: CreateFolder) -> dict[str, Any]:
    if req.unmanaged_path:
        raise InvalidAPIParameters("unmanaged_path: only folders on the configured storage hosts are served")
    acc = await service(request).create(auth, req.name, req.host, group=req.group, usage_mode=req.usage_mode,
                                        permission=req.permission, cloneable=req.cloneable)
    return folder(acc)


@router.get("/folders")
async def list_(request: Request, auth: CurrentUser, owner_access_key: str | None = None) -> list[dict[str, Any]]:
    return [folder(a) for a in await service(request).visible(auth, owner_access_key)]


@router.delete("/folders", status_code=204)
async def delete_by_id(request: Request, auth: CurrentUser, body: Payload = None) -> Response:
    await service(request).delete(auth, str((body or {}).get("id") or (body or {}).get("name") or ""))
    return Response(status_code=204)


@router.get("/folders/{ref}")
async def info(request: Request, auth: CurrentUser, ref: str) -> dict[str, Any]:
    acc, entries = await service(request).files(auth, ref, ".")
    return folder(acc, num_files=len(entries))


@router.delete("/folders/{ref}", status_code=204)
async def delete(request: Request, auth: CurrentUser, ref: str) -> Response:
    await service(request).delete(auth, ref)
    return Response(status_code=204)


@router.get("/folders/{ref}/files")
async def files(request: Request, auth: CurrentUser, ref: str, path: str | None = None,
                body: Payload = None) -> dict[str, Any]:
    rel = path if path is not None else (body or {}).get("path", ".")
    _, entries = await service(request).files(auth, ref, rel)
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


@router.post("/folders/{ref}/rename")
async def rename(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> Response:
    await service(request).rename(auth, ref, (body or {}).get("new_name"))
    return Response(status_code=201)


@router.post("/folders/{ref}/update-options")
async def update_options(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> Response:
    body = body or {}
    await service(request).update_options(auth, ref, body.get("permission"), body.get("cloneable"))
    return Response(status_code=201)


@router.post("/folders/{ref}/move-file")
async def move_file(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    body = body or {}
    await service(request).move(auth, ref, body.get("src"), body.get("dst"))
    return {}


@router.post("/folders/{ref}/rename-file")
@router.post("/folders/{ref}/rename_file", include_in_schema=False)   # the WebUI 23.09's spelling
async def rename_file(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    body = body or {}
    await service(request).rename_file(auth, ref, body.get("target_path"), body.get("new_name"))
    return {}


@router.delete("/folders/{ref}/delete-files")
@router.delete("/folders/{ref}/delete_files", include_in_schema=False)   # the WebUI 23.09's spelling
async def delete_files(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    body = body or {}
    await service(request).delete_files(auth, ref, body.get("files"), bool(body.get("recursive")))
    return {}


@router.post("/folders/{ref}/invite")
async def invite(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    body = body or {}
    invitees = body.get("emails") or body.get("user_ids")   # the clients send user_ids (which are emails)
    return {"invited_ids": await service(request).invite(auth, ref, body.get("perm", "rw"), invitees)}


@router.post("/folders/{ref}/leave")
async def leave(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    await service(request).leave(auth, ref, (body or {}).get("shared_user_uuid"))
    return {"msg": "left the shared folder"}


@router.post("/folders/{ref}/share", status_code=201)
async def share(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    body = body or {}
    return {"shared_emails": await service(request).share(auth, ref, body.get("permission", "rw"),
                                                           body.get("emails"))}


@router.delete("/folders/{ref}/unshare")
async def unshare(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    return {"unshared_emails": await service(request).unshare(auth, ref, (body or {}).get("emails"))}


@router.post("/folders/{ref}/clone", status_code=201)
async def clone(request: Request, auth: CurrentUser, ref: str, body: Payload = None) -> dict[str, Any]:
    body = body or {}
    acc, copy = await service(request).clone(
        auth, ref, body.get("target_name"), body.get("target_host"), usage_mode=str(body.get("usage_mode") or
        "general"), permission=str(body.get("permission") or "rw"), cloneable=bool(body.get("cloneable")))
    # the copy runs on; the clients follow it on /events/background-task
    task_id = request.app.state.bgtasks.start(auth.access_key, "vfolder-clone", copy)
    return {**folder(acc), "bgtask_id": task_id}
