"""`POST /admin/gql` ({data, errors}) and the legacy `POST /admin/graphql` (bare data; errors as a problem)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bridge.api.deps import CurrentUser
from bridge.api.graphql.executor import execute
from bridge.api.graphql.resolvers import GqlContext
from bridge.api.problems import problem
from bridge.errors import InvalidAPIParameters

router = APIRouter()
logger = logging.getLogger(__name__)


async def _run(request: Request, auth: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidAPIParameters("the body must be JSON with a `query`") from None
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        raise InvalidAPIParameters("the body must be JSON with a `query`")
    variables = body.get("variables") or None
    if variables is not None and not isinstance(variables, dict):
        raise InvalidAPIParameters("`variables` must be an object")
    operation = body.get("operation_name") or body.get("operationName")
    state = request.app.state
    context = GqlContext(auth, state.db, state.images, state.sessions, state.projects,
                         state.unix_users, getattr(state, "utilization", None), state.bgtasks)
    return await execute(body["query"], variables, operation, context)


@router.post("/admin/gql")
async def gql(request: Request, auth: CurrentUser) -> JSONResponse:
    data, errors = await _run(request, auth)
    return JSONResponse({"data": data, **({"errors": errors} if errors else {})})


@router.post("/admin/graphql")
async def graphql_legacy(request: Request, auth: CurrentUser) -> JSONResponse:
    data, errors = await _run(request, auth)
    if errors:
        return problem(400, "graphql-error", "GraphQL-generated error.",
                       "; ".join(e["message"] for e in errors), data=errors)
    return JSONResponse(data)
