"""Code execution in a session's kernel: the gateway's side of the in-job kernel runner.

The runner reports its port signed with the session's secret (`register`); `execute` forwards one step of a
run (query mode) to it and returns Backend.AI's result object. Every request either way is signed
(bridge/domain/runner_auth.py): the secret itself never crosses the network. Only the session's owner
(or an admin of its domain) reaches this, through SessionService.resolve.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import SessionRow
from bridge.adapters.kernel_runner import KernelRunnerClient, RunnerAnswer
from bridge.adapters.tunnel import KernelTransport
from bridge.domain import runner_auth
from bridge.domain.session import SessionStatus
from bridge.domain.transitions import EventName
from bridge.errors import (
    AuthorizationFailed,
    InvalidAPIParameters,
    KernelUnavailable,
    ObjectNotFound,
    SessionNotFound,
)
from bridge.services import service_ports
from bridge.services.sessions import SessionService

logger = logging.getLogger(__name__)


class ExecutionService:
    def __init__(self, db: Database, sessions: SessionService, *, ready_timeout_s: float,
                 transport: KernelTransport, runner: KernelRunnerClient, reports_from_node: bool = True) -> None:
        self.db, self.sessions, self.transport, self.runner = db, sessions, transport, runner
        self.ready_timeout_s = ready_timeout_s
        self.report_nonces = runner_auth.Nonces()
        self.reports_from_node = reports_from_node

    async def aclose(self) -> None:
        await self.runner.aclose()

    async def register(self, session_id: str, host: str, port: int, *, signature: str | None = None,
                       body: bytes = b"", legacy_secret: str | None = None,
                       info: dict[str, Any] | None = None) -> None:
        """The kernel runner's report: its port on the node where the job runs. Signed (X-Bridge-Auth) over
        this very request, so neither a forged nor a replayed report can point the session at another
        host; a runner copied before signing existed sends the secret itself (`legacy_secret`)."""
        async with self.db.unit_of_work() as s:
            row = await s.get(SessionRow, session_id)
            secret = (row.kernel_secret or "") if row is not None else ""
            if signature is not None:
                ok = runner_auth.verify(secret, signature, "POST", f"/kernel-callback/{session_id}",
                                        runner_auth.body_digest(body), time.time(), self.report_nonces)
            else:
                ok = bool(secret) and hmac.compare_digest(secret, legacy_secret or "")
            if row is None or not ok:
                raise AuthorizationFailed("unknown session or a report not signed with its secret")
            if not 0 < port < 65536:
                raise InvalidAPIParameters("port: out of range")
            if signature is not None and self.reports_from_node:
                try:
                    await self._check_from_node(row, str((info or {}).get("node") or ""), host)
                except AuthorizationFailed as e:   # for the admin: a site whose nodes report from another address
                    logger.warning("refused the kernel report of session %s: %s (sessions.reports_from_node)",
                                   session_id, e.msg)
                    raise
            row.kernel_host, row.kernel_port = host, port
            row.status_data = {**(row.status_data or {}), "kernel": "ready",
                               "kernel_ready_at": datetime.now(UTC).isoformat(),
                               **({"runner_auth": runner_auth.SCHEME} if signature is not None else {}),
                               **{k: v for k, v in (info or {}).items() if k in ("node", "gpus", "job_gpus", "shards")}}
        self.sessions.publish(row, EventName.KERNEL_STARTED)

    async def _check_from_node(self, row: SessionRow, node: str, peer: str) -> None:
        """A runner's report comes from the node its job runs on: the node it names must be one of the job's
        (when the watcher has seen them), and the report's source address that node's. The secret is in the
        user's folder, so the user's own code could otherwise sign a report from a login node and point the
        gateway at a listener of theirs there."""
        if not node:
            raise AuthorizationFailed("the report does not name its node")
        if row.nodes and node not in row.nodes:
            raise AuthorizationFailed(f"node {node} is not one of the session's job ({','.join(row.nodes)})")
        known = {n.name: n.address for n in await self.sessions.facts_nodes.get()}
        address = known.get(node)
        if address is None:
            if node not in known:
                raise AuthorizationFailed(f"no node {node} in the cluster")
            return   # Slurm gives no address for it: nothing to compare with
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(address, None)
        except OSError:
            infos = []
        if peer not in {address, *(str(i[4][0]) for i in infos)}:
            raise AuthorizationFailed(f"the report for node {node} came from {peer}, not from the node")

    @staticmethod
    def _signed(row: SessionRow, method: str, target: str, body: bytes | None) -> dict[str, str]:
        """Headers that authorize one request to the session's runner."""
        secret = row.kernel_secret or ""
        if (row.status_data or {}).get("runner_auth") == runner_auth.SCHEME:
            return {runner_auth.HEADER: runner_auth.header(secret, method, target, body, time.time(),
                                                           runner_auth.new_nonce())}
        return {"X-Bridge-Secret": secret}   # a runner from before signed requests (sessions started earlier)

    async def _post_json(self, row: SessionRow, path: str, body: dict[str, Any]) -> RunnerAnswer:
        host, port = await self._address(row)
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **self._signed(row, "POST", path, data)}
        return await self.runner.request("POST", f"http://{host}:{port}{path}", headers, data)

    async def wait_ready(self, session_id: str) -> SessionRow:
        deadline = time.monotonic() + self.ready_timeout_s
        async with self.sessions.events.subscribe() as q:
            while True:
                async with self.db.unit_of_work() as s:
                    row = await s.get(SessionRow, session_id)
                if row is None:
                    raise SessionNotFound(session_id)
                if SessionStatus(row.status).is_terminal:
                    raise KernelUnavailable(f"the session has ended ({row.status}, {row.status_info})")
                if row.kernel_port:
                    return row
                if row.type != "interactive":
                    raise InvalidAPIParameters("code execution needs an interactive session")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise KernelUnavailable("the kernel runner did not report in time; see the session's logs")
                try:
                    async with asyncio.timeout(min(remaining, 2.0)):
                        while (await q.get()).session_id != session_id:
                            pass
                except TimeoutError:
                    pass

    async def execute(self, row: SessionRow, run_id: str, code: str, mode: str = "query",
                      options: dict[str, Any] | None = None) -> dict[str, Any]:
        if mode not in ("query", "input", "continue", "batch"):
            raise InvalidAPIParameters(f"mode: {mode!r} is not one of query, input, batch")
        row = await self.wait_ready(row.id)
        body = {"run_id": run_id, "code": code, "mode": mode, "options": options or {}}
        r = await self._post_json(row, "/execute", body)   # KernelUnavailable when the runner is unreachable
        if r.status_code == 409:
            raise InvalidAPIParameters("another run is in progress in this session")
        if r.status_code != 200:
            raise KernelUnavailable(f"the kernel runner answered {r.status_code}")
        async with self.db.unit_of_work() as s:
            fresh = await s.get(SessionRow, row.id)
            if fresh is not None and code and mode == "query":
                fresh.num_queries += 1
        result: dict[str, Any] = r.json()
        return result

    async def _post(self, row: SessionRow, path: str, body: dict[str, Any]) -> dict[str, Any]:
        row = await self.wait_ready(row.id)
        r = await self._post_json(row, path, body)
        if r.status_code != 200:
            raise KernelUnavailable(f"the kernel runner answered {r.status_code}")
        result: dict[str, Any] = r.json()
        return result

    async def interrupt(self, row: SessionRow) -> bool:
        return bool((await self._post(row, "/interrupt", {}))["interrupted"])

    async def complete(self, row: SessionRow, code: str) -> list[str]:
        return list((await self._post(row, "/complete", {"code": code}))["result"])

    # ---- files in the session folder, through the kernel runner (it is the user, in the container) ----

    async def _address(self, row: SessionRow) -> tuple[str, int]:
        """Where the gateway connects to reach the session's kernel runner (directly or an SSH forward)."""
        try:
            return await self.transport.address(row.id, row.partition, row.unix_user, row.kernel_host or "",
                                                int(row.kernel_port or 0))
        except Exception as e:  # noqa: BLE001 - an SSH login refused or unreachable
            raise KernelUnavailable(f"no tunnel to the kernel runner: {type(e).__name__}: {e}") from e

    async def _request(self, row: SessionRow, method: str, target: str) -> tuple[str, dict[str, str]]:
        """The URL and signed headers of a request whose body is streamed or absent (not covered by the
        signature; method and target are)."""
        host, port = await self._address(row)
        return f"http://{host}:{port}{target}", self._signed(row, method, target, None)

    async def upload(self, row: SessionRow, rel_path: str, stream: AsyncIterator[bytes], size: int) -> str:
        row = await self.wait_ready(row.id)
        url, headers = await self._request(row, "PUT", f"/files/{quote(rel_path.lstrip('/'))}")
        r = await self.runner.request("PUT", url, {**headers, "Content-Length": str(size)}, stream,
                                      failed="upload failed")
        if r.status_code == 403:
            raise InvalidAPIParameters(f"{rel_path}: the path leaves the session folder")
        if r.status_code != 200:
            raise KernelUnavailable(f"upload of {rel_path} failed: {r.text[:200]}")
        return str(r.json()["path"])

    async def list_files(self, row: SessionRow, path: str) -> list[dict[str, Any]]:
        row = await self.wait_ready(row.id)
        url, headers = await self._request(row, "GET", "/files?" + urlencode({"path": path}))
        r = await self.runner.request("GET", url, headers)
        if r.status_code == 403:
            raise InvalidAPIParameters(f"{path}: the path leaves the session folder")
        if r.status_code == 404:
            raise ObjectNotFound(f"no such file or folder: {path}")
        if r.status_code != 200:
            raise KernelUnavailable(f"listing failed: {r.text[:200]}")
        files: list[dict[str, Any]] = r.json()["files"]
        return files

    async def check_path(self, row: SessionRow, path: str) -> SessionRow:
        """Refuse a path that leaves the folder or does not exist, before a download starts streaming."""
        await self.list_files(row, path)
        return await self.wait_ready(row.id)

    async def tar(self, row: SessionRow, path: str) -> AsyncIterator[bytes]:
        """The path as a tar stream (the kernel runner builds it as it goes; nothing is held in memory)."""
        url, headers = await self._request(row, "GET", "/download?" + urlencode({"path": path}))
        async with self.runner.stream(url, headers) as (status, chunks):
            if status != 200:
                raise KernelUnavailable(f"download of {path} failed ({status})")
            async for chunk in chunks:
                yield chunk

    async def open_pty(self, row: SessionRow, rows: int = 24, cols: int = 80) -> tuple[Any, Any]:
        """A terminal in the session: (reader, writer) of a framed connection to the kernel runner."""
        row = await self.wait_ready(row.id)
        sock = await self._runner_stream(row, "/pty", {"rows": rows, "cols": cols},
                                         "the kernel runner refused the terminal")
        return await asyncio.open_connection(sock=sock)

    async def raw(self, row: SessionRow, path: str) -> AsyncIterator[bytes]:
        """One file's bytes, streamed."""
        url, headers = await self._request(row, "GET", "/raw?" + urlencode({"path": path}))
        async with self.runner.stream(url, headers) as (status, chunks):
            if status == 400:
                raise InvalidAPIParameters(f"file: {path} is not a regular file")
            if status != 200:
                raise KernelUnavailable(f"download of {path} failed ({status})")
            async for chunk in chunks:
                yield chunk

    async def _runner_stream(self, row: SessionRow, path: str, body: dict[str, Any], refused: str) -> socket.socket:
        """POST `body` (signed) to the kernel runner and return the connection, which from the answer on
        carries a stream (a terminal, a service)."""
        host, port = await self._address(row)
        data = json.dumps(body).encode()
        return await self.runner.open_stream(host, port, path, data, self._signed(row, "POST", path, data), refused)

    async def service_socket(self, row: SessionRow, name: str, arguments: dict[str, Any] | None = None,
                             envs: dict[str, Any] | None = None) -> socket.socket:
        """A connected socket that carries bytes to and from one of the kernel's services (started on first
        use)."""
        if not row.kernel_port or SessionStatus(row.status).is_terminal:
            row = await self.wait_ready(row.id)
        port = service_ports.find(row.service_ports, name) or {}
        body = {"name": name, "arguments": arguments or {}, "envs": envs or {},
                "port": port.get("ports", [None])[0], "protocol": port.get("protocol")}
        return await self._runner_stream(row, "/service", body, f"the service {name} is not available")

    async def open_service(self, row: SessionRow, name: str, arguments: dict[str, Any] | None = None,
                           envs: dict[str, Any] | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A byte stream to one of the kernel's services (started on first use)."""
        sock = await self.service_socket(row, name, arguments, envs)
        return await asyncio.open_connection(sock=sock, limit=1 << 20)

    async def stop_service(self, row: SessionRow, name: str) -> bool:
        return bool((await self._post(row, "/service/stop", {"name": name})).get("stopped"))
