"""Running argv lists as a given Unix user, here or on a login node over SSH.

`CommandRunner` is the seam; `LocalRunner` execs locally (with an optional prefix such as a chroot and a
user switch), `SshRunner` runs the same argv through paramiko. Never a shell string from user input:
argv items are quoted with shlex where a remote shell must parse them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from bridge.domain.backoff import Backoff
from bridge.errors import CommandFailed

logger = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # cap on what one command may print; squeue of 10k jobs is ~40 MB


@dataclass(frozen=True, slots=True)
class Completed:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.rc == 0


class CommandRunner(Protocol):
    async def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout_s: float = 60.0,
    ) -> Completed:
        """Run argv as `user` (None: the runner's own identity) with extra environment `env`.

        Raises:
            CommandFailed: the command could not start, its transport failed, or it timed out.
        """
        ...


def _env_argv(env: Mapping[str, str] | None) -> list[str]:
    return ["env", *(f"{k}={v}" for k, v in env.items())] if env else []


CLEAN_ENV = ("/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8")


def _check_user(user: str) -> None:
    if not user or user.startswith("-") or not all(c.isalnum() or c in "._-" for c in user):
        raise CommandFailed(f"invalid Unix user name: {user!r}")


class LocalRunner:
    """Runs commands on this machine: `prefix + [user switch] + [env K=V] + argv`."""

    def __init__(
        self,
        prefix: Sequence[str] = (),
        user_switch: Literal["runuser", "sudo", "none"] = "runuser",
    ) -> None:
        self.prefix = list(prefix)
        self.user_switch = user_switch

    def build_argv(self, argv: Sequence[str], user: str | None, env: Mapping[str, str] | None) -> list[str]:
        # every command starts from a clean, explicit environment: the gateway's own (BRIDGE_SECRET, the
        # database URL, ...) must never reach a command, least of all a job (`sbatch --export=ALL` passes
        # what the submitting process has)
        full = list(self.prefix) + list(CLEAN_ENV)
        if user is not None:
            _check_user(user)
            if self.user_switch == "runuser":
                full += ["runuser", "-u", user, "--"]
            elif self.user_switch == "sudo":
                full += ["sudo", "-n", "-u", user, "--"]
        return full + _env_argv(env) + list(argv)

    async def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout_s: float = 60.0,
    ) -> Completed:
        full = self.build_argv(argv, user, env)
        t0 = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *full,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd="/",
                start_new_session=True,   # its own process group: a timeout kills what it started, too
            )
        except OSError as e:
            raise CommandFailed(f"cannot run {argv[0]}: {e}") from e
        try:
            async with asyncio.timeout(timeout_s):
                out, err = await _communicate_capped(proc, stdin.encode() if stdin is not None else None)
        except OutputTooLarge:
            await _stop(proc)
            raise CommandFailed(f"{argv[0]}: its output exceeds the cap of {MAX_OUTPUT_BYTES >> 20} MiB") from None
        except TimeoutError:
            await _stop(proc)
            raise CommandFailed(f"{argv[0]} timed out after {timeout_s:.0f} s") from None
        except asyncio.CancelledError:   # the caller gave up (shutdown): no process, no pipe left behind
            await _stop(proc)
            raise
        done = Completed(
            tuple(argv), proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"),
            time.monotonic() - t0,
        )
        logger.debug("ran %s as %s: rc=%d in %.3fs", argv[0], user or "-", done.rc, done.duration_s)
        if done.rc in (126, 127) and done.stderr.startswith("/usr/bin/env:"):
            raise CommandFailed(f"cannot run {argv[0]}: {done.stderr.strip()[:200]}")   # env found no such program
        return done

    async def feed(self, argv: Sequence[str], chunks: AsyncIterator[bytes], *, user: str | None = None,
                   timeout_s: float = 3600.0) -> Completed:
        """Run argv as `user` with `chunks` streamed to its standard input (a file written as the user, a
        chunk at a time: nothing holds the whole of it)."""
        proc = await self._start(argv, user, stdin=True)
        assert proc.stdin is not None
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    async for chunk in chunks:
                        proc.stdin.write(chunk)
                        await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                proc.stdin.close()
                out, err = await _communicate_capped(proc, None)
        except TimeoutError:
            await _stop(proc)
            raise CommandFailed(f"{argv[0]} timed out after {timeout_s:.0f} s") from None
        except BaseException:
            await _stop(proc)
            raise
        return Completed(tuple(argv), proc.returncode or 0, out.decode(errors="replace"),
                         err.decode(errors="replace"), 0.0)

    async def drain(self, argv: Sequence[str], *, user: str | None = None,
                    chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Run argv as `user` and yield its standard output as it comes (a file read as the user). A command
        that fails before printing anything raises CommandFailed with its error."""
        proc = await self._start(argv, user, stdin=False)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            first = await proc.stdout.read(chunk_size)
            if not first:
                err = (await proc.stderr.read(4096)).decode(errors="replace")
                if await proc.wait():
                    raise CommandFailed(f"{argv[0]}: {err.strip()[:300]}")
            else:
                yield first
                while chunk := await proc.stdout.read(chunk_size):
                    yield chunk
            await proc.wait()
        finally:
            if proc.returncode is None:
                await _stop(proc)

    async def receive_fd(self, argv: Sequence[str], *, user: str | None = None,
                         timeout_s: float = 60.0) -> tuple[int | None, bytes, Completed]:
        """Run argv as `user` with its standard output a Unix socket, over which it hands an open file
        (SCM_RIGHTS) and a short message: (the file descriptor or None, the message, how it ended)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *self.build_argv(argv, user, None), stdin=asyncio.subprocess.DEVNULL, stdout=theirs.fileno(),
                    stderr=asyncio.subprocess.PIPE, cwd="/", start_new_session=True)
            except OSError as e:
                raise CommandFailed(f"cannot run {argv[0]}: {e}") from e
            finally:
                theirs.close()
            try:
                async with asyncio.timeout(timeout_s):
                    _, err = await _communicate_capped(proc, None)
            except TimeoutError:
                await _stop(proc)
                raise CommandFailed(f"{argv[0]} timed out after {timeout_s:.0f} s") from None
            ours.setblocking(False)
            fds: list[int] = []
            message = b""
            try:
                message, ancillary, _, _ = ours.recvmsg(4096, socket.CMSG_SPACE(4))
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds += [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, len(data) - 3, 4)]
            except BlockingIOError:
                pass
            for extra in fds[1:]:
                os.close(extra)
            done = Completed(tuple(argv), proc.returncode or 0, "", err.decode(errors="replace"), 0.0)
            if fds and not done.ok:
                os.close(fds[0])
                fds = []
            return (fds[0] if fds else None), message, done
        finally:
            ours.close()

    async def _start(self, argv: Sequence[str], user: str | None, *, stdin: bool) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *self.build_argv(argv, user, None), stdin=asyncio.subprocess.PIPE if stdin else
                asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                cwd="/", start_new_session=True)
        except OSError as e:
            raise CommandFailed(f"cannot run {argv[0]}: {e}") from e


class OutputTooLarge(Exception):
    pass


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill a command and what it started (its process group), and reap it.

    asyncio's `wait()` returns only once the command's pipes are closed, so they are read to their end;
    a descendant that left the group and holds them open is given up on after a few seconds."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):   # sudo to another user: not ours to kill
            proc.kill()

    async def discard(stream: asyncio.StreamReader | None) -> None:
        while stream is not None and await stream.read(1 << 16):
            pass

    try:
        async with asyncio.timeout(5):
            await asyncio.gather(discard(proc.stdout), discard(proc.stderr))
            await proc.wait()
    except TimeoutError:
        logger.warning("pid %d was killed but something still holds its output open", proc.pid)


async def _communicate_capped(proc: asyncio.subprocess.Process, stdin: bytes | None) -> tuple[bytes, bytes]:
    """`proc.communicate()`, but a command that prints more than MAX_OUTPUT_BYTES (on stdout and stderr
    together) raises OutputTooLarge instead of filling the gateway's memory."""
    total = 0

    async def drain(stream: asyncio.StreamReader | None) -> bytes:
        nonlocal total
        chunks: list[bytes] = []
        while stream is not None and (chunk := await stream.read(1 << 16)):
            total += len(chunk)
            if total > MAX_OUTPUT_BYTES:
                raise OutputTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def feed() -> None:
        if proc.stdin is not None:
            try:
                if stdin:
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                proc.stdin.close()

    try:
        async with asyncio.TaskGroup() as tasks:   # one failing cancels the others
            tasks.create_task(feed())
            out, err = tasks.create_task(drain(proc.stdout)), tasks.create_task(drain(proc.stderr))
    except ExceptionGroup as group:
        raise group.exceptions[0] from None
    await proc.wait()
    return out.result(), err.result()


# Offered first, where the server has them: AES-GCM is one authenticated-encryption call per packet (in
# `cryptography`), where CTR with an HMAC is two passes, the MAC's in paramiko's Python; encrypt-then-MAC
# before MAC-then-encrypt for a server without GCM. A direct-tcpip channel from the dev cluster's OpenSSH
# carried 492 MiB/s with aes128-gcm, 412 with aes128-ctr + hmac-sha2-256-etm, 346 with paramiko's first
# choice, aes128-ctr + hmac-sha2-256 (docs/services.md, Performance).
SSH_CIPHERS_FIRST = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
SSH_MACS_FIRST = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com")
# never offered: broken or long retired (OpenSSH itself dropped them from its defaults)
SSH_REFUSED = ("3des-cbc", "hmac-md5", "hmac-md5-96")


def ssh_transport(sock: Any, **kwargs: Any) -> Any:   # a paramiko.Transport
    """paramiko's Transport, offering the faster of the algorithms it shares with the server first, and none
    of SSH_REFUSED."""
    import paramiko

    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    for kind, first in (("ciphers", SSH_CIPHERS_FIRST), ("digests", SSH_MACS_FIRST)):
        offered = tuple(a for a in getattr(options, kind) if a not in SSH_REFUSED)
        setattr(options, kind, tuple(a for a in first if a in offered) + tuple(a for a in offered if a not in first))
    return transport


class SshRunner:
    """Runs commands on a login node over SSH (paramiko), logging in as the mapped user.

    Host keys are always checked against `known_hosts`. One connection per login user is kept, with
    keep-alives so that a dead one is noticed, and reused (paramiko is blocking, so every call runs in a
    worker thread). Logins connect independently of each other. After a failed connection the login node is
    not tried again for 1 s, then 2, 4 ... up to 30 s: calls meanwhile fail at once, saying so, instead of
    each waiting for its own connect timeout.
    """

    KEEPALIVE_S = 30
    MAX_BACKOFF_S = 30.0

    def __init__(
        self,
        host: str,
        port: int,
        *,
        identity_file: Path | None,
        known_hosts: Path | None,
        service_user: str = "root",
        connect_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.identity_file, self.known_hosts = identity_file, known_hosts
        self.service_user = service_user
        self.connect_timeout_s = connect_timeout_s
        self.clock = clock
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()                  # guards the dicts, never held while connecting
        self._login_locks: dict[str, threading.Lock] = {}
        self._backoff = Backoff(self.MAX_BACKOFF_S, clock)   # no connection attempt before it allows one

    def _client(self, login: str) -> Any:   # a paramiko.SSHClient (paramiko has no type hints)
        import paramiko

        with self._lock:
            lock = self._login_locks.setdefault(login, threading.Lock())
        with lock:
            with self._lock:
                client = self._clients.get(login)
            transport = client.get_transport() if client is not None else None  # type: ignore[attr-defined]
            if client is not None and transport is not None and transport.is_active():
                return client
            if self.known_hosts is None:
                raise CommandFailed("ssh.known_hosts is not configured: refusing to trust any host key")
            wait = self._backoff.wait_s()
            if wait > 0:
                raise CommandFailed(f"the login node {self.host}:{self.port} did not answer; next try in "
                                    f"{wait:.0f} s")
            client = paramiko.SSHClient()
            client.load_host_keys(str(self.known_hosts))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(
                    self.host, port=self.port, username=login,
                    key_filename=str(self.identity_file) if self.identity_file else None,
                    timeout=self.connect_timeout_s, allow_agent=False, look_for_keys=False,
                    transport_factory=ssh_transport,
                )
            except (OSError, paramiko.SSHException) as e:
                if not isinstance(e, paramiko.AuthenticationException | paramiko.BadHostKeyException):
                    self._backoff.failed()   # the node's problem, not this login's own
                raise
            self._backoff.succeeded()
            client.get_transport().set_keepalive(self.KEEPALIVE_S)
            with self._lock:
                self._clients[login] = client
            return client

    def transport(self, login: str) -> Any:   # a paramiko.Transport
        """The live paramiko transport of `login`'s connection (for port forwarding)."""
        return self._client(login).get_transport()

    def _open(self, login: str, command: str, timeout_s: float) -> Any:   # a paramiko.Channel
        client = self._client(login)
        chan = client.get_transport().open_session(timeout=self.connect_timeout_s)
        chan.settimeout(timeout_s)
        chan.exec_command(command)
        return chan

    def _run_blocking(self, login: str, command: str, stdin: str | None, timeout_s: float) -> tuple[int, str, str]:
        chan = self._open(login, command, timeout_s)
        if stdin is not None:
            chan.sendall(stdin.encode())
        chan.shutdown_write()
        return self._collect(chan, timeout_s)

    @staticmethod
    def _collect(chan: Any, timeout_s: float) -> tuple[int, str, str]:
        """Read a command's output and wait for its end (its input is closed already)."""
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout_s
        while True:
            while chan.recv_ready():
                out += chan.recv(65536)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if len(out) > MAX_OUTPUT_BYTES:
                chan.close()
                raise CommandFailed("command output exceeds the cap")
            # the end is the server's EOF, not the exit status: sshd may send that while output it holds back
            # for the window is still to come (a large squeue --json was cut short)
            if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                chan.close()
                raise TimeoutError
            # wait for the channel to have something (data, stderr, its end) instead of polling it
            select.select([chan], [], [], min(remaining, 1.0))
        rc = chan.recv_exit_status()
        chan.close()
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    async def run(
        self,
        argv: Sequence[str],
        *,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        timeout_s: float = 60.0,
    ) -> Completed:
        login = user or self.service_user
        _check_user(login)
        command = shlex.join(_env_argv(env) + list(argv))
        t0 = time.monotonic()
        try:
            rc, out, err = await asyncio.to_thread(self._run_blocking, login, command, stdin, timeout_s)
        except TimeoutError:
            raise CommandFailed(f"{argv[0]} timed out after {timeout_s:.0f} s over SSH") from None
        except CommandFailed:
            raise
        except Exception as e:  # paramiko, socket and OS errors all mean the transport failed
            with self._lock:
                self._clients.pop(login, None)
            raise CommandFailed(f"ssh {login}@{self.host}:{self.port}: {type(e).__name__}: {e}") from e
        done = Completed(tuple(argv), rc, out, err, time.monotonic() - t0)
        logger.debug("ran %s over ssh as %s: rc=%d in %.3fs", argv[0], login, rc, done.duration_s)
        return done

    async def feed(self, argv: Sequence[str], chunks: AsyncIterator[bytes], *, user: str | None = None,
                   timeout_s: float = 3600.0) -> Completed:
        """Run argv as `user` over SSH with `chunks` streamed to its standard input, 1 MiB at a time."""
        login = user or self.service_user
        _check_user(login)
        t0 = time.monotonic()
        try:
            chan = await asyncio.to_thread(self._open, login, shlex.join(list(argv)), timeout_s)
        except Exception as e:
            raise self._failed(login, e) from e
        try:
            batch: list[bytes] = []
            queued = 0
            async for chunk in chunks:
                batch.append(chunk)
                queued += len(chunk)
                if queued >= 1 << 20:
                    await asyncio.to_thread(chan.sendall, b"".join(batch))
                    batch, queued = [], 0
            if batch:
                await asyncio.to_thread(chan.sendall, b"".join(batch))
            chan.shutdown_write()
            rc, out, err = await asyncio.to_thread(self._collect, chan, timeout_s)
        except TimeoutError:
            chan.close()
            raise CommandFailed(f"{argv[0]} timed out after {timeout_s:.0f} s over SSH") from None
        except (CommandFailed, OSError) as e:   # OSError: the channel or its socket failed
            chan.close()
            raise self._failed(login, e) from e
        except BaseException as e:   # paramiko's, or the chunks' own (a client gone, too many bytes)
            chan.close()
            if type(e).__module__.startswith("paramiko"):
                raise self._failed(login, e) from e
            raise
        return Completed(tuple(argv), rc, out, err, time.monotonic() - t0)

    async def drain(self, argv: Sequence[str], *, user: str | None = None,
                    chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Run argv as `user` over SSH and yield its standard output as it comes. A command that fails
        before printing anything raises CommandFailed with its error."""
        login = user or self.service_user
        _check_user(login)
        try:
            chan = await asyncio.to_thread(self._open, login, shlex.join(list(argv)), 3600.0)
        except Exception as e:
            raise self._failed(login, e) from e
        try:
            chan.shutdown_write()
            first = True
            while data := await asyncio.to_thread(chan.recv, chunk_size):
                first = False
                yield data
            rc = await asyncio.to_thread(chan.recv_exit_status)
            if rc and first:
                err = b""
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                raise CommandFailed(f"{argv[0]}: {err.decode(errors='replace').strip()[:300]}")
        finally:
            chan.close()

    def _failed(self, login: str, e: BaseException) -> CommandFailed:
        if isinstance(e, CommandFailed):
            return e
        with self._lock:
            self._clients.pop(login, None)
        return CommandFailed(f"ssh {login}@{self.host}:{self.port}: {type(e).__name__}: {e}")

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                c.close()  # type: ignore[attr-defined]
            self._clients.clear()
