"""`CliSlurmClient`: Slurm through its commands with --json, through any CommandRunner (local or SSH)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

from bridge.adapters.runner import CommandRunner, Completed
from bridge.adapters.slurm import argv, parse
from bridge.adapters.slurm.base import JobInfo, JobSpec, NodeInfo, PartitionInfo
from bridge.adapters.slurm.parse import unreachable_daemon
from bridge.errors import SchedulerUnavailable, SlurmError, SlurmRejected

_SBATCH_ERROR = re.compile(r"error: (?:Batch job submission failed: )?(.+)")
def _failed(what: str, done: Completed) -> SlurmError:
    daemon = unreachable_daemon(done.stderr)
    detail = done.stderr.strip()[:500]
    if daemon:
        return SchedulerUnavailable(f"{daemon} is unreachable ({what}): {detail}", daemon=daemon)
    return SlurmError(f"{what} failed (rc={done.rc}): {detail}")

logger = logging.getLogger(__name__)


class CliSlurmClient:
    def __init__(self, runner: CommandRunner, *, bin_dir: str = "", timeout_s: float = 60.0) -> None:
        self.runner = runner
        self.bin_dir = bin_dir
        self.timeout_s = timeout_s
        self.calls = 0  # Slurm commands run, for the metrics endpoint and the watcher benchmark

    async def _run(self, cmd: list[str], *, user: str | None = None, stdin: str | None = None,
                   env: dict[str, str] | None = None) -> Completed:
        self.calls += 1
        return await self.runner.run(cmd, user=user, stdin=stdin, env=env, timeout_s=self.timeout_s)

    async def _json(self, cmd: list[str], *, user: str | None = None) -> dict[str, Any]:
        done = await self._run(cmd, user=user)
        if not done.ok:
            raise _failed(cmd[0].rsplit("/", 1)[-1], done)
        try:
            doc = json.loads(done.stdout)
        except json.JSONDecodeError as e:
            raise SlurmError(f"{cmd[0]} printed invalid JSON: {e}") from e
        if not isinstance(doc, dict):
            raise SlurmError(f"{cmd[0]} printed unexpected JSON")
        return doc

    async def submit(self, spec: JobSpec | Sequence[JobSpec], *, user: str) -> str:
        specs = [spec] if isinstance(spec, JobSpec) else list(spec)
        if not specs:
            raise SlurmRejected("no job component to submit")
        env = dict(specs[0].environment)
        done = await self._run(argv.sbatch(specs, self.bin_dir), user=user, stdin=specs[0].script, env=env)
        if not done.ok:
            if unreachable_daemon(done.stderr):
                raise _failed("sbatch", done)
            m = _SBATCH_ERROR.search(done.stderr)
            raise SlurmRejected(m.group(1).strip() if m else done.stderr.strip()[:500] or f"sbatch rc={done.rc}")
        job_id = done.stdout.strip().split(";")[0]
        if not job_id.isdigit():
            raise SlurmError(f"sbatch printed no job id: {done.stdout.strip()[:200]!r}")
        logger.info("sbatch as %s: job %s named %s", user, job_id, specs[0].name)   # with the request's id
        return job_id

    async def cancel(self, job_ids: Sequence[str], *, user: str | None = None, signal: str | None = None) -> None:
        if not job_ids:
            return
        done = await self._run(argv.scancel(job_ids, signal, self.bin_dir), user=user)
        logger.info("scancel%s as %s: jobs %s (rc %d)", f" -s {signal}" if signal else "", user or "the gateway",
                    ",".join(job_ids), done.rc)
        if not done.ok and "Invalid job id" not in done.stderr and "already completing" not in done.stderr:
            raise _failed("scancel", done)

    async def jobs(self, job_ids: Sequence[str] | None = None, *, user: str | None = None) -> list[JobInfo]:
        if job_ids is not None and not job_ids:
            return []
        try:
            doc = await self._json(argv.squeue(user, job_ids, self.bin_dir))
        except SlurmError as e:
            if not job_ids or "Invalid job id" not in e.msg:
                raise
            # a job left slurmctld's memory: list everything once and let the caller ask accounting
            doc = await self._json(argv.squeue(user, None, self.bin_dir))
        return parse.jobs_from_squeue(doc, job_ids)

    async def job_states(self, job_ids: Sequence[str]) -> list[JobInfo]:
        if not job_ids:
            return []
        epoch = {"SLURM_TIME_FORMAT": "%s"}   # start times as seconds since the epoch, whatever the zone
        done = await self._run(argv.squeue_brief(job_ids, parse.BRIEF_FORMAT, self.bin_dir), env=epoch)
        if not done.ok and "Invalid job id" in done.stderr:   # one left slurmctld's memory: all, then filter
            done = await self._run(argv.squeue_brief(None, parse.BRIEF_FORMAT, self.bin_dir), env=epoch)
        if not done.ok:
            raise _failed("squeue", done)
        return parse.jobs_from_brief(done.stdout, job_ids)

    async def history(self, job_ids: Sequence[str], *, user: str | None = None) -> list[JobInfo]:
        if not job_ids:
            return []
        doc = await self._json(argv.sacct(job_ids, self.bin_dir), user=user)
        wanted = set(job_ids)
        # sacct also lists het components and array tasks under their own ids: keep what was asked
        return [j for j in parse.jobs_from_sacct(doc) if j.job_id in wanted or j.het_job_id in wanted]

    async def aclose(self) -> None:
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()

    async def partitions(self) -> list[PartitionInfo]:
        return parse.partitions_from_doc(await self._json(argv.scontrol_show("partitions", self.bin_dir)))

    async def nodes(self) -> list[NodeInfo]:
        return parse.nodes_from_doc(await self._json(argv.scontrol_show("nodes", self.bin_dir)))

    async def set_nodes_schedulable(self, nodes: Sequence[str], schedulable: bool, *, reason: str = "") -> None:
        if not nodes:
            return
        done = await self._run(argv.scontrol_node_state(nodes, schedulable, reason, self.bin_dir))
        # resuming a node that is not drained is a no-op to the caller, not a failure
        if not done.ok and not (schedulable and "Invalid node state" in done.stderr):
            raise _failed("scontrol update", done)
