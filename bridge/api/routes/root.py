"""`GET /`: the unsigned version probe the client sends before anything else."""

from __future__ import annotations

from fastapi import APIRouter

from bridge import __version__

router = APIRouter()

SERVER_API_VERSION = "v6.20220615"


@router.get("/")
async def hello() -> dict[str, str]:
    return {"version": SERVER_API_VERSION, "manager": __version__}
