"""`/session`: create (as a Slurm batch job), info, destroy, logs, rename, match, dependency graph."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bridge.api.deps import CurrentUser
from bridge.api.wire.session import CreateSession
from bridge.domain.cluster import total_slots
from bridge.errors import InvalidAPIParameters, ObjectNotFound
from bridge.services.records import SessionRow
from bridge.services.sessions import SessionService, aware
from bridge.services.utilization import last_stats

router = APIRouter()


def service(request: Request) -> SessionService:
    svc: SessionService = request.app.state.sessions
    return svc


def _owner(request: Request, body: dict[str, Any] | None) -> str | None:
    return request.query_params.get("owner_access_key") or (body or {}).get("owner_access_key")


async def _create(request: Request, auth: Any, req: CreateSession) -> JSONResponse:
    body, created = await service(request).create(auth, req.to_request())
    return JSONResponse(body, status_code=201 if created else 200)


@router.post("/session")
async def create(request: Request, auth: CurrentUser, req: CreateSession) -> JSONResponse:
    return await _create(request, auth, req)


@router.post("/session/_/create")
async def create_alias(request: Request, auth: CurrentUser, req: CreateSession) -> JSONResponse:
    return await _create(request, auth, req)


@router.post("/session/_/create-from-template")
async def create_from_template(request: Request, auth: CurrentUser) -> JSONResponse:
    from bridge.api.routes.template import merge, template_defaults
    from bridge.services.templates import session_fields

    body = await _template_request(request)
    row = await request.app.state.templates.get(auth, str(body["template_id"]))
    return await _create(request, auth, _validated(merge(template_defaults(session_fields(row.template)), body)))


async def _template_request(request: Request) -> dict[str, Any]:
    """The JSON body of a create-from-template request, which must name its template."""
    try:
        body = await request.json()
    except ValueError:
        raise InvalidAPIParameters("the body must be JSON") from None
    if not isinstance(body, dict) or not body.get("template_id"):
        raise InvalidAPIParameters("template_id: required")
    return body


def _validated(merged: dict[str, Any]) -> CreateSession:
    try:
        return CreateSession.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        raise InvalidAPIParameters(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


@router.post("/session/_/create-cluster")
async def create_cluster(request: Request, auth: CurrentUser) -> JSONResponse:
    """A session from a cluster template: its roles' kernels, each role's image and resources from its session
    template, main1's session template for everything else (startup command, type, mounts); the request's
    own values win, as with create-from-template."""
    from bridge.api.routes.template import merge, template_defaults
    from bridge.services.templates import cluster_roles, session_fields

    body = await _template_request(request)
    template = (await request.app.state.cluster_templates.get(auth, str(body["template_id"]))).template
    sessions = {}
    for node in template["spec"]["nodes"]:
        try:
            sessions[node["session_template"]] = (await request.app.state.templates.get(
                auth, node["session_template"])).template
        except ObjectNotFound:
            raise InvalidAPIParameters(f"the cluster template's role {node['role']} names session template "
                                       f"{node['session_template']}, which you cannot use") from None
    roles = cluster_roles(template, sessions)
    main = next(n for n in template["spec"]["nodes"] if n["role"] == "main")
    defaults = template_defaults(session_fields(sessions[main["session_template"]]))
    spec = template["spec"]
    config = defaults.setdefault("config", {})
    if spec.get("environ"):
        config["environ"] = {**config.get("environ", {}), **spec["environ"]}
    if spec.get("mounts"):
        config["mounts"] = sorted({*config.get("mounts", []), *spec["mounts"]})
        config["mount_map"] = {**config.get("mount_map", {}), **{k: v for k, v in spec["mounts"].items() if v}}
    merged = merge(defaults, {k: v for k, v in body.items() if k not in ("clusterSize", "cluster_size")})
    merged["clusterMode"] = template["mode"]
    created_body, created = await service(request).create(
        auth, dataclasses.replace(_validated(merged).to_request(), roles=tuple(roles)))
    return JSONResponse(created_body, status_code=201 if created else 200)


@router.post("/session/create")
async def create_legacy(request: Request, auth: CurrentUser, req: CreateSession) -> JSONResponse:
    return await _create(request, auth, req)


@router.get("/session/_/match")
async def match(request: Request, auth: CurrentUser, id: str = "") -> dict[str, Any]:
    return {"matches": await service(request).match(auth, id)}


def session_info(row: SessionRow, usage: Any = None) -> dict[str, Any]:
    """`usage`: the utilization monitor (liveStat, lastStat, idleChecks), where the server runs one."""
    live = usage.live_stat(row.id) if usage is not None else None
    last = last_stats(row)[0]
    created = aware(row.created_at) or datetime.now(UTC)
    end = aware(row.terminated_at) or datetime.now(UTC)
    slots = total_slots(row.resources, row.cluster_size, row.status_data)   # every kernel's
    return {
        "sessionId": row.id, "sessionName": row.name, "domainName": row.domain_name, "groupId": row.group_id,
        "userId": row.user_uuid, "lang": row.image, "image": row.image, "architecture": row.architecture,
        "registry": None, "tag": row.tag, "type": row.type, "containerId": row.job_id,
        "occupiedSlots": slots if row.status == "RUNNING" else {}, "occupyingSlots": slots, "requestedSlots": slots,
        "environ": row.environ, "resourceOpts": row.resource_opts,
        "status": row.status, "statusInfo": row.status_info, "statusData": row.status_data,
        "statusHistory": row.status_history, "result": row.result, "exitCode": row.exit_code,
        "age": int((end - created).total_seconds() * 1000), "creationTime": created.isoformat(),
        "terminationTime": aware(row.terminated_at).isoformat() if row.terminated_at else None,  # type: ignore[union-attr]
        "numQueriesExecuted": row.num_queries, "liveStat": live, "lastStat": last or live or {},
        "idleChecks": usage.idle_checks(row) if usage is not None else {},
        "servicePorts": list(row.service_ports or []),
        "scalingGroup": row.partition,
        "slurm": {"jobId": row.job_id, "account": row.slurm_account, "partition": row.partition,
                  "nodes": row.nodes, "user": row.unix_user,
                  "gpus": (row.status_data or {}).get("job_gpus") or (row.status_data or {}).get("gpus"),
                  "shards": (row.status_data or {}).get("shards")},
    }


@router.get("/session/{ref}")
async def info(request: Request, auth: CurrentUser, ref: str,
               body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    row = await service(request).resolve(auth, ref, _owner(request, body))
    return session_info(row, getattr(request.app.state, "utilization", None))


@router.delete("/session/{ref}")
async def destroy(request: Request, auth: CurrentUser, ref: str, forced: bool = False,
                  body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    return await service(request).destroy(auth, ref, forced=forced, owner_access_key=_owner(request, body))


@router.patch("/session/{ref}", status_code=204)
async def restart(request: Request, auth: CurrentUser, ref: str,
                  body: Annotated[dict[str, Any] | None, Body()] = None) -> Response:
    await service(request).restart(auth, ref, _owner(request, body))
    return Response(status_code=204)


@router.get("/session/{ref}/direct-access-info")
async def direct_access_info(request: Request, auth: CurrentUser, ref: str,
                             owner_access_key: str | None = None) -> dict[str, Any]:
    """Direct SSH to a node is for Backend.AI's system (SFTP) sessions, which this gateway has none of:
    sessions are reached through `backend.ai ssh` and the app tunnels. Empty, as the manager answers for
    other sessions."""
    await request.app.state.sessions.resolve(auth, ref, owner_access_key)
    return {}


@router.get("/session/{ref}/logs")
async def logs(request: Request, auth: CurrentUser, ref: str,
               body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    kernel = request.query_params.get("kernel_id") or (body or {}).get("kernel_id")
    text = await service(request).logs(auth, ref, _owner(request, body), kernel_id=str(kernel) if kernel else None)
    return {"result": {"logs": text}}


@router.post("/session/{ref}/rename", status_code=204)
async def rename(request: Request, auth: CurrentUser, ref: str,
                 name: Annotated[str | None, Query()] = None, session_name: Annotated[str | None, Query()] = None,
                 body: Annotated[dict[str, Any] | None, Body()] = None) -> Response:
    new = name or session_name or (body or {}).get("name") or (body or {}).get("session_name")
    if not new:
        raise InvalidAPIParameters("name: the new session name is required")
    await service(request).rename(auth, ref, str(new))
    return Response(status_code=204)


@router.get("/session/{ref}/dependency-graph")
async def dependency_graph(request: Request, auth: CurrentUser, ref: str) -> dict[str, Any]:
    return await service(request).dependency_graph(auth, ref)
