"""A session's submission to Slurm: its folder staged as its user (made, checked safe to use, the mount
points, dotfiles, the kernel runner and its secrets), its job script rendered, and one sbatch (one job
component per role for a heterogeneous cluster). Also where a kernel's log is."""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.adapters import jobscript
from bridge.adapters.db.tables import SessionRow
from bridge.adapters.slurm.base import JobSpec
from bridge.domain import cluster
from bridge.domain.resources import SlotRequest, parse_slots
from bridge.domain.session_checks import unsafe_session_dirs
from bridge.errors import GenericForbidden, SlurmRejected
from bridge.services import ssh_keys, user_config

if TYPE_CHECKING:
    from bridge.services.sessions import SessionService

logger = logging.getLogger(__name__)

RUNNER_PATH = Path(__file__).resolve().parent.parent / "kernel" / "runner.py"


@cache
def runner_source() -> str:
    return RUNNER_PATH.read_text()


async def submit(service: SessionService, row: SessionRow, slots: SlotRequest, dep_jobs: list[str | None],
                 policy_lifetime: int) -> str:
    parent = row.work_dir.rsplit("/", 1)[0]
    bridge_dir = f"{row.work_dir}/.bridge"
    made = await service.runner.run(["mkdir", "-p", "-m", "0700", parent, row.work_dir, bridge_dir],
                                    user=row.unix_user, timeout_s=service.settings.slurm.command_timeout_s)
    if not made.ok:
        raise SlurmRejected(f"cannot create the session folder {row.work_dir}: {made.stderr.strip()[:300]}")
    # under a shared (1777) work root, anyone can make <work root>/<user> first; `mkdir -p` then quietly
    # uses it, and whoever owns it could swap the runner that will run as this user, or read its secrets
    seen = await service.runner.run(["stat", "-c", "%F|%U|%a|%n", parent, row.work_dir, bridge_dir],
                                    user=row.unix_user, timeout_s=service.settings.slurm.command_timeout_s)
    unsafe = unsafe_session_dirs(seen.stdout, row.unix_user) if seen.ok else [f"{parent}: cannot stat it"]
    if unsafe:
        raise GenericForbidden(f"the session folder is not safe to use: {'; '.join(unsafe)}. Remove or fix "
                               f"{parent} (a folder of {row.unix_user}'s own, closed to group and others)")
    points = [f"{row.work_dir}/{target[len('/home/work/'):]}" for _, target, _ in
              (row.status_data or {}).get("binds") or [] if target.startswith("/home/work/")]
    if points:   # the folders' mount points inside the home the kernel sees
        made = await service.runner.run(["mkdir", "-p", "--", *points], user=row.unix_user,
                                        timeout_s=service.settings.slurm.command_timeout_s)
        if not made.ok:
            raise SlurmRejected(f"cannot create the folders' mount points: {made.stderr.strip()[:300]}")
    async with service.db.unit_of_work() as s:
        dotfiles = await user_config.for_session(s, row.access_key, row.group_id, row.domain_name)
    if dotfiles:   # the domain's, the project's and the user's, as the user, before the job starts
        wrote = await service.runner.run(["python3", "-c", user_config.WRITE_DOTFILES, row.work_dir],
                                         user=row.unix_user, stdin=json.dumps(dotfiles),
                                         timeout_s=service.settings.slurm.command_timeout_s)
        if not wrote.ok:
            raise SlurmRejected(f"cannot write the dotfiles into the session's home: {wrote.stderr.strip()[-300:]}")
        if wrote.stderr.strip():
            logger.warning("session %s: %s", row.id, wrote.stderr.strip()[-500:])
    files: tuple[tuple[str, str], ...] = ()
    if row.type == "interactive" and row.kernel_secret:
        # the runner and its secret travel through files the user alone can read, never through argv;
        # the key pair's SSH keys let `backend.ai ssh` in (sshd reads .bridge/authorized_keys, and the
        # clients download id_container from the home, as Backend.AI's agents lay them out)
        public, private = await ssh_keys.ensure(service.db, row.access_key)
        files = (("secret", row.kernel_secret + "\n"), ("runner.py", runner_source()),
                 ("authorized_keys", public + "\n"), ("../id_container", private))
    elif row.cluster_size > 1:   # a batch cluster: the runner serves the kernels' sshd (--cluster-sshd)
        files = (("runner.py", runner_source()),)
    if files:
        for name, content in files:
            put = await service.runner.run(["tee", f"{bridge_dir}/{name}"], user=row.unix_user, stdin=content,
                                           timeout_s=service.settings.slurm.command_timeout_s)
            if not put.ok:
                raise SlurmRejected(f"cannot write {bridge_dir}/{name}: {put.stderr.strip()[:300]}")
    roles = cluster.stored_roles(row.status_data)
    kernels = cluster.kernels(row.id, row.cluster_size, row.cluster_mode, cluster.role_plan(row.status_data))
    per_role = {r.role: r for r in roles}
    role_slots = {r.role: parse_slots(dict(r.resources), shards_per_gpu=service.settings.sessions.shards_per_gpu)
                  for r in roles}
    heterogeneous = bool((row.status_data or {}).get("heterogeneous"))
    sized = {k.rank: role_slots.get(k.role) or slots for k in kernels}
    kernel_values = [{
        "rank": k.rank, "host": k.host, "environ": cluster.environment(kernels, k),
        "image_path": per_role[k.role].image_path if k.role in per_role else row.image_path,
        "gpus": bool(sized[k.rank].gpus or sized[k.rank].shards),
    } for k in kernels]
    sub_groups: list[dict[str, Any]]
    if heterogeneous:   # one srun per role, in the job component of that role
        sub_groups = [{"het_group": i, "base": next(k.rank for k in kernels if k.role == r.role),
                       "count": r.replicas, "cpus": role_slots[r.role].cpu} for i, r in enumerate(roles) if i]
    else:
        sub_groups = [{"het_group": None, "base": 1, "count": len(kernels) - 1, "cpus": slots.cpu}] \
            if len(kernels) > 1 else []
    script = jobscript.render(
        "session.sh.j2", session_id=row.id, session_name=row.name, kind=row.type, owner=row.unix_user,
        image=row.image, image_path=row.image_path, cluster_mode=row.cluster_mode, kernels=kernel_values,
        sub_groups=sub_groups, cluster_timeout_s=service.settings.sessions.cluster_timeout_s,
        access_key=row.access_key, environ=row.environ, work_dir=row.work_dir, gpus=slots.gpus or slots.shards,
        bootstrap_script=row.bootstrap_script, startup_command=row.startup_command,
        kernel_callback=f"{service.settings.kernel_callback_base()}/kernel-callback/{row.id}",
        service_network=service.settings.sessions.service_network,
        kernel_network=service.settings.sessions.kernel_network,
        binds=(row.status_data or {}).get("binds") or [],
    )
    seconds = row.batch_timeout or policy_lifetime or 0
    deps = [j for j in dep_jobs if j]
    common: dict[str, Any] = dict(account=row.slurm_account, partition=row.partition,
                  time_limit_min=-(-seconds // 60) if seconds else None, workdir=row.work_dir)
    first: dict[str, Any] = dict(name=f"bai-{row.name}", script=script, begin=row.starts_at,
                 dependency="afterok:" + ":".join(deps) if deps else None, comment=row.job_tag,
                 stdout=log_path(row))
    if heterogeneous:   # one component per role: the GPUs, memory and CPUs of each role's kernels
        specs = [JobSpec(**(first if i == 0 else {"name": f"bai-{row.name}", "script": ""}), **common,
                         nodes=r.replicas, ntasks=r.replicas, cpus_per_task=role_slots[r.role].cpu,
                         mem_per_node_mb=role_slots[r.role].mem_mib, gpus_per_node=role_slots[r.role].gpus,
                         gres=f"shard:{role_slots[r.role].shards}" if role_slots[r.role].shards else None)
                 for i, r in enumerate(roles)]
        return await service.slurm.submit(specs, user=row.unix_user)
    # multi-node: one kernel on each node; single-node: every kernel on one node, which then holds them all
    nodes, per_node = ((len(kernels), 1) if row.cluster_mode == cluster.MULTI_NODE else (1, len(kernels)))
    spec = JobSpec(
        **first, **common, nodes=nodes, ntasks=len(kernels), cpus_per_task=slots.cpu,
        mem_per_node_mb=slots.mem_mib * per_node, gpus_per_node=slots.gpus * per_node,
        gres=f"shard:{slots.shards * per_node}" if slots.shards else None,
    )
    return await service.slurm.submit(spec, user=row.unix_user)


def log_path(row: SessionRow, kernel: cluster.Kernel | None = None) -> str:
    """main1's log is the job's output; each other kernel writes its own beside it."""
    return f"{row.work_dir}.log" if kernel is None or kernel.rank == 0 else f"{row.work_dir}.{kernel.host}.log"
