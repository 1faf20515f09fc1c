"""Reading the cluster's passwd for a uid: getent's answers, as the command runner returns them."""

from __future__ import annotations

import pytest

from bridge.adapters.runner import Completed
from bridge.errors import CommandFailed
from bridge.services.unix_users import getent_lookup


class Passwd:
    """The command-runner boundary: answers `getent passwd NAME` as getent does."""

    def __init__(self, rc: int, stdout: str = "", stderr: str = "") -> None:
        self.rc, self.stdout, self.stderr, self.argv = rc, stdout, stderr, None

    async def run(self, argv, **_):
        self.argv = list(argv)
        return Completed(tuple(argv), self.rc, self.stdout, self.stderr, 0.01)


async def test_a_known_user_gives_its_uid():
    runner = Passwd(0, "alice:x:1001:1001:Alice,,,:/home/alice:/bin/bash\n")
    assert await getent_lookup(runner)("alice") == 1001
    assert runner.argv == ["getent", "passwd", "alice"]


async def test_an_unknown_user_is_none():
    assert await getent_lookup(Passwd(2))("nobody-here") is None


@pytest.mark.parametrize("rc, out", [(1, ""), (0, "garbage"), (255, "")])
async def test_anything_else_is_a_failure_not_a_guess(rc, out):
    with pytest.raises(CommandFailed):
        await getent_lookup(Passwd(rc, out, "ssh: connect failed"))("alice")
