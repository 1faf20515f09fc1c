"""create_app(settings): builds adapters and services in the lifespan, in order, and tears them down in reverse."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from bridge import __version__
from bridge.adapters.db.engine import Database
from bridge.adapters.slurm.factory import build_slurm_client
from bridge.api import problems
from bridge.api.authn import SignatureAuthMiddleware
from bridge.api.routes import admin, auth, manager, root
from bridge.config import BridgeSettings


def create_app(settings: BridgeSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            db = Database(settings.database.url, echo=settings.database.echo)
            stack.push_async_callback(db.dispose)
            slurm = build_slurm_client(settings)
            stack.push_async_callback(slurm.aclose)
            app.state.settings = settings
            app.state.db = db
            app.state.slurm = slurm
            yield

    app = FastAPI(title="bridge: Backend.AI manager API on Slurm", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    problems.install(app)
    for module in (root, auth, manager, admin):
        app.include_router(module.router)
    app.add_middleware(SignatureAuthMiddleware, settings=settings.auth)
    return app
