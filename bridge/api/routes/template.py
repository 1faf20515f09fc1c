"""`/template/session` and `/template/cluster`: session and cluster templates CRUD (JSON or YAML payloads,
Backend.AI's taskTemplate and clusterTemplate)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from bridge.api.deps import CurrentUser
from bridge.services.templates import TemplateService


class TemplatePayload(BaseModel):
    payload: str
    group: str = Field("default", alias="group_name")
    domain: str = Field("default", alias="domain_name")
    owner_access_key: str | None = None

    model_config = {"populate_by_name": True}


def templates_router(prefix: str, state_name: str) -> APIRouter:
    """The CRUD of one kind of template: session templates at /template/session, cluster templates at
    /template/cluster (the same shapes and rules)."""
    router = APIRouter(prefix=prefix)

    def service(request: Request) -> TemplateService:
        svc: TemplateService = getattr(request.app.state, state_name)
        return svc

    @router.post("")
    async def create(request: Request, auth: CurrentUser, req: TemplatePayload) -> JSONResponse:
        created = await service(request).create(auth, req.payload, req.group, req.domain)
        # 22.3.2 reads a single {"id"}; 23.x and later iterate over a list, as the current manager answers
        if request.headers.get("x-backendai-version") == "v6.20220315" and len(created) == 1:
            return JSONResponse(created[0])
        return JSONResponse(created)

    @router.get("")
    async def list_(request: Request, auth: CurrentUser, all: Annotated[bool, Query()] = False,
                    group_id: str | None = None, body: Annotated[dict[str, Any] | None, Body()] = None) -> list[Any]:
        all_ = all or bool((body or {}).get("all"))
        return await service(request).list(auth, all_=all_, group_id=group_id or (body or {}).get("group_id"))

    @router.get("/{template_id}")
    async def get(request: Request, auth: CurrentUser, template_id: str, format: str = "json") -> Response:
        row = await service(request).get(auth, template_id)
        if format == "yaml":
            return PlainTextResponse(yaml.safe_dump(row.template, sort_keys=False), media_type="text/yaml")
        return JSONResponse(row.template)

    @router.put("/{template_id}")
    async def update(request: Request, auth: CurrentUser, template_id: str, req: TemplatePayload) -> dict[str, Any]:
        await service(request).update(auth, template_id, req.payload)
        return {"success": True}

    @router.delete("/{template_id}")
    async def delete(request: Request, auth: CurrentUser, template_id: str) -> dict[str, Any]:
        await service(request).delete(auth, template_id)
        return {"success": True}

    return router


router = templates_router("/template/session", "templates")
cluster_router = templates_router("/template/cluster", "cluster_templates")


def template_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    """A template's values in the create request's own keys."""
    config = {k: fields[k] for k in ("environ", "resources", "mounts", "mount_map") if fields.get(k)}
    if fields.get("scaling_group"):
        config["scaling_group"] = fields["scaling_group"]
    out = {"image": fields["image"], "type": fields["type"], "architecture": fields["architecture"],
           "tag": fields.get("tag"), "startupCommand": fields.get("startup_command"),
           "bootstrap_script": fields.get("bootstrap_script"), "config": config}
    return {k: v for k, v in out.items() if v not in (None, {}, [])}


def merge(template: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The request's explicit values win; nulls in it mean "not given"."""
    given = {k: v for k, v in body.items() if v is not None and k != "template_id"}
    merged = {**template, **{k: v for k, v in given.items() if k != "config"}}
    config = dict(template.get("config", {}))
    for k, v in (given.get("config") or {}).items():
        if v not in (None, [], {}):
            config[k] = v
    merged["config"] = config
    out: dict[str, Any] = json.loads(json.dumps(merged))
    return out
