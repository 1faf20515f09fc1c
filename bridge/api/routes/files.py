"""Files of a session: upload (multipart `src`, the client's field), listing, and download as the clients
read it (`multipart/mixed`, one tar archive per requested path). Paths are confined to the session folder
by the kernel runner, which works as the user inside the container; bytes stream, nothing is buffered."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from bridge.api.deps import CurrentUser
from bridge.errors import InvalidAPIParameters
from bridge.services.execution import ExecutionService

router = APIRouter()
MAX_FILES = 100


def _svc(request: Request) -> ExecutionService:
    svc: ExecutionService = request.app.state.execution
    return svc


async def _chunks(upload: Any) -> AsyncIterator[bytes]:
    while chunk := await upload.read(1 << 20):
        yield chunk


@router.post("/session/{ref}/upload", status_code=204)
async def upload(request: Request, auth: CurrentUser, ref: str) -> Response:
    row = await request.app.state.sessions.resolve(auth, ref, request.query_params.get("owner_access_key"))
    form = await request.form(max_files=MAX_FILES)
    files = [v for k, v in form.multi_items() if k == "src" and isinstance(v, UploadFile)]
    if not files:
        raise InvalidAPIParameters("src: no file in the request (multipart field `src`)")
    for f in files:
        name = unquote(f.filename or "")  # aiohttp (the clients) percent-encodes file names
        if not name or "\0" in name:
            raise InvalidAPIParameters("src: a file needs a name")
        size = f.size if f.size is not None else len(await f.read())
        await f.seek(0)
        await _svc(request).upload(row, name, _chunks(f), size)
    await form.close()
    return Response(status_code=204)


@router.get("/session/{ref}/files")
async def list_files(request: Request, auth: CurrentUser, ref: str,
                     body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    path = str((body or {}).get("path") or request.query_params.get("path") or ".")
    row = await request.app.state.sessions.resolve(auth, ref, request.query_params.get("owner_access_key"))
    files = await _svc(request).list_files(row, path)
    return {"files": json.dumps(files), "items": files, "errors": ""}


@router.get("/session/{ref}/download")
async def download(request: Request, auth: CurrentUser, ref: str,
                   body: Annotated[dict[str, Any] | None, Body()] = None) -> StreamingResponse:
    paths = (body or {}).get("files") or request.query_params.getlist("files")
    if not paths or not isinstance(paths, list) or len(paths) > MAX_FILES:
        raise InvalidAPIParameters(f"files: a list of 1 to {MAX_FILES} paths is required")
    row = await request.app.state.sessions.resolve(auth, ref, request.query_params.get("owner_access_key"))
    svc = _svc(request)
    for p in paths:  # refuse escapes and missing files before the first byte goes out
        row = await svc.check_path(row, str(p))
    boundary = secrets.token_hex(16)

    async def body_stream() -> AsyncIterator[bytes]:
        for p in paths:
            yield (f"--{boundary}\r\nContent-Type: application/x-tar\r\nContent-Transfer-Encoding: binary\r\n"
                   f"Content-Disposition: attachment; filename=\"{str(p).rsplit('/', 1)[-1]}.tar\"\r\n\r\n").encode()
            async for chunk in svc.tar(row, str(p)):
                yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    return StreamingResponse(body_stream(), media_type=f"multipart/mixed; boundary={boundary}")


@router.get("/session/{ref}/download_single")
async def download_single(request: Request, auth: CurrentUser, ref: str,
                          body: Annotated[dict[str, Any] | None, Body()] = None) -> StreamingResponse:
    """One file's raw bytes (the web UI's download)."""
    path = (body or {}).get("file") or request.query_params.get("file")
    if not path:
        raise InvalidAPIParameters("file: a path is required")
    row = await request.app.state.sessions.resolve(auth, ref, request.query_params.get("owner_access_key"))
    svc = _svc(request)
    row = await svc.check_path(row, str(path))
    stream = svc.raw(row, str(path))
    first = await anext(stream, b"")  # a directory or an escape fails here, before the 200 goes out
    name = str(path).rsplit("/", 1)[-1]

    async def rest() -> AsyncIterator[bytes]:
        yield first
        async for chunk in stream:
            yield chunk

    return StreamingResponse(rest(), media_type="application/octet-stream",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})
