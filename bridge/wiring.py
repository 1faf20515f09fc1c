"""The composition root: every adapter and service of the gateway, built once from the settings.

`Parts(settings, overrides)` builds each part when first asked for and keeps it (a `cached_property`), so
that every user of a part gets the same one: `create_app` (bridge/api/app.py) asks for all of them, the admin
CLI (bridge/cli_admin.py) only for what a command needs (the account service, folders, images, partitions).
`Overrides` puts a stand-in in place of a boundary, for tests: a fake Slurm (tests/support/fake_slurm.py),
a command runner, a database; everything built on it then uses the stand-in. `aclose()` releases what was
built, in the reverse order. docs/architecture.md, "The composition root".
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import cached_property

from bridge.adapters.callbacks import CallbackSender, HttpCallbacks
from bridge.adapters.db.engine import Database
from bridge.adapters.oci_registry import HttpOciRegistry, OciRegistry
from bridge.adapters.runner import CommandRunner
from bridge.adapters.slurm.base import SlurmClient
from bridge.adapters.slurm.factory import build_accounting, build_runner, build_slurm_client, build_step_stats
from bridge.adapters.slurm.stepstats import SlurmStepStats
from bridge.config import BridgeSettings
from bridge.domain.metrics import GatewayMetrics
from bridge.services.accounts import AccountService
from bridge.services.auth import KeyUsage
from bridge.services.error_logs import ErrorLogs
from bridge.services.events import EventBus
from bridge.services.folders import FolderService
from bridge.services.health import Health, ObservedSlurm
from bridge.services.image_pull import ImagePuller
from bridge.services.images import ImageResolver
from bridge.services.presets import Presets
from bridge.services.project_sync import ProjectSync
from bridge.services.sessions import SessionService
from bridge.services.templates import TemplateService
from bridge.services.unix_users import UnixUsers
from bridge.services.user_config import UserConfig
from bridge.services.watcher import SessionWatcher


@dataclass(frozen=True)
class Overrides:
    """Stand-ins for the boundaries the settings would otherwise name (tests)."""

    slurm: SlurmClient | None = None     # in place of build_slurm_client(settings); still observed (health, metrics)
    runner: CommandRunner | None = None  # in place of build_runner(settings): getent, stat, apptainer, sstat...
    db: Database | None = None           # in place of Database(settings.database.url); its owner disposes of it


class Parts:
    """Each property builds its part once, from the settings and the parts it needs."""

    def __init__(self, settings: BridgeSettings, overrides: Overrides | None = None) -> None:
        self.settings = settings
        self.overrides = overrides or Overrides()

    # ---- adapters ----

    @cached_property
    def db(self) -> Database:
        if self.overrides.db is not None:
            return self.overrides.db
        d = self.settings.database
        return Database(d.url, echo=d.echo, secret=self.settings.secret.get_secret_value())

    @cached_property
    def runner(self) -> CommandRunner:
        return self.overrides.runner or build_runner(self.settings)

    @cached_property
    def health(self) -> Health:
        return Health()

    @cached_property
    def metrics(self) -> GatewayMetrics:
        return GatewayMetrics()

    @cached_property
    def slurm(self) -> ObservedSlurm:
        """The one Slurm client of the process, telling `health` and `metrics` how each call went."""
        s = self.settings.slurm
        via = "slurmrestd" if s.driver == "rest" else ("login node" if s.cli.transport == "ssh" else None)
        return ObservedSlurm(self.overrides.slurm or build_slurm_client(self.settings), self.health, via,
                             self.metrics)

    @cached_property
    def step_stats(self) -> SlurmStepStats:
        return build_step_stats(self.settings, self.runner)

    @cached_property
    def oci_registry(self) -> OciRegistry:
        return HttpOciRegistry()

    @cached_property
    def callbacks(self) -> CallbackSender:
        return HttpCallbacks()

    # ---- services ----

    @cached_property
    def key_usage(self) -> KeyUsage:
        return KeyUsage(self.db)

    @cached_property
    def images(self) -> ImageResolver:
        s = self.settings.sessions
        return ImageResolver(self.runner, s.image_dir, s.images, self.db)

    @cached_property
    def folders(self) -> FolderService:
        return FolderService(self.db, self.runner, self.settings)

    @cached_property
    def sessions(self) -> SessionService:
        sessions = SessionService(self.db, self.slurm, self.runner, self.images, EventBus(), self.settings,
                                  self.metrics)
        sessions.puller = ImagePuller(self.runner, self.images, self.settings, self.oci_registry)
        sessions.folders = self.folders
        return sessions

    @cached_property
    def watcher(self) -> SessionWatcher:
        s = self.settings.sessions
        return SessionWatcher(self.db, self.slurm, self.sessions, floor_s=s.watcher_floor_s, max_s=s.watcher_max_s,
                              lost_after_s=s.lost_after_s, callbacks=self.callbacks)

    @cached_property
    def templates(self) -> TemplateService:
        return TemplateService(self.db)

    @cached_property
    def cluster_templates(self) -> TemplateService:
        return TemplateService(self.db, "cluster")

    @cached_property
    def presets(self) -> Presets:
        return Presets(self.db, self.sessions.resource_groups, self.sessions.facts_nodes)

    @cached_property
    def user_config(self) -> UserConfig:
        return UserConfig(self.db)

    @cached_property
    def error_logs(self) -> ErrorLogs:
        return ErrorLogs(self.db)

    @cached_property
    def projects(self) -> ProjectSync:
        """Slurm accounts kept in step with projects, when `accounts.slurm_sync` is on."""
        return ProjectSync.from_settings(self.settings, self.runner)

    @cached_property
    def unix_users(self) -> UnixUsers:
        return UnixUsers.from_settings(self.settings, self.runner)

    def project_sync(self, force: bool = False) -> ProjectSync:
        """`projects`, or, with `force`, one that syncs Slurm even when `accounts.slurm_sync` is off (an admin
        command's flag)."""
        if force and not self.projects.enabled:
            return ProjectSync(build_accounting(self.settings, self.runner),
                               shards_per_gpu=self.settings.sessions.shards_per_gpu)
        return self.projects

    def accounts(self, force_slurm_sync: bool = False) -> AccountService:
        """The account service, as the GraphQL mutations and the admin CLI use it."""
        return AccountService(self.project_sync(force_slurm_sync), self.unix_users)

    # ---- the end ----

    async def aclose(self) -> None:
        """Release what was built, the last built first: sessions, the HTTP clients, Slurm, key usage, the
        database (unless it was given); each one even when another failed."""
        built = self.__dict__
        async with AsyncExitStack() as stack:
            if "db" in built and self.overrides.db is None:
                stack.push_async_callback(self.db.dispose)
            if "key_usage" in built:
                stack.push_async_callback(self.key_usage.aclose)
            if "slurm" in built:
                stack.push_async_callback(self.slurm.aclose)
            for client in ("oci_registry", "callbacks"):
                if client in built:
                    stack.push_async_callback(built[client].aclose)
            if "sessions" in built:
                stack.push_async_callback(self.sessions.aclose)
