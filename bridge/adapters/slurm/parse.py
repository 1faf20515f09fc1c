"""Pure parsers for Slurm's JSON (squeue/sacct/scontrol --json and slurmrestd share the data_parser shapes).

Tolerant of both the v0.0.38 shapes (Slurm 22.05: plain numbers, state strings) and v0.0.40+ (24.11:
{set, infinite, number} structs, state lists). Tests eat recorded output in tests/data/slurm/<version>/.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from bridge.adapters.slurm.base import JobInfo, JobState, NodeInfo, PartitionInfo
from bridge.domain.jobs import JobUsage
from bridge.errors import SchedulerUnavailable, SlurmError


def num(value: Any) -> int | None:
    """A Slurm number: plain int, or {set, infinite, number}; unset or infinite is None."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def timestamp(value: Any) -> datetime | None:
    n = num(value)
    return datetime.fromtimestamp(n, UTC) if n else None


def expand_hostlist(expr: str | None) -> tuple[str, ...]:
    """'n[1-3,5],gpu01' -> ('n1','n2','n3','n5','gpu01'); zero padding is kept."""
    if not expr or expr in ("None assigned", "(null)"):
        return ()
    out: list[str] = []
    for prefix, ranges, plain in re.findall(r"([^,\[]+)\[([^\]]+)\]|([^,\[\]]+)", expr):
        if plain:
            out.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                out.append(prefix + lo)
                continue
            width = len(lo)
            out.extend(f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
    return tuple(out)


def tres_map(value: str | None) -> dict[str, str]:
    """'cpu=1,mem=500M,gres/gpu=1' -> {'cpu': '1', 'mem': '500M', 'gres/gpu': '1'}."""
    if not value:
        return {}
    return dict(item.split("=", 1) for item in value.split(",") if "=" in item)


def _exit(value: Any) -> tuple[int | None, int | None]:
    """(return code, signal) from an exit_code struct or a '3:0' string."""
    if value is None:
        return None, None
    if isinstance(value, str):
        code, _, signal = value.partition(":")
        return (int(code) if code.isdigit() else None), (int(signal) if signal.isdigit() else None)
    if isinstance(value, Mapping):
        rc = num(value.get("return_code"))
        sig = value.get("signal") or {}
        return rc, num(sig.get("id")) if isinstance(sig, Mapping) else num(sig)
    n = num(value)
    return n, None


# what the commands print when a daemon, not the request, is the problem
_UNREACHABLE = (
    ("slurmdbd", re.compile(r"Slurmdb(?:d)? query failed|persistent connection to host|slurmdbd.*(?:refused|"
                            r"unavailable|not responding)|Problem talking to the database", re.IGNORECASE)),
    ("slurmctld", re.compile(r"Unable to contact slurm controller|Socket timed out on send/recv|"
                             r"Zero Bytes were transmitted or received|slurm_load_\w+ error: .*(?:refused|timed out)",
                             re.IGNORECASE)),
)


def unreachable_daemon(stderr: str) -> str | None:
    """The daemon a command's error output blames for not answering, if any."""
    for daemon, pattern in _UNREACHABLE:
        if pattern.search(stderr):
            return daemon
    return None


def check_errors(doc: Mapping[str, Any], what: str) -> None:
    errors = [e for e in doc.get("errors") or [] if e]
    if errors:
        text = "; ".join(": ".join(str(p) for p in (e.get("error"), e.get("description")) if p) or str(e)
                         for e in errors)
        daemon = unreachable_daemon(text)
        if daemon:
            raise SchedulerUnavailable(f"{daemon} is unreachable ({what}): {text}", daemon=daemon,
                                       data={"slurm_errors": errors})
        raise SlurmError(f"{what}: {text}", data={"slurm_errors": errors})


def job_from_squeue(j: Mapping[str, Any]) -> JobInfo:
    rc, sig = _exit(j.get("exit_code"))
    het_id = num(j.get("het_job_id"))
    alloc = j.get("job_resources") or {}
    node_list = [a.get("name") for a in (alloc.get("nodes") or {}).get("allocation") or [] if a.get("name")]
    reason = j.get("state_reason")
    return JobInfo(
        job_id=str(j["job_id"]),
        name=j.get("name") or "",
        state=JobState.parse(j.get("job_state")),
        reason=None if reason in (None, "", "None") else reason,
        user=j.get("user_name") or None,
        account=j.get("account") or None,
        partition=j.get("partition") or None,
        comment=j.get("comment") or None,
        nodes=tuple(node_list) or expand_hostlist(j.get("nodes")),
        exit_code=rc,
        signal=sig,
        submit_time=timestamp(j.get("submit_time")),
        start_time=timestamp(j.get("start_time")),
        end_time=timestamp(j.get("end_time")),
        het_job_id=str(het_id) if het_id else None,
        het_job_offset=num(j.get("het_job_offset")) if het_id else None,
        tres_alloc=tres_map(j.get("tres_alloc_str")),
        stdout=j.get("standard_output") or None,
    )


def jobs_from_squeue(doc: Mapping[str, Any], job_ids: Iterable[str] | None = None) -> list[JobInfo]:
    """squeue --json / GET slurm/vX/jobs. Filters by id here too: 22.05 ignores `squeue -j`."""
    check_errors(doc, "squeue")
    wanted = set(job_ids) if job_ids is not None else None
    jobs = merged_components([job_from_squeue(j) for j in doc.get("jobs") or []])
    return [j for j in jobs if wanted is None or j.job_id in wanted]


# squeue's text format for the watcher's look: job id, id+offset (heterogeneous), state, reason, nodes, start
BRIEF_FORMAT = "%A|%i|%T|%r|%N|%S"


def jobs_from_brief(text: str, job_ids: Iterable[str] | None = None) -> list[JobInfo]:
    """`squeue -h -o BRIEF_FORMAT` with SLURM_TIME_FORMAT=%s: the state, reason, nodes and start of each job,
    what the watcher compares with its sessions; one per job (a heterogeneous job's components merged).
    Cheaper for slurmctld than --json, which serialises every field of every job; exit codes and the rest
    come from a full read."""
    wanted = set(job_ids) if job_ids is not None else None
    jobs = []
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 6 or not parts[0].isdigit():
            continue
        job_id, ident, state, reason, nodes, start = parts
        het_id, _, offset = ident.partition("+")
        started = timestamp(start) if start.isdigit() else None   # SLURM_TIME_FORMAT=%s; N/A before the start
        jobs.append(JobInfo(
            job_id=job_id, name="", state=JobState.parse(state),
            reason=None if reason in ("", "None", "(null)") else reason,
            nodes=expand_hostlist(nodes), start_time=started,
            het_job_id=het_id if offset.isdigit() else None, het_job_offset=int(offset) if offset.isdigit() else None))
    return [j for j in merged_components(jobs) if wanted is None or j.job_id in wanted]


def merged_components(jobs: list[JobInfo]) -> list[JobInfo]:
    """A heterogeneous job as one: its leader (offset 0, whose id is the job's) with the nodes of every
    component, in component order; squeue lists each component as a job of its own."""
    extra: dict[str, list[JobInfo]] = {}
    for j in jobs:
        if j.het_job_id and j.job_id != j.het_job_id:
            extra.setdefault(j.het_job_id, []).append(j)
    out = []
    for j in jobs:
        if j.het_job_id and j.job_id != j.het_job_id:
            continue
        parts = sorted(extra.get(j.job_id, []), key=lambda c: c.het_job_offset or 0)
        if parts:
            nodes = list(j.nodes)
            for part in parts:
                nodes += [n for n in part.nodes if n not in nodes]
            j = dataclasses.replace(j, nodes=tuple(nodes))
        out.append(j)
    return out


def _tres_counts(items: Any) -> dict[str, int]:
    """A TRES list ([{type, name, count}, ...]) as {"cpu": n, "mem": n, "fs/disk": n}."""
    out: dict[str, int] = {}
    for x in items or []:
        if isinstance(x, Mapping) and x.get("type"):
            count = num(x.get("count"))
            if count is not None and count >= 0:
                out[f"{x['type']}/{x['name']}" if x.get("name") else x["type"]] = count
    return out


def _cpu_us(value: Any) -> int:
    """A {seconds, microseconds} CPU time (or plain seconds) in microseconds."""
    if isinstance(value, Mapping):
        return (num(value.get("seconds")) or 0) * 1_000_000 + (num(value.get("microseconds")) or 0)
    return (num(value) or 0) * 1_000_000


def usage_from_sacct(j: Mapping[str, Any]) -> JobUsage:
    """What one accounting record says the job used, from its steps' gathered TRES usage.

    In the step records `tres.requested` holds the usage *in* (sacct TRESUsageIn*: CPU, memory, bytes read)
    and `tres.consumed` the usage *out* (TRESUsageOut*: bytes written); `time.total` is user + system CPU.
    """
    t = j.get("time") or {}
    steps = [s for s in j.get("steps") or [] if isinstance(s, Mapping)]
    # summed in microseconds, then cut to milliseconds, as sacct prints the job's TotalCPU
    cpu_us = sum(_cpu_us((s.get("time") or {}).get("total")) for s in steps) if steps else _cpu_us(t.get("total"))
    max_rss = read = written = 0
    for s in steps:
        tres = s.get("tres") or {}
        usage_in = tres.get("requested") or {}
        usage_out = tres.get("consumed") or {}
        max_rss = max(max_rss, _tres_counts(usage_in.get("max")).get("mem", 0))
        read += _tres_counts(usage_in.get("total")).get("fs/disk", 0)
        written += _tres_counts(usage_out.get("total")).get("fs/disk", 0)
    return JobUsage(elapsed_s=num(t.get("elapsed")) or 0, cpu_time_ms=cpu_us // 1000, max_rss_bytes=max_rss,
                    disk_read_bytes=read, disk_write_bytes=written)


def job_from_sacct(j: Mapping[str, Any]) -> JobInfo:
    state = j.get("state") or {}
    rc, sig = _exit(j.get("exit_code"))
    t = j.get("time") or {}
    het = j.get("het") or {}
    comment = j.get("comment")
    if isinstance(comment, Mapping):
        comment = comment.get("job")
    allocated = (j.get("tres") or {}).get("allocated") or []
    tres = {
        (f"{x['type']}/{x['name']}" if x.get("name") else x["type"]): str(x.get("count"))
        for x in allocated if isinstance(x, Mapping) and x.get("type")
    }
    reason = state.get("reason") if isinstance(state, Mapping) else None
    het_id = num(het.get("job_id")) if isinstance(het, Mapping) else None
    return JobInfo(
        job_id=str(j["job_id"]),
        name=j.get("name") or "",
        state=JobState.parse(state.get("current") if isinstance(state, Mapping) else state),
        reason=None if reason in (None, "", "None") else reason,
        user=j.get("user") or None,
        account=j.get("account") or None,
        partition=j.get("partition") or None,
        comment=comment or None,
        nodes=expand_hostlist(j.get("nodes")),
        exit_code=rc,
        signal=sig,
        submit_time=timestamp(t.get("submission")),
        start_time=timestamp(t.get("start")),
        end_time=timestamp(t.get("end")),
        het_job_id=str(het_id) if het_id else None,
        het_job_offset=num(het.get("job_offset")) if het_id else None,
        tres_alloc=tres,
        stdout=j.get("stdout_expanded") or j.get("stdout") or None,
        usage=usage_from_sacct(j),
    )


def jobs_from_sacct(doc: Mapping[str, Any]) -> list[JobInfo]:
    check_errors(doc, "sacct")
    return [job_from_sacct(j) for j in doc.get("jobs") or []]


def partitions_from_doc(doc: Mapping[str, Any]) -> list[PartitionInfo]:
    """scontrol --json show partitions / GET slurm/vX/partitions."""
    check_errors(doc, "partitions")
    out = []
    for p in doc.get("partitions") or []:
        nodes = p.get("nodes") or {}
        part_state = (p.get("partition") or {}).get("state") or ["UNKNOWN"]
        out.append(
            PartitionInfo(
                name=p["name"],
                state=part_state[0] if isinstance(part_state, list) else str(part_state),
                nodes=expand_hostlist(nodes.get("configured")),
                total_cpus=num((p.get("cpus") or {}).get("total")) or 0,
                total_nodes=num(nodes.get("total")) or 0,
                max_time_min=num((p.get("maximums") or {}).get("time")),
                tres=tres_map((p.get("tres") or {}).get("configured")),
            )
        )
    return out


def nodes_from_doc(doc: Mapping[str, Any]) -> list[NodeInfo]:
    """scontrol --json show nodes / GET slurm/vX/nodes."""
    check_errors(doc, "nodes")
    out = []
    for n in doc.get("nodes") or []:
        state = n.get("state") or []
        out.append(
            NodeInfo(
                name=n["name"],
                state=tuple(state) if isinstance(state, list) else tuple(str(state).split("+")),
                cpus=num(n.get("cpus")) or 0,
                cpus_allocated=num(n.get("alloc_cpus")) or 0,
                memory_mb=num(n.get("real_memory")) or 0,
                memory_allocated_mb=num(n.get("alloc_memory")) or 0,
                gres=n.get("gres") or "",
                gres_used=n.get("gres_used") or "",
                partitions=tuple(n.get("partitions") or ()),
                address=n.get("address") or None,
                cpu_load=(load / 100) if (load := num(n.get("cpu_load"))) is not None else None,
                free_memory_mb=num(n.get("free_mem")),
            )
        )
    return out
