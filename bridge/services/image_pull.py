"""Images from OCI registries: `docker://` and `oras://` references, pulled with Apptainer into a shared
cache keyed by manifest digest, then registered like any image (`bai-bridge admin image import`).

A tag is resolved to its digest first (the registry's API, anonymous token flow included), so a tag that
moves gets a new cache entry and an unchanged one is never pulled twice; concurrent requests for one digest
share one pull. The pull runs where the jobs run (the same command runner as Slurm), as `images.pull_user`
(an unprivileged account; the service user when unset).

Every pulled image is one read-only SIF file: a registry's layers unpacked into a directory on shared
storage would keep their setuid-root binaries and device nodes there, where any user of a node could run
them; inside a SIF they are only ever mounted nosuid, by the session's own user.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import posixpath
import re
from dataclasses import dataclass

from sqlalchemy import select

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import ImageRow, SessionRow
from bridge.adapters.oci_registry import DIGEST, HttpOciRegistry, OciRegistry
from bridge.adapters.runner import CommandRunner, Completed
from bridge.config import BridgeSettings
from bridge.domain.session import ACTIVE_STATUSES
from bridge.errors import InvalidAPIParameters, PullFailed, TooManyRequests
from bridge.services.images import Image, ImageResolver

logger = logging.getLogger(__name__)
_REF = re.compile(r"^(?P<scheme>docker|oras)://(?P<rest>[A-Za-z0-9._:/@+-]+)\Z")


@dataclass(frozen=True)
class RemoteRef:
    scheme: str          # docker | oras
    registry: str        # host[:port]
    repository: str
    tag: str
    digest: str | None   # when the reference pins one

    @property
    def name(self) -> str:
        """The registry name it is kept under: registry/repository:tag."""
        return f"{self.registry}/{self.repository}:{self.tag}"

    def pinned(self, digest: str) -> str:
        return f"{self.scheme}://{self.registry}/{self.repository}@{digest}"


def parse(ref: str) -> RemoteRef | None:
    """A docker:// or oras:// reference, normalised as Docker does (`python` is docker.io/library/python)."""
    m = _REF.match(ref.strip())
    if m is None:
        return None
    rest, digest = m["rest"], None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST.match(digest):
            raise InvalidAPIParameters(f"image: {digest!r} is not a sha256 digest")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = "docker.io", rest
    name, _, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "latest")
    if registry == "docker.io" and "/" not in name:
        name = f"library/{name}"
    if not name or ".." in name.split("/"):
        raise InvalidAPIParameters(f"image: {ref!r} is not a valid reference")
    return RemoteRef(m["scheme"], registry, name, tag or "latest", digest)


