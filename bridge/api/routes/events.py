"""`GET /events/session`: session lifecycle events as Server-Sent Events, filtered by session, project and
scope, for the sessions the caller may see. A stream about one session ends with `server_close` once that
session has terminated (the clients reconnect forever otherwise)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from bridge.api.deps import CurrentUser
from bridge.domain.auth import AuthContext
from bridge.domain.session import SessionStatus
from bridge.domain.transitions import FINAL, final_event
from bridge.errors import ObjectNotFound
from bridge.services import accounts
from bridge.services.bgtasks import BackgroundTasks
from bridge.services.events import SessionEvent
from bridge.services.sessions import SessionService

router = APIRouter()
KEEPALIVE_S = 15.0
FIRST_EVENT_AFTER_S = 0.5   # a background task's first event, at the earliest this long after the stream opened


def sse(event: str, data: dict[str, Any], retry_ms: int | None = None) -> bytes:
    text = f"event: {event}\ndata: {json.dumps(data)}\n"
    if retry_ms is not None:
        text += f"retry: {retry_ms}\n"
    return (text + "\n").encode()


def _visible(auth: AuthContext, ev: SessionEvent, owner: str | None) -> bool:
    if owner:
        return ev.access_key == owner
    return ev.access_key == auth.access_key or auth.can_manage_domain(ev.domain_name)


@router.get("/events/session")
async def session_events(request: Request, auth: CurrentUser) -> StreamingResponse:
    q = request.query_params
    svc: SessionService = request.app.state.sessions
    owner = q.get("ownerAccessKey") or q.get("owner_access_key")
    if owner and owner != auth.access_key:
        await svc.owner_key(auth, owner)  # admins only
    target = None
    ref = q.get("sessionId") or q.get("session_id") or q.get("sessionName") or q.get("name")
    if ref and ref != "*":
        target = await svc.resolve(auth, ref, owner)
    group_id = None
    group = q.get("group")
    if group and group != "*":
        async with request.app.state.db.unit_of_work() as s:
            g = await accounts.get_group(s, group, auth.domain_name)
        if g is None:
            raise ObjectNotFound(f"no project {group}")
        group_id = g.id
    scope = q.get("scope", "*")

    async def stream() -> AsyncIterator[bytes]:
        async with svc.events.subscribe() as queue:
            if target is not None and SessionStatus(target.status).is_terminal:
                yield sse(final_event(SessionStatus(target.status)), {
                    "sessionName": target.name, "ownerAccessKey": target.access_key, "sessionId": target.id,
                    "reason": target.status_info or "", "result": target.result, "exitCode": target.exit_code})
                yield sse("server_close", {})
                return
            while not await request.is_disconnected():
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        ev = await queue.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if target is not None and ev.session_id != target.id:
                    continue
                if group_id and ev.group_id != group_id:
                    continue
                if scope == "kernel" and not ev.name.startswith("kernel_"):
                    continue
                if scope == "session" and not ev.name.startswith("session_"):
                    continue
                if not _visible(auth, ev, owner):
                    continue
                yield sse(ev.name, ev.payload())
                if target is not None and ev.name in FINAL:
                    yield sse("server_close", {})
                    return

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/events/background-task")
async def background_task_events(request: Request, auth: CurrentUser) -> StreamingResponse:
    """A background task's progress (`bgtask_updated`), then how it ended (`bgtask_done`, `bgtask_failed` or
    `bgtask_cancelled`) and `server_close`; a task that ended before the listener came is told at once."""
    ref = request.query_params.get("task_id") or request.query_params.get("taskId") or ""
    tasks: BackgroundTasks = request.app.state.bgtasks
    task = tasks.find(ref, auth.access_key, superadmin=auth.is_superadmin)
    if task is None:
        raise ObjectNotFound(f"no background task {ref} of yours")

    async def stream() -> AsyncIterator[bytes]:
        opened = asyncio.get_running_loop().time()
        async with tasks.follow(task) as events:
            pending = asyncio.ensure_future(anext(events))
            try:
                while not await request.is_disconnected():
                    done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
                    if not done:
                        yield b": keep-alive\n\n"
                        continue
                    try:
                        name, data = pending.result()
                    except StopAsyncIteration:
                        break
                    # an event that was already there (a task that ended before anyone listened) waits a
                    # moment: the 23.9.10 CLI starts its progress spinner after it connects, and an event it
                    # reads without waiting stops the spinner before it ran, which crashes the CLI
                    settle = FIRST_EVENT_AFTER_S - (asyncio.get_running_loop().time() - opened)
                    if settle > 0:
                        await asyncio.sleep(settle)
                    yield sse(name, data)
                    if name != "bgtask_updated":
                        break
                    pending = asyncio.ensure_future(anext(events))
                yield sse("server_close", {})
            finally:
                pending.cancel()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
