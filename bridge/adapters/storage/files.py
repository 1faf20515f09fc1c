"""Files in virtual folders, touched as a user: runs the folder file helper (helper.py) through the command
runner's user switch, and turns what it answers into the gateway's errors at this edge.

Transfers open the file through the helper too, which hands the open file to the gateway: the user opened
it (their permissions, their ownership, no symbolic link followed), and the bytes then move with plain
reads and writes, no process in between.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.adapters.runner import CommandRunner, Completed
from bridge.errors import BackendError, CommandFailed, InvalidAPIParameters, QuotaExceeded

HELPER_SOURCE = Path(__file__).with_name("helper.py").read_text()


@dataclass(frozen=True)
class OpenFile:
    """A file of a folder, opened by its user and handed over; the caller closes `fd`."""

    fd: int
    size: int
    mtime: int


class FolderFiles:
    def __init__(self, runner: CommandRunner, *, timeout_s: float, python: str = "python3") -> None:
        self.runner, self.timeout_s, self.python = runner, timeout_s, python

    def argv(self, op: str, *args: str) -> list[str]:
        return [self.python, "-I", "-c", HELPER_SOURCE, op, *args]

    async def call(self, user: str, op: str, *args: str, what: str) -> dict[str, Any]:
        """Run one helper operation as `user`; its JSON answer."""
        done = await self.runner.run(self.argv(op, *args), user=user, timeout_s=self.timeout_s)
        if not done.ok:
            raise self.error(done, what)
        try:
            answer = json.loads(done.stdout or "{}")
        except ValueError:
            raise BackendError(f"{what}: the folder helper answered {done.stdout[:100]!r}") from None
        return answer if isinstance(answer, dict) else {}

    @property
    def hands_over(self) -> bool:
        """Whether the transport can hand an open file to this process (local commands); otherwise
        transfers stream through the helper's standard input and output (SSH)."""
        return getattr(self.runner, "receive_fd", None) is not None

    async def write(self, user: str, host: str, folder: str, rel: str, offset: int, size: int,
                    chunks: AsyncIterator[bytes], *, what: str) -> int:
        """Stream bytes into an upload's hidden file through the helper (no hand-over); the new offset."""
        feed = getattr(self.runner, "feed", None)
        if feed is None:
            raise BackendError("this command transport cannot stream files")
        done = await feed(self.argv("write", host, folder, rel, str(offset), str(size)), chunks, user=user)
        if not done.ok:
            raise self.error(done, what)
        return int(json.loads(done.stdout or "{}").get("offset", offset))

    async def read(self, user: str, host: str, folder: str, rel: str, start: int, *,
                   what: str) -> AsyncIterator[bytes]:
        """Stream a file from `start` through the helper (no hand-over). Its first bytes are read before
        this returns, so that a failure is a clean error, not a short body."""
        drain = getattr(self.runner, "drain", None)
        if drain is None:
            raise BackendError("this command transport cannot stream files")
        stream = drain(self.argv("read", host, folder, rel, str(start)), user=user)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            return empty_stream()
        except CommandFailed as e:
            raise self.error(Completed((), 1, "", e.msg.partition(": ")[2], 0.0), what) from None
        return _prefixed(first, stream)

    async def open(self, user: str, host: str, folder: str, rel: str, mode: str, *, what: str) -> OpenFile:
        """A plain file of the folder, opened by `user` ('r', or 'w') and handed to this process."""
        receive = getattr(self.runner, "receive_fd", None)
        if receive is None:
            raise BackendError("file transfers need the local command transport (slurm.cli.transport = local)")
        fd, info, done = await receive(self.argv("open", host, folder, rel, mode), user=user,
                                       timeout_s=self.timeout_s)
        if fd is None:
            raise self.error(done, what)
        try:
            meta = json.loads(info or b"{}")
            return OpenFile(fd, int(meta["size"]), int(meta["mtime"]))
        except (ValueError, KeyError, TypeError):
            os.close(fd)
            raise BackendError(f"{what}: the folder helper answered {info[:100]!r}") from None

    @staticmethod
    def error(done: Completed, what: str) -> Exception:
        """What a failed helper run means for the user: what they asked was wrong (400), the storage is
        full (412), or the gateway's side failed (502). The message names no path on the host."""
        try:
            err = json.loads(done.stderr.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return BackendError(f"{what}: {(done.stderr.strip() or f'exit {done.rc}')[-200:]}")
        if not isinstance(err, dict):
            return BackendError(f"{what}: {done.stderr.strip()[-200:]}")
        msg = str(err.get("msg") or "failed")
        if err.get("kind") == "full":
            return QuotaExceeded(f"{what}: the storage is full ({msg})")
        if err.get("errno") == errno.ENOENT:
            return InvalidAPIParameters(f"{what}: no such file or folder")
        if err.get("errno") == errno.EEXIST:
            return InvalidAPIParameters(f"{what}: it exists already")
        if err.get("kind") in ("user", "refused"):
            return InvalidAPIParameters(f"{what}: {msg}")
        return BackendError(f"{what}: {msg[:200]}")


READ_CHUNK = 1 << 20


async def write_at(fd: int, chunks: list[bytes], offset: int) -> int:
    """The chunks written at `offset`, with pwritev in a worker thread (a write may wait on the disk's
    writeback); the bytes written."""
    total = sum(len(c) for c in chunks)
    done = 0
    while done < total:
        rest = _skip(chunks, done)
        done += await asyncio.to_thread(os.pwritev, fd, rest, offset + done)
    return total


def _skip(chunks: list[bytes], n: int) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = []
    for c in chunks:
        if n >= len(c):
            n -= len(c)
            continue
        out.append(memoryview(c)[n:] if n else c)
        n = 0
    return out


def read_from(fd: int, start: int, size: int) -> AsyncIterator[bytes]:
    """The file from `start` to the size it had when opened, a chunk at a time. The file is owned by what
    this returns: closed at the end, when the client goes away, or (never iterated) when it is dropped."""
    return _chunks(_Owned(fd), start, size)


class _Owned:
    """A file descriptor closed once, by whoever is last: the reader when done, else the collector."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    __del__ = close


async def _chunks(f: _Owned, start: int, size: int) -> AsyncIterator[bytes]:
    try:
        at = start
        while at < size:
            chunk = await asyncio.to_thread(os.pread, f.fd, min(READ_CHUNK, size - at), at)
            if not chunk:
                break
            at += len(chunk)
            yield chunk
    finally:
        f.close()


async def empty_stream() -> AsyncIterator[bytes]:
    return
    yield b""


async def _prefixed(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()   # type: ignore[attr-defined]   # the command stops when the client goes away