class ImagePuller:
    def __init__(self, runner: CommandRunner, resolver: ImageResolver, settings: BridgeSettings,
                 registry: OciRegistry | None = None) -> None:
        self.runner, self.resolver = runner, resolver
        self.registry: OciRegistry = registry or HttpOciRegistry()
        self.config = settings.images
        self.cache_dir = self.config.cache_dir or posixpath.join(settings.sessions.image_dir, ".cache")
        self._inflight: dict[str, asyncio.Task[str]] = {}
        self._started_by: dict[str, str] = {}   # digest -> the user whose request started its pull
        self._turns = asyncio.Semaphore(self.config.max_pulls)

    def allowed_on_create(self, ref: RemoteRef) -> bool:
        return any(fnmatch.fnmatchcase(ref.registry, p) for p in self.config.pull_on_create)

    def insecure(self, ref: RemoteRef) -> bool:
        return any(fnmatch.fnmatchcase(ref.registry, p) for p in self.config.insecure_registries)

    async def digest(self, ref: RemoteRef) -> str:
        """The manifest digest a tag points to now (PullFailed, or RegistryUnavailable when the registry is
        down)."""
        if ref.digest:
            return ref.digest
        return await self.registry.digest(ref.registry, ref.repository, ref.tag, insecure=self.insecure(ref))

    def cache_path(self, ref: RemoteRef, digest: str) -> str:
        return posixpath.join(self.cache_dir, digest.replace(":", "-")) + ".sif"

    async def _run(self, argv: list[str], timeout_s: float) -> Completed:
        """A command of the pull, as the pull user, with Apptainer's own cache inside the image cache."""
        user = self.config.pull_user or None
        env = {"HOME": self.cache_dir, "APPTAINER_CACHEDIR": posixpath.join(self.cache_dir, ".apptainer")} \
            if user else None
        return await self.runner.run(argv, user=user, env=env, timeout_s=timeout_s)

    async def cached(self, ref: RemoteRef) -> tuple[str, Image | None]:
        """(digest, the image if that digest is already pulled and registered)."""
        digest = await self.digest(ref)
        row = await self.resolver.find(ref.name)   # the registry only: no file-system probing for a URL
        return digest, Image.from_row(row) if row and row.path == self.cache_path(ref, digest) else None

    def start(self, ref: RemoteRef, digest: str, user: str | None = None) -> asyncio.Task[str]:
        """The pull of `digest` into the cache, started now or already running (one per digest at a time).

        A pull `user` starts counts against their `max_pulls_per_user` until it ends: one more is refused
        with TooManyRequests before anything is pulled, so one user cannot fill the cache or the site's
        pull slots with a stream of new tags."""
        task = self._inflight.get(digest)
        if task is not None:
            return task
        if user is not None:
            mine = sum(1 for who in self._started_by.values() if who == user)
            if mine >= self.config.max_pulls_per_user:
                raise TooManyRequests(f"image: you have {mine} image pulls running, the most this site allows one "
                                      "user; try again when one has ended")
            self._started_by[digest] = user
        task = self._inflight[digest] = asyncio.create_task(self._fetch(ref, digest))

        def ended(_: object) -> None:
            self._inflight.pop(digest, None)
            self._started_by.pop(digest, None)

        task.add_done_callback(ended)
        return task

    async def pull(self, ref: RemoteRef, digest: str | None = None, name: str | None = None,
                   aliases: list[str] | None = None, user: str | None = None,
                   task: asyncio.Task[str] | None = None) -> ImageRow:
        """Pull (unless the digest is cached, or joining the pull of it that runs) and register; `task`: the
        pull `start` gave for it already."""
        digest = digest or await self.digest(ref)
        path = await asyncio.shield(task or self.start(ref, digest, user))
        return await self.resolver.add(name or ref.name, path, aliases or [], digest=digest)

    async def _fetch(self, ref: RemoteRef, digest: str) -> str:
        path = self.cache_path(ref, digest)
        if (await self._run(["test", "-e", path], timeout_s=15)).ok:   # no turn needed for what is there
            logger.info("image %s (%s) is in the cache", ref.name, digest)
            return path
        async with self._turns:   # at most images.max_pulls at once; the rest wait here
            return await self._fetch_now(ref, digest, path)

    async def _fetch_now(self, ref: RemoteRef, digest: str, path: str) -> str:
        made = await self._run(["mkdir", "-p", self.cache_dir], timeout_s=15)
        if not made.ok:
            raise PullFailed(f"image: cannot create the cache {self.cache_dir}: {made.stderr.strip()[:200]}")
        tmp = f"{path}.partial"
        insecure = ["--no-https"] if self.insecure(ref) else []
        await self._run(["rm", "-rf", tmp], timeout_s=60)
        if ref.scheme == "oras":
            argv = ["apptainer", "-s", "pull", *insecure, tmp, ref.pinned(digest)]
        else:
            argv = ["apptainer", "-s", "build", *insecure, tmp, ref.pinned(digest)]
        logger.info("pulling %s (%s) into %s", ref.name, digest, path)
        done = await self._run(argv, timeout_s=self.config.pull_timeout_s)
        if not done.ok:
            await self._run(["rm", "-rf", tmp], timeout_s=60)
            raise PullFailed(f"image: pulling {ref.name} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        moved = await self._run(["sh", "-c", 'chmod 0444 "$1" && mv -T "$1" "$2"', "sh", tmp, path], timeout_s=60)
        if not moved.ok:
            raise PullFailed(f"image: cannot move the pulled image into the cache: {moved.stderr.strip()[:200]}")
        return path

    async def prune(self, db: Database, dry_run: bool = False) -> list[str]:
        """Remove cache entries that no registered image and no live session uses; returns their paths."""
        listed = await self._run(["ls", "-1", self.cache_dir], timeout_s=30)
        if not listed.ok:
            return []
        async with db.unit_of_work() as s:
            used = set((await s.execute(select(ImageRow.path))).scalars())
            used |= set((await s.execute(select(SessionRow.image_path).where(
                SessionRow.status.in_([x.value for x in ACTIVE_STATUSES])))).scalars())
        stale = [posixpath.join(self.cache_dir, name) for name in listed.stdout.split()
                 if name.startswith("sha256-") and not name.endswith(".partial")
                 and posixpath.join(self.cache_dir, name) not in used]
        if stale and not dry_run:
            done = await self._run(["rm", "-rf", "--", *stale], timeout_s=600)
            if not done.ok:
                raise PullFailed(f"image: cannot remove {stale}: {done.stderr.strip()[:200]}")
        return stale
