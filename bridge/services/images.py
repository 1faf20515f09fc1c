"""Image references -> Apptainer image paths on the compute nodes' file system.

`python`, `python:3.13`, `cr.backend.ai/stable/python:3.13` all look for `<image_dir>/python` (a sandbox
directory) or `<image_dir>/python.sif`, unless `sessions.images` names the path explicitly. Existence is
checked once through the command runner (the path lives where the jobs run) and cached.
"""

from __future__ import annotations

import posixpath

from bridge.adapters.runner import CommandRunner
from bridge.errors import InvalidAPIParameters


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


class ImageResolver:
    def __init__(self, runner: CommandRunner, image_dir: str, images: dict[str, str]) -> None:
        self.runner, self.image_dir, self.images = runner, image_dir, images
        self._cache: dict[str, str] = {}

    async def resolve(self, ref: str) -> str:
        if not ref or any(c in ref for c in "\n\0"):
            raise InvalidAPIParameters("image: a reference is required")
        if ref in self._cache:
            return self._cache[ref]
        for path in candidates(ref, self.image_dir, self.images):
            if ".." in path.split("/"):
                continue
            done = await self.runner.run(["test", "-e", path], timeout_s=15)
            if done.ok:
                self._cache[ref] = path
                return path
        raise InvalidAPIParameters(f"image: unknown image {ref!r} (looked in {self.image_dir})",
                                   data={"image": ref})
