"""Image lookup: a path of the user's own is looked at as the user, the site's images as the gateway."""

from __future__ import annotations

import pytest

from bridge.adapters.runner import Completed
from bridge.errors import InvalidAPIParameters
from bridge.services.images import ImageResolver


class Recorder:
    """The command runner's boundary: records who each command runs as; `readable` is what exists."""

    def __init__(self, readable: dict[str, set[str | None]]) -> None:
        self.readable, self.calls = readable, []

    async def run(self, argv, *, user=None, env=None, stdin=None, timeout_s=60.0):
        self.calls.append((argv[0], argv[1], argv[-1], user))
        ok = user in self.readable.get(argv[-1], set())
        out = '{"data": {"attributes": {"labels": {"ai.backend.service-ports": "x:http:1"}}}}' if ok else ""
        return Completed(tuple(argv), 0 if ok else 1, out, "" if ok else "Permission denied", 0.0)


async def test_a_users_own_image_path_is_tested_and_inspected_as_that_user():
    """Finding 12 (low): an absolute image path was tested and inspected as the gateway's user (root),
    which told the existence of any file and mounted an untrusted image with root's privileges."""
    runner = Recorder({"/home/alice/mine.sif": {"alice"}, "/srv/images/python": {None},
                       "/root/secret.sif": {None}})
    images = ImageResolver(runner, "/srv/images", {})   # type: ignore[arg-type]
    mine = await images.lookup("/home/alice/mine.sif", user="alice")
    assert mine.path == "/home/alice/mine.sif" and mine.labels["ai.backend.service-ports"] == "x:http:1"
    assert {who for *_, who in runner.calls} == {"alice"}
    with pytest.raises(InvalidAPIParameters, match="no image file there that you can read"):
        await images.lookup("/root/secret.sif", user="alice")       # root can read it; alice cannot
    with pytest.raises(InvalidAPIParameters, match="no image file there that you can read"):
        await images.lookup("/home/alice/mine.sif", user="bob")     # not cached across users
    with pytest.raises(InvalidAPIParameters, match="not a plain path"):
        await images.lookup("/home/alice/../../root/secret.sif", user="alice")
    runner.calls.clear()
    site = await images.lookup("/srv/images/python", user="alice")   # the site's own: as the gateway
    assert site.path == "/srv/images/python" and {who for *_, who in runner.calls} == {None}
