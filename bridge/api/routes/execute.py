"""Code execution: `POST /session/{ref}` (query mode over REST), the WebSocket
`/stream/session/{ref}/execute` as the clients use it, and the kernel runners' report
`POST /kernel-callback/{session_id}` (signed with the session's secret, not by a keypair)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed

from bridge.api.deps import CurrentUser
from bridge.domain import runner_auth
from bridge.errors import AuthorizationFailed, BridgeError, InvalidAPIParameters
from bridge.services.execution import ExecutionService

router = APIRouter()


def service(app: Any) -> ExecutionService:
    svc: ExecutionService = app.state.execution
    return svc


class KernelReport(BaseModel):
    port: int
    secret: str | None = None   # only from runners copied before reports were signed (X-Bridge-Auth)
    auth: str | None = None
    pid: int | None = None
    node: str | None = None
    gpus: str | None = None
    job_gpus: str | None = None
    shards: str | None = None


@router.post("/kernel-callback/{session_id}")
async def kernel_callback(request: Request, session_id: str, report: KernelReport) -> dict[str, bool]:
    host = request.client.host if request.client else None
    if not host:
        raise AuthorizationFailed("no peer address")
    signature = request.headers.get(runner_auth.HEADER)
    if signature is None and report.secret is None:
        raise AuthorizationFailed("the report is not signed")
    await service(request.app).register(
        session_id, host, report.port, signature=signature, body=await request.body(),
        legacy_secret=report.secret, info=report.model_dump(include={"node", "gpus", "job_gpus", "shards"}))
    return {"ok": True}


@router.post("/session/{ref}/interrupt", status_code=204)
async def interrupt(request: Request, auth: CurrentUser, ref: str) -> None:
    row = await request.app.state.sessions.resolve(auth, ref, request.query_params.get("owner_access_key"))
    await service(request.app).interrupt(row)


@router.post("/session/{ref}/complete")
async def complete(request: Request, auth: CurrentUser, ref: str,
                   body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    row = await request.app.state.sessions.resolve(auth, ref, request.query_params.get("owner_access_key"))
    code = str((body or {}).get("code") or "")
    return {"result": await service(request.app).complete(row, code)}


def batch_options(options: Any) -> dict[str, Any]:
    """Backend.AI's batch options: clean, build, exec commands ("*" = the kernel's default)."""
    options = options if isinstance(options, dict) else {}
    return {k: options.get(k) for k in ("clean", "build", "exec") if options.get(k)}


@router.post("/session/{ref}")
async def execute(request: Request, auth: CurrentUser, ref: str,
                  body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    body = body or {}
    row = await request.app.state.sessions.resolve(auth, ref, body.get("owner_access_key"))
    run_id = str(body.get("runId") or body.get("run_id") or secrets.token_hex(8))
    mode = str(body.get("mode") or "query")
    tunnels = getattr(request.app.state, "tunnels", None)
    if tunnels is not None:   # a run is activity for the idle checks
        tunnels.touch(row.id)
    result = await service(request.app).execute(row, run_id, str(body.get("code") or ""), mode,
                                                batch_options(body.get("options")) if mode == "batch" else None)
    return {"result": result}


async def ws_session(ws: WebSocket, ref: str) -> Any:
    """The session a WebSocket is about, checked against its (authenticated) caller; None after refusing
    the handshake (no caller: 4401; not the caller's session or no such session: 4404)."""
    auth = ws.scope.get("state", {}).get("auth")
    if auth is None:
        await ws.close(code=4401)
        return None
    try:
        return await ws.app.state.sessions.resolve(auth, ref)
    except BridgeError as e:
        await ws.close(code=close_code(e), reason=e.msg[:120])
        return None


def close_code(e: BridgeError) -> int:
    """A refused WebSocket closes with 4000 + the HTTP status the same refusal has over REST (4401, 4403,
    4404, 4503 ...), as the authentication middleware does."""
    return 4000 + e.status


@router.websocket("/stream/session/{ref}/execute")
async def execute_stream(ws: WebSocket, ref: str) -> None:
    row = await ws_session(ws, ref)
    if row is None:
        return
    await ws.accept()
    svc = service(ws.app)
    try:
        first = json.loads(await ws.receive_text())
        code, mode = str(first.get("code") or ""), str(first.get("mode") or "query")
        if mode not in ("query", "batch"):
            raise InvalidAPIParameters(f"mode {mode} is not supported")
        options = batch_options(first.get("options")) if mode == "batch" else first.get("options")
        run_id = secrets.token_hex(8)
        while True:
            result = await svc.execute(row, run_id, code, mode, options)
            await ws.send_json({k: result.get(k) for k in ("status", "console", "exitCode", "options", "files")})
            if result["status"] == "finished":
                break
            code = await ws.receive_text() if result["status"] == "waiting-input" else ""
        await ws.close()
    except WebSocketDisconnect:
        return
    except BridgeError as e:
        await ws.send_json({"status": "finished", "console": [["stderr", e.msg + "\n"]], "exitCode": 1,
                            "options": {}, "files": []})
        await ws.close(code=1011)


async def relay(ws: WebSocket, close_upstream: Callable[[], object], *pumps: Any) -> None:
    """Run both directions of a circuit until either ends, then close both sides (`close_upstream` may be a
    coroutine function, as a WebSocket client's close is)."""
    tasks = [asyncio.create_task(p) for p in pumps]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        closing = close_upstream()
        if inspect.isawaitable(closing):
            await closing
        try:
            await ws.close()
        except (RuntimeError, WebSocketDisconnect, ConnectionClosed):
            pass  # already closed by the client


async def _frame(writer: Any, kind: bytes, payload: bytes) -> None:
    writer.write(kind + len(payload).to_bytes(4, "big") + payload)
    await writer.drain()


@router.websocket("/stream/session/{ref}/pty")
async def pty_stream(ws: WebSocket, ref: str) -> None:
    """Backend.AI's terminal protocol: JSON text frames, stdin/out base64-encoded; resize, ping, restart."""
    row = await ws_session(ws, ref)
    if row is None:
        return
    try:
        reader, writer = await service(ws.app).open_pty(row)
    except BridgeError as e:
        await ws.close(code=close_code(e), reason=e.msg[:120])
        return
    await ws.accept()
    # an open terminal is traffic for the idle checks (a circuit in the tunnel registry) however quiet it is
    circuit = ws.app.state.tunnels.open(row.id, "terminal", "pty", ws.scope["state"]["auth"].access_key,
                                        closer=writer.close)

    async def kernel_to_client() -> None:
        while True:
            head = await reader.readexactly(5)
            data = await reader.readexactly(int.from_bytes(head[1:], "big"))
            circuit.down(len(data))
            await ws.send_json({"type": "out", "data": base64.b64encode(data).decode()})

    async def client_to_kernel() -> None:
        while True:
            msg = json.loads(await ws.receive_text())
            kind = msg.get("type")
            circuit.up(1)
            if kind == "stdin":
                await _frame(writer, b"d", base64.b64decode(msg.get("chars") or ""))
            elif kind == "resize":
                await _frame(writer, b"r", json.dumps({"rows": int(msg["rows"]), "cols": int(msg["cols"])}).encode())
            elif kind == "restart":
                await _frame(writer, b"x", b"")
            elif kind != "ping":
                await ws.send_json({"type": "error", "data": f"unknown message type {kind!r}"})

    try:
        await relay(ws, writer.close, kernel_to_client(), client_to_kernel())
    finally:
        ws.app.state.tunnels.close(circuit)
