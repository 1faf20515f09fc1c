"""create_app(settings): the HTTP app. Its lifespan takes the adapters and services from the composition root
(bridge/wiring.py), adds what only the app has (transfer port, tunnels, kernel transport, background tasks) and
tears everything down in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from bridge import __version__
from bridge.adapters import systemd
from bridge.adapters.db.sealed import seal_plaintext
from bridge.adapters.http_proxy import HttpExchange
from bridge.adapters.kernel_runner import HttpKernelRunner
from bridge.adapters.tunnel import KernelTransport
from bridge.api import metrics as metrics_routes
from bridge.api import problems
from bridge.api.authn import SignatureAuthMiddleware
from bridge.api.limits import BodyLimitMiddleware
from bridge.api.routes import (
    admin,
    apps,
    auth,
    events,
    execute,
    files,
    folders,
    logs,
    manager,
    resource_usage,
    resources,
    root,
    session,
    slurm_events,
    template,
    user_config,
)
from bridge.api.transfer_port import TransferPort
from bridge.config import BridgeSettings
from bridge.domain.login_guard import LoginGuard
from bridge.domain.metrics import GatewayMetrics
from bridge.services.app_proxy import OwnerCache, StreamPool
from bridge.services.bgtasks import BackgroundTasks
from bridge.services.execution import ExecutionService
from bridge.services.health import Health
from bridge.services.sessions import reconcile
from bridge.services.tunnels import TunnelRegistry
from bridge.services.utilization import UtilizationMonitor
from bridge.services.watcher import SessionWatcher
from bridge.wiring import Overrides, Parts

logger = logging.getLogger(__name__)


async def _stop(task: asyncio.Task[Any]) -> None:
    """Cancel a background task and wait until it has let go of what it held (processes, connections)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(settings: BridgeSettings, *, start_background: bool = True,
               overrides: Overrides | None = None) -> FastAPI:
    """The gateway; `overrides` puts stand-ins in place of its boundaries (tests: a fake Slurm)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            parts = app.state.parts = Parts(settings, overrides)   # bridge/wiring.py: every part, once
            stack.push_async_callback(parts.aclose)
            db = parts.db
            resealed = await seal_plaintext(db.engine)
            if resealed:
                logger.info("sealed %d credentials that were stored in the clear", resealed)
            app.state.key_usage = parts.key_usage
            health = app.state.health = parts.health
            metrics = app.state.metrics = parts.metrics
            slurm = parts.slurm
            s = settings.sessions
            sessions = parts.sessions
            watcher = parts.watcher
            app.state.settings = settings
            app.state.db = db
            app.state.slurm = slurm
            app.state.sessions = sessions
            app.state.watcher = watcher
            app.state.templates = parts.templates
            app.state.cluster_templates = parts.cluster_templates
            app.state.folders = parts.folders
            app.state.transfer_port = None
            if settings.storage.transfer_port is not None:
                port = app.state.transfer_port = TransferPort(app.state.folders, settings.server.host,
                                                              settings.storage.transfer_port)
                await port.start()
                stack.push_async_callback(port.aclose)
            app.state.images = sessions.images
            app.state.presets = parts.presets
            app.state.bgtasks = BackgroundTasks()
            app.state.user_config = parts.user_config
            app.state.error_logs = parts.error_logs
            stack.push_async_callback(app.state.bgtasks.aclose)
            app.state.projects = parts.projects
            app.state.unix_users = parts.unix_users
            transport = KernelTransport(settings)
            stack.push_async_callback(transport.aclose)
            app.state.execution = ExecutionService(db, sessions, ready_timeout_s=s.kernel_ready_timeout_s,
                                                   transport=transport, runner=HttpKernelRunner(),
                                                   reports_from_node=s.reports_from_node)
            stack.push_async_callback(app.state.execution.aclose)
            app.state.login_guard = LoginGuard()
            app.state.password_checks = asyncio.Semaphore(2)   # argon2 is costly on purpose: a few at once
            app.state.proxy_pool = StreamPool()
            app.state.proxy_exchange = HttpExchange   # app_proxy.ExchangeFactory
            app.state.proxy_owners = OwnerCache()
            loop = asyncio.get_running_loop()
            app.state.tunnels = TunnelRegistry(on_session_end=[
                transport.release, lambda sid: loop.call_soon_threadsafe(app.state.proxy_pool.drop, sid)])
            tunnel_watch = asyncio.create_task(app.state.tunnels.watch(sessions.events))
            _gauges(metrics, app.state.tunnels, health, watcher)
            # live_stat / last_stat / idle_checks of every running session: one periodic task, one sstat per tick
            utilization = app.state.utilization = UtilizationMonitor(
                db, sessions, parts.step_stats, app.state.tunnels, s)
            stack.push_async_callback(_stop, tunnel_watch)
            scrubber = asyncio.create_task(sessions.scrub_ended())   # an ended session's credentials go
            stack.push_async_callback(_stop, scrubber)
            if start_background:
                try:
                    await reconcile(sessions)
                except Exception as e:  # Slurm unreachable at start-up: the watcher retries
                    logger.error("start-up reconciliation failed: %s", e)
                watcher.start()
                stack.push_async_callback(watcher.stop)
                monitor = asyncio.create_task(utilization.run(), name="utilization-monitor")
                stack.push_async_callback(_stop, monitor)
            if os.environ.get("NOTIFY_SOCKET"):   # under systemd (Type=notify): ready once the port listens
                ready = asyncio.create_task(systemd.ready_when_listening(settings.server.host, settings.server.port))
                stack.push_async_callback(_stop, ready)
                stack.callback(systemd.notify, "STOPPING=1")
            yield

    app = FastAPI(title="bridge: Backend.AI manager API on Slurm", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    problems.install(app)
    # execute after session: the literal create routes must match before POST /session/{ref} (execution)
    for module in (root, auth, manager, metrics_routes, admin, resources, session, files, folders, events, template,
                   execute, apps, resource_usage, user_config, logs):
        app.include_router(module.router)
    app.include_router(template.cluster_router)
    app.include_router(slurm_events.router)
    # the kernel runners' reports, the browser proxy (and the WebUI's v2 app-proxy call) and folder transfer
    # links carry their own proof (session secret, app token, transfer token)
    app.add_middleware(SignatureAuthMiddleware, settings=settings.auth,
                       exempt_prefixes=("/kernel-callback/", "/proxy/", "/folders/_/transfer/", "/v2/proxy/",
                                        "/slurm/job-event", "/metrics"))
    app.add_middleware(BodyLimitMiddleware, settings=settings.server)   # before anything reads
    app.add_middleware(metrics_routes.RequestMetrics)   # times every answer, refusals included
    app.add_middleware(metrics_routes.RequestIds)   # outermost: every log record of a request names it
    return app


def _gauges(metrics: GatewayMetrics, tunnels: TunnelRegistry, health: Health, watcher: SessionWatcher) -> None:
    """The metrics whose values live in the parts themselves, read when scraped."""
    metrics.gauge("bridge_tunnel_bytes_total", "Bytes carried by tunnels since start (up: client to service).",
                  ("direction",), lambda: {(k,): float(v) for k, v in tunnels.bytes_total().items()})
    metrics.gauge("bridge_tunnel_open_circuits", "Open tunnel circuits by kind.", ("kind",),
                  lambda: {(k,): float(v) for k, v in tunnels.open_by_kind().items()})
    metrics.gauge("bridge_dependency_up", "Whether each dependency answered its last call (1), or not (0).",
                  ("name",), lambda: {(name, ): 0.0 if d["state"] == "down" else 1.0
                                      for name, d in health.report().items() if d["state"] != "unknown"})
    metrics.gauge("bridge_watcher_interval_seconds", "The shared watcher's current wait between looks.", (),
                  lambda: {(): watcher.interval_s})
