"""The SSH runner reads a command's output to the server's EOF: OpenSSH may send the exit status while output
it holds back for the channel's window is still to come, and a reader that stops at the exit status cuts a
large answer short (a squeue --json of every job, seen over the ssh transport)."""

from __future__ import annotations

import os

from bridge.adapters.runner import SshRunner


class _Channel:
    """A channel whose exit status is known from the start while its output arrives in pieces."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces, self.closed, self.eof_received = list(pieces), False, False
        self._r, w = os.pipe()
        os.write(w, b"x")   # always "readable" for select
        os.close(w)

    def fileno(self) -> int:
        return self._r

    def recv_ready(self) -> bool:
        return bool(self.pieces)

    def recv(self, n: int) -> bytes:
        return self.pieces.pop(0)

    def recv_stderr_ready(self) -> bool:
        return False

    def exit_status_ready(self) -> bool:
        return True

    def recv_exit_status(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True
        os.close(self._r)


class _Late(_Channel):
    def recv_ready(self) -> bool:   # a piece is ready only every other look: the window's wait
        self.turn = not getattr(self, "turn", False)
        if not self.pieces:
            self.eof_received = True
            return False
        return self.turn


def test_output_held_back_after_the_exit_status_is_read_to_the_eof():
    pieces = [bytes([65 + i]) * 65536 for i in range(8)]
    rc, out, err = SshRunner._collect(_Late(pieces), timeout_s=5)
    assert rc == 0 and err == "" and len(out) == 8 * 65536 and out.endswith("H" * 10)
