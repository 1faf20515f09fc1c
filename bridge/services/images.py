"""Kernel images: Backend.AI references (`python`, `python:3.13`, `cr.backend.ai/stable/python:3.13`,
aliases) mapped to Apptainer images (SIF files or sandbox directories) on the compute nodes' file system.

The registry (table `images`) is filled by `bai-bridge admin image add` (and by `dev up` for the dev
cluster's images); it keeps each image's `ai.backend.*` labels, read with `apptainer inspect`. A reference
that is not registered is looked up under `sessions.image_dir` as a fallback and inspected once.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import ImageRow
from bridge.adapters.runner import CommandRunner
from bridge.domain.resources import SlotRequest, parse_binary_size
from bridge.errors import InvalidAPIParameters, ObjectNotFound

CACHE_S = 60.0


@dataclass(frozen=True)
class Image:
    name: str
    path: str
    labels: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    architecture: str = "x86_64"

    @classmethod
    def from_row(cls, row: ImageRow) -> Image:
        return cls(row.name, row.path, dict(row.labels or {}), tuple(row.aliases or ()), row.architecture)

    def minimum(self) -> tuple[int, int]:
        """(cpu, memory bytes) from ai.backend.resource.min.* labels."""
        cpu = int(float(self.labels.get("ai.backend.resource.min.cpu", "1") or 1))
        mem = parse_binary_size(self.labels.get("ai.backend.resource.min.mem", "0") or "0")
        return cpu, mem

    def check_resources(self, slots: SlotRequest) -> None:
        cpu, mem = self.minimum()
        if slots.cpu < cpu:
            raise InvalidAPIParameters(f"resources.cpu: image {self.name} needs at least {cpu} CPUs")
        if slots.mem_bytes < mem:
            raise InvalidAPIParameters(f"resources.mem: image {self.name} needs at least {mem} bytes of memory "
                                       f"({self.labels.get('ai.backend.resource.min.mem')})")


def candidates(ref: str, image_dir: str, images: dict[str, str]) -> list[str]:
    if ref in images:
        return [images[ref]]
    if ref.startswith("/"):
        return [ref]
    name = ref.rsplit("/", 1)[-1]
    base, _, tag = name.partition(":")
    out = []
    for stem in ([f"{base}-{tag}", f"{base}_{tag}"] if tag else []) + [base]:
        out += [posixpath.join(image_dir, stem), posixpath.join(image_dir, stem + ".sif")]
    return out


def split_reference(ref: str) -> tuple[str, str, str]:
    """(registry, name, tag) of `host:port/repo/name:tag`, `name:tag` or `name` (registry `local`)."""
    first, _, rest = ref.partition("/")
    registry = first if rest and ("." in first or ":" in first or first == "localhost") else "local"
    path = rest if registry != "local" else ref
    head, _, last = path.rpartition("/")
    base, _, tag = last.partition(":")
    return registry, f"{head}/{base}" if head else base, tag


def wire(image: ImageRow | Image) -> dict[str, Any]:
    """The GraphQL Image object."""
    labels = dict(image.labels or {})
    registry, name, tag = split_reference(image.name)
    cpu = labels.get("ai.backend.resource.min.cpu", "1")
    mem = labels.get("ai.backend.resource.min.mem", "0")
    return {
        "id": None, "name": name, "humanized_name": image.name, "tag": tag or "latest", "registry": registry,
        "architecture": image.architecture, "digest": getattr(image, "digest", None),
        "labels": [{"key": k, "value": v} for k, v in sorted(labels.items())],
        "aliases": list(image.aliases or []), "size_bytes": getattr(image, "size_bytes", None),
        "resource_limits": [{"key": "cpu", "min": cpu, "max": "Infinity"},
                            {"key": "mem", "min": mem, "max": "Infinity"}],
        "supported_accelerators": ["cuda"], "installed": True, "installed_agents": [],
    }


class ImageResolver:
    def __init__(self, runner: CommandRunner, image_dir: str, images: dict[str, str],
                 db: Database | None = None) -> None:
        self.runner, self.image_dir, self.images, self.db = runner, image_dir, images, db
        self._cache: dict[str, tuple[float, Image]] = {}  # changes by `admin image` show within CACHE_S

    async def inspect(self, path: str, user: str | None = None) -> dict[str, str]:
        done = await self.runner.run(["apptainer", "inspect", "--json", "--labels", path], user=user, timeout_s=30)
        if not done.ok:
            raise InvalidAPIParameters(f"{path} is not an Apptainer image: {done.stderr.strip()[:200]}")
        try:
            labels = json.loads(done.stdout)["data"]["attributes"]["labels"] or {}
        except (ValueError, KeyError, TypeError):
            labels = {}
        return {k: str(v).strip('"') for k, v in labels.items()}

    def _own_path(self, ref: str) -> bool:
        """An absolute path outside the site's images: a file of the user's, to be looked at as the user."""
        return ref.startswith("/") and ref not in self.images \
            and not posixpath.normpath(ref).startswith(self.image_dir.rstrip("/") + "/")

    async def lookup(self, ref: str, user: str | None = None) -> Image:
        """The image `ref` names. A path of the user's own (absolute, outside image_dir) is tested and
        inspected as `user`, never as the gateway's user: the gateway must not open (or tell the existence
        of) a file the user could not, nor mount an untrusted image with its own privileges."""
        if not ref or any(c in ref for c in "\n\0"):
            raise InvalidAPIParameters("image: a reference is required")
        if self._own_path(ref):
            if ".." in ref.split("/"):
                raise InvalidAPIParameters(f"image: {ref!r} is not a plain path")
            if not (await self.runner.run(["test", "-e", ref], user=user, timeout_s=15)).ok:
                raise InvalidAPIParameters(f"image: unknown image {ref!r} (no image file there that you can read)",
                                           data={"image": ref})
            return Image(ref, ref, await self.inspect(ref, user=user))
        hit = self._cache.get(ref)
        if hit and time.monotonic() - hit[0] < CACHE_S:
            return hit[1]
        if self.db is not None:
            row = await self.find(ref)
            if row is not None:
                image = Image.from_row(row)
                self._cache[ref] = (time.monotonic(), image)
                return image
        for path in candidates(ref, self.image_dir, self.images):
            if ".." in path.split("/"):
                continue
            if (await self.runner.run(["test", "-e", path], timeout_s=15)).ok:
                image = Image(ref, path, await self.inspect(path))
                self._cache[ref] = (time.monotonic(), image)
                return image
        raise InvalidAPIParameters(f"image: unknown image {ref!r} (not registered, not in {self.image_dir})",
                                   data={"image": ref})

    async def find(self, ref: str) -> ImageRow | None:
        """The registered image named or aliased `ref` (the registry only, no file-system fallback)."""
        assert self.db is not None
        async with self.db.unit_of_work() as s:
            row = await s.get(ImageRow, ref)
            if row is None:
                row = next((r for r in (await s.execute(select(ImageRow))).scalars() if ref in (r.aliases or [])),
                           None)
            return row

    def forget(self) -> None:
        self._cache.clear()

    # ---- administration ---------------------------------------------------------------------------------

    async def add(self, name: str, path: str, aliases: list[str] | None = None,
                  digest: str | None = None) -> ImageRow:
        assert self.db is not None
        if not (await self.runner.run(["test", "-e", path], timeout_s=15)).ok:
            raise InvalidAPIParameters(f"path: {path} does not exist where the jobs run")
        labels = await self.inspect(path)
        size = await self.runner.run(["du", "-sb", path], timeout_s=120)
        async with self.db.unit_of_work() as s:
            row = await s.get(ImageRow, name) or ImageRow(name=name)
            row.path, row.labels, row.digest = path, labels, digest
            row.aliases = sorted(set(row.aliases or []) | set(aliases or []))
            row.size_bytes = int(size.stdout.split()[0]) if size.ok and size.stdout.split() else None
            s.add(row)
        self.forget()
        return row

    async def alias(self, alias: str, target: str) -> None:
        assert self.db is not None
        async with self.db.unit_of_work() as s:
            row = await s.get(ImageRow, target)
            if row is None:
                raise ObjectNotFound(f"no image {target}")
            for other in (await s.execute(select(ImageRow))).scalars():
                if alias in (other.aliases or []) and other.name != target:
                    raise InvalidAPIParameters(f"alias {alias} already points to {other.name}")
            row.aliases = sorted(set(row.aliases or []) | {alias})
        self.forget()

    async def dealias(self, alias: str) -> None:
        assert self.db is not None
        async with self.db.unit_of_work() as s:
            for row in (await s.execute(select(ImageRow))).scalars():
                if alias in (row.aliases or []):
                    row.aliases = [a for a in row.aliases if a != alias]
                    break
            else:
                raise ObjectNotFound(f"no image alias {alias}")
        self.forget()

    async def remove(self, name: str) -> None:
        assert self.db is not None
        async with self.db.unit_of_work() as s:
            row = await s.get(ImageRow, name)
            if row is None:
                raise ObjectNotFound(f"no image {name}")
            await s.delete(row)
        self.forget()

    async def rescan(self, report: Callable[[int, int, str], None], registry: str | None = None) -> str:
        """Read every registered image's labels and size again (after an image file was rebuilt in place);
        `registry`: only the images whose reference starts with it ("local" or none: all). An image whose
        file is gone is reported and kept: sessions asking for it get a clear error."""
        rows = [r for r in await self.list()
                if not registry or registry == "local" or r.name.startswith(registry.rstrip("/") + "/")]
        missing = []
        for i, row in enumerate(rows):
            report(i, len(rows), f"reading {row.name}")
            if not (await self.runner.run(["test", "-e", row.path], timeout_s=15)).ok:
                missing.append(row.name)
                continue
            await self.add(row.name, row.path, digest=row.digest)
        report(len(rows), len(rows), "done")
        gone = f"; missing on disk: {', '.join(missing)}" if missing else ""
        return f"rescanned {len(rows) - len(missing)} image(s){gone}"

    async def list(self) -> list[ImageRow]:
        assert self.db is not None
        async with self.db.unit_of_work() as s:
            return list((await s.execute(select(ImageRow).order_by(ImageRow.name))).scalars())
