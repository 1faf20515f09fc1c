"""`/manager/status`, `/manager/announcement` and `/config/resource-slots`."""

from __future__ import annotations

import fnmatch
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from bridge.api.deps import CurrentUser, SuperAdmin
from bridge.errors import BridgeError, InvalidAPIParameters
from bridge.services import settings_store

router = APIRouter()

ANNOUNCEMENT = "announcement"
MANAGER_STATUS = settings_store.MANAGER_STATUS

# The slots this gateway offers, and their units (Backend.AI's /config/resource-slots).
RESOURCE_SLOTS = {"cpu": "count", "mem": "bytes", "cuda.device": "count"}


@router.get("/manager/status")
async def get_status(request: Request, auth: CurrentUser) -> dict[str, Any]:
    """The gateway's state and each part it depends on (up, down or unknown, with the last good contact).
    Never fails because a part is down: that is what it reports."""
    state = request.app.state
    health = state.health
    try:
        async with state.db.unit_of_work() as s:
            stored = await settings_store.get(s, MANAGER_STATUS, {"status": "running"})
        active: int | None = await state.sessions.count_active()
        health.ok("database")
    except Exception as e:  # noqa: BLE001 - the database down is something to report, not to fail on
        health.failed("database", f"{type(e).__name__}: {e}")
        stored, active = {"status": "running"}, None
    try:
        nodes: int | None = len(await state.sessions.facts_nodes.get())
    except BridgeError:
        nodes = None
    dependencies = health.report()
    down = [name for name, d in dependencies.items() if d["state"] == "down"]
    return {"status": stored["status"], "nodes": nodes, "active_sessions": active,
            "health": "degraded" if down else "ok", "dependencies": dependencies}


class StatusChange(BaseModel):
    status: Literal["running", "frozen"]
    force_kill: bool = False


@router.put("/manager/status", status_code=204)
async def put_status(request: Request, auth: SuperAdmin, req: StatusChange) -> None:
    """Freeze (no new session starts) or run again; a freeze with `force_kill` also ends every session."""
    async with request.app.state.db.unit_of_work() as s:
        await settings_store.put(s, MANAGER_STATUS, {"status": req.status})
    if req.status == "frozen" and req.force_kill:
        await request.app.state.sessions.terminate_all("force-terminated: the gateway was frozen for maintenance")


@router.get("/manager/announcement")
async def get_announcement(request: Request, auth: CurrentUser) -> dict[str, Any]:
    async with request.app.state.db.unit_of_work() as s:
        return await settings_store.get(s, ANNOUNCEMENT, {"enabled": False, "message": ""})


class Announcement(BaseModel):
    enabled: bool
    message: str = ""


@router.post("/manager/announcement", status_code=204)
async def post_announcement(request: Request, auth: SuperAdmin, req: Announcement) -> None:
    async with request.app.state.db.unit_of_work() as s:
        await settings_store.put(s, ANNOUNCEMENT, req.model_dump())


@router.get("/manager/metrics")
async def metrics(request: Request, auth: SuperAdmin) -> dict[str, Any]:
    """Counters of the one Slurm watcher: ticks, Slurm calls (never one per session), current interval."""
    w = request.app.state.watcher
    return {"watcher_ticks": w.ticks, "watcher_slurm_calls": w.slurm_calls,
            "watcher_interval_s": w.interval_s, "slurm_calls_total": getattr(request.app.state.slurm, "calls", None)}


@router.get("/config/docker-registries")
async def image_registries(request: Request, auth: CurrentUser) -> dict[str, str]:
    """Where kernel images come from: the site's image directory, and the registries sessions may pull from
    (`images.pull_on_create`; patterns as configured)."""
    settings = request.app.state.settings
    out = {"local": f"file://{settings.sessions.image_dir}"}
    for pattern in settings.images.pull_on_create:
        insecure = any(fnmatch.fnmatchcase(pattern, p) for p in settings.images.insecure_registries)
        out[pattern] = f"{'http' if insecure else 'https'}://{pattern}"
    return out


@router.get("/config/resource-slots")
async def resource_slots(request: Request, auth: CurrentUser) -> dict[str, str]:
    if request.app.state.settings.sessions.shards_per_gpu:   # fractional GPUs, as gres/shard
        return {**RESOURCE_SLOTS, "cuda.shares": "count"}
    return RESOURCE_SLOTS


SLOT_DETAILS = {
    "cpu": ("CPU", "Core", False, 0, "cpu"),
    "mem": ("Memory", "GiB", True, 0, "mem"),
    "cuda.device": ("GPU", "GPU", False, 0, "cuda.device"),
    "cuda.shares": ("GPU (fractional)", "FGPU", False, 2, "cuda.shares"),
}


@router.get("/config/resource-slots/details")
async def resource_slot_details(request: Request, auth: CurrentUser, sgroup: str | None = None
                                ) -> dict[str, Any]:
    """How the WebUI names and shows each slot (the same slots in every resource group)."""
    out = {}
    for slot in await resource_slots(request, auth):
        name, unit, binary, digits, icon = SLOT_DETAILS[slot]
        out[slot] = {"slot_name": slot, "description": name, "human_readable_name": name, "display_unit": unit,
                     "number_format": {"binary": binary, "round_length": digits}, "display_icon": icon}
    return out


class ConfigKey(BaseModel):
    key: str
    prefix: bool = False
    value: Any = None


@router.post("/config/get")
async def config_get(request: Request, auth: SuperAdmin, req: ConfigKey) -> dict[str, Any]:
    """Backend.AI keeps its configuration in etcd; this gateway in its config file. What the WebUI asks
    for that the gateway has an answer to (the image registries) is answered; anything else is empty."""
    key = req.key.strip("/")
    if key == "config/docker/registry" or key.startswith("config/docker/registry/"):
        registries = await image_registries(request, auth)
        found = {name: {"": url, "type": "local" if name == "local" else "docker"}
                 for name, url in registries.items()}
        name = key[len("config/docker/registry/"):] if key != "config/docker/registry" else ""
        if name:
            return {"result": found.get(name) if req.prefix else (found.get(name) or {}).get("")}
        return {"result": found if req.prefix else None}
    return {"result": {} if req.prefix else None}


@router.post("/config/set")
@router.post("/config/delete", include_in_schema=False)
async def config_change(request: Request, auth: SuperAdmin, req: ConfigKey) -> dict[str, Any]:
    raise InvalidAPIParameters(
        f"{req.key}: this gateway is configured in its config file ([images] for registries), and an image's "
        "resource minimums come from its labels; change them there (docs/configuration.md)")


class SchedulerOperation(BaseModel):
    op: Literal["include-agents", "exclude-agents"]
    args: dict[str, Any] = {}


@router.post("/manager/scheduler/operation", status_code=204)
async def scheduler_operation(request: Request, auth: SuperAdmin, req: SchedulerOperation) -> None:
    """`exclude-agents` drains Slurm nodes (running jobs finish, no new ones start there), `include-agents`
    resumes them: what Backend.AI's scheduler operations mean on Slurm."""
    nodes = req.args.get("agent_ids") or []
    if not isinstance(nodes, list) or not nodes or not all(isinstance(n, str) for n in nodes):
        raise InvalidAPIParameters("args.agent_ids: the nodes (agent ids) to include or exclude")
    await request.app.state.sessions.set_nodes_schedulable(
        nodes, req.op == "include-agents", reason=f"excluded by {auth.email} through the gateway")
