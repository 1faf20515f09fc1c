"""`RestSlurmClient`: Slurm through slurmrestd (data_parser v0.0.40+), authenticated per Unix user with JWT.

The gateway holds Slurm's jwt_hs256 key and signs a short-lived token per user (claim `sun`), the way
`scontrol token` does, so no command runs per request. Tokens are cached until shortly before expiry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import jwt

from bridge.adapters.slurm import parse
from bridge.adapters.slurm.base import JobInfo, JobSpec, NodeInfo, PartitionInfo
from bridge.adapters.slurm.parse import unreachable_daemon
from bridge.domain.backoff import Backoff
from bridge.errors import SchedulerUnavailable, ServerMisconfigured, SlurmError, SlurmRejected

ADMIN_USER = "root"  # identity for calls made on no user's behalf (queries by the watcher, cancels)


def job_desc(spec: JobSpec, *, with_script: bool) -> dict[str, Any]:
    """One v0.0.42 job_desc_msg."""
    d: dict[str, Any] = {
        "name": spec.name,
        "minimum_nodes": spec.nodes,
        "maximum_nodes": spec.nodes,
        "tasks": spec.ntasks,
        "cpus_per_task": spec.cpus_per_task,
        "current_working_directory": spec.workdir,
        "environment": [f"{k}={v}" for k, v in spec.environment.items()] or ["PATH=/usr/local/bin:/usr/bin:/bin"],
    }
    if with_script:
        d["script"] = spec.script
    if spec.account:
        d["account"] = spec.account
    if spec.partition:
        d["partition"] = spec.partition
    if spec.mem_per_node_mb is not None:
        d["memory_per_node"] = {"set": True, "number": spec.mem_per_node_mb}
    if tres := spec.tres_per_node():
        d["tres_per_node"] = tres
    if spec.time_limit_min is not None:
        d["time_limit"] = {"set": True, "number": spec.time_limit_min}
    if spec.begin is not None:
        begin = spec.begin if spec.begin.tzinfo else spec.begin.replace(tzinfo=UTC)
        d["begin_time"] = {"set": True, "number": int(begin.timestamp())}
    if spec.dependency:
        d["dependency"] = spec.dependency
        if spec.kill_on_invalid_dependency:
            d["kill_on_invalid_dependency"] = True
    if spec.comment:
        d["comment"] = spec.comment
    d["standard_output"] = spec.stdout or f"{spec.workdir}/slurm-%j.out"
    if spec.stderr:
        d["standard_error"] = spec.stderr
    return d


def _error_text(e: dict[str, Any]) -> str:
    """slurmrestd puts the cause in `error` and the operation in `description`: show the cause first."""
    parts = [e.get("error"), e.get("description")]
    return ": ".join(str(p) for p in parts if p) or str(e)


class RestSlurmClient:
    def __init__(
        self,
        base_url: str,
        *,
        jwt_key_file: Path | None,
        api_version: str = "v0.0.42",
        jwt_lifespan_s: int = 600,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_version = api_version
        self.jwt_key_file = jwt_key_file
        self.jwt_lifespan_s = jwt_lifespan_s
        self._key: bytes | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s, transport=transport)
        self.calls = 0
        self.unchanged_reads = 0   # job listings slurmctld answered with "no change" (update_time)
        self._backoff = Backoff(30.0, clock)   # after slurmrestd refused a connection: fail fast, retry later
        self._all: list[JobInfo] | None = None   # every job as last listed for the gateway itself
        self._since = 0                          # update_time for the next listing: the last one's time - 1 s

    async def aclose(self) -> None:
        await self._http.aclose()

    def token(self, user: str) -> str:
        now = time.time()
        cached = self._tokens.get(user)
        if cached and cached[1] - now > 60:
            return cached[0]
        if self._key is None:
            if self.jwt_key_file is None:
                raise ServerMisconfigured("slurm.rest.jwt_key_file is not configured")
            try:
                self._key = Path(self.jwt_key_file).read_bytes()
            except OSError as e:
                raise ServerMisconfigured(f"cannot read the Slurm JWT key: {e}") from e
        exp = now + self.jwt_lifespan_s
        tok = jwt.encode({"iat": int(now), "exp": int(exp), "sun": user}, self._key, algorithm="HS256")
        self._tokens[user] = (tok, exp)
        return tok

    async def _request(self, method: str, path: str, *, user: str, what: str, **kw: Any) -> dict[str, Any]:
        headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": self.token(user)}
        wait = self._backoff.wait_s()
        if wait > 0:
            raise SchedulerUnavailable(f"slurmrestd is unreachable ({what}): it did not answer; next try in "
                                       f"{math.ceil(wait)} s", daemon="slurmrestd")
        self.calls += 1
        try:
            r = await self._http.request(method, path, headers=headers, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            self._backoff.failed()
            raise SchedulerUnavailable(f"slurmrestd is unreachable ({what}): {type(e).__name__}: {e}",
                                       daemon="slurmrestd") from e
        except (httpx.ReadTimeout, httpx.RemoteProtocolError) as e:   # it took the request: no backoff
            raise SchedulerUnavailable(f"slurmrestd is unreachable ({what}): {type(e).__name__}: {e}",
                                       daemon="slurmrestd") from e
        except httpx.HTTPError as e:
            raise SlurmError(f"slurmrestd failed ({what}): {type(e).__name__}: {e}") from e
        self._backoff.succeeded()
        try:
            doc: dict[str, Any] = r.json()
        except ValueError:
            raise SlurmError(f"slurmrestd {what}: HTTP {r.status_code}: {r.text[:300]}") from None
        if r.status_code >= 400 or doc.get("errors"):
            errors = doc.get("errors") or []
            text = "; ".join(_error_text(e) for e in errors) or f"HTTP {r.status_code}"
            daemon = unreachable_daemon(text)   # slurmrestd is up, but what it asks behind it is not
            if daemon:
                raise SchedulerUnavailable(f"{daemon} is unreachable ({what}): {text}", daemon=daemon,
                                           data={"slurm_errors": errors})
            cls = SlurmRejected if what == "submit" else SlurmError
            raise cls(f"{text}", data={"slurm_errors": errors})
        return doc

    async def submit(self, spec: JobSpec | Sequence[JobSpec], *, user: str) -> str:
        specs = [spec] if isinstance(spec, JobSpec) else list(spec)
        if not specs:
            raise SlurmRejected("no job component to submit")
        if len(specs) == 1:
            body: dict[str, Any] = {"job": job_desc(specs[0], with_script=True)}
        else:
            body = {"jobs": [job_desc(s, with_script=i == 0) for i, s in enumerate(specs)]}
        doc = await self._request("POST", f"/slurm/{self.api_version}/job/submit", user=user, what="submit", json=body)
        job_id = doc.get("job_id")
        if job_id is None:
            raise SlurmError("slurmrestd returned no job id")
        return str(job_id)

    async def cancel(self, job_ids: Sequence[str], *, user: str | None = None, signal: str | None = None) -> None:
        for job_id in job_ids:
            params = {"signal": signal, "flags": "FULL_JOB"} if signal else {}
            try:
                await self._request("DELETE", f"/slurm/{self.api_version}/job/{job_id}", user=user or ADMIN_USER,
                                    what="cancel", params=params)
            except SlurmError as e:
                if "Invalid job id" in e.msg or "already completing" in e.msg.lower() or "already" in e.msg:
                    continue
                raise

    async def jobs(self, job_ids: Sequence[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        if user is None:   # the gateway's own look: incremental
            wanted = set(job_ids) if job_ids is not None else None
            return [j for j in await self._all_jobs() if wanted is None or j.job_id in wanted]
        doc = await self._request("GET", f"/slurm/{self.api_version}/jobs/", user=user, what="jobs")
        return [j for j in parse.jobs_from_squeue(doc, job_ids) if j.user == user]

    async def job_states(self, job_ids: Sequence[str]) -> list[JobInfo]:
        """slurmrestd has no lighter listing than jobs(), which is incremental."""
        return await self.jobs(job_ids) if job_ids else []

    async def _all_jobs(self) -> list[JobInfo]:
        """Every job in slurmctld's memory. Asked with `update_time` once there is a listing: slurmctld then
        answers "no change" (no job serialised, none parsed) unless a job changed since, and the last
        listing stands; a change brings the whole list again. `update_time` is the last listing's own time
        minus a second, as slurmctld compares whole seconds: a change in the same second is not missed."""
        params = {"update_time": self._since} if self._all is not None else {}
        doc = await self._request("GET", f"/slurm/{self.api_version}/jobs/", user=ADMIN_USER, what="jobs",
                                  params=params)
        stamp = int((doc.get("last_update") or {}).get("number") or 0)
        if self._all is not None and not stamp and not doc.get("jobs"):   # "No job changes since update_time"
            self.unchanged_reads += 1
            return self._all
        jobs = parse.jobs_from_squeue(doc)
        self._all, self._since = jobs, max(stamp - 1, 0)
        return jobs

    async def history(self, job_ids: Sequence[str], *, user: str | None = None) -> list[JobInfo]:
        if not job_ids:
            return []
        doc = await self._request("GET", f"/slurmdb/{self.api_version}/jobs/", user=user or ADMIN_USER,
                                  what="history", params={"step": ",".join(job_ids)})
        wanted = set(job_ids)
        return [j for j in parse.jobs_from_sacct(doc) if j.job_id in wanted or j.het_job_id in wanted]

    async def partitions(self) -> list[PartitionInfo]:
        doc = await self._request("GET", f"/slurm/{self.api_version}/partitions/", user=ADMIN_USER, what="partitions")
        return parse.partitions_from_doc(doc)

    async def nodes(self) -> list[NodeInfo]:
        doc = await self._request("GET", f"/slurm/{self.api_version}/nodes/", user=ADMIN_USER, what="nodes")
        return parse.nodes_from_doc(doc)

    async def set_nodes_schedulable(self, nodes: Sequence[str], schedulable: bool, *, reason: str = "") -> None:
        body: dict[str, Any] = {"state": ["RESUME" if schedulable else "DRAIN"]}
        if not schedulable:
            body["reason"] = reason or "drained through the gateway"
        for node in nodes:
            try:
                await self._request("POST", f"/slurm/{self.api_version}/node/{node}", user=ADMIN_USER,
                                    what="node update", json=body)
            except SlurmError as e:
                if not (schedulable and "Invalid node state" in e.msg):
                    raise
