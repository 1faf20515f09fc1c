"""Pure checks of a session's creation: the request's own values (before any account, image or Slurm is
looked at), its start time, its name, and whether the folders staged for it are safe to use. No I/O."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bridge.domain import cluster
from bridge.domain.resources import SlotRequest, largest, parse_binary_size, parse_slots
from bridge.domain.session import SessionRequest, check_name
from bridge.errors import InvalidAPIParameters

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_RELATIVE = re.compile(r"^\+?(\d+)\s*([smhd])\Z")


def parse_starts_at(value: str, now: datetime) -> datetime:
    """ISO 8601 (no zone means UTC) or an offset like `10m`, `+2h`."""
    m = _RELATIVE.match(value.strip())
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now + timedelta(seconds=int(m.group(1)) * unit)
    try:
        d = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidAPIParameters(f"starts_at: {value!r} is neither ISO 8601 nor an offset like 10m") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def check_session_name(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as e:
        raise InvalidAPIParameters(f"name: {e}") from None


@dataclass(frozen=True)
class CheckedRequest:
    """A create request whose own values passed, and what the rest of the creation takes from them."""

    req: SessionRequest                   # a cluster template's: its size and main image filled in
    name: str
    environ: dict[str, str]
    slots: SlotRequest                    # each kernel's (a cluster template's: the largest of its roles')
    role_slots: dict[str, SlotRequest]    # a cluster template's roles' own; {} otherwise
    heterogeneous: bool                   # roles that differ in image or resources
    want: dict[str, str]                  # what the whole session will hold, for the quotas


def check_request(req: SessionRequest, *, default_mem: str, shards_per_gpu: int, kernel_network: str,
                  registry_image: Callable[[str], bool]) -> CheckedRequest:
    """The checks of a create request that need nothing but the request and the site's settings;
    InvalidAPIParameters names the first that fails. `registry_image`: whether an image reference is one to
    pull (docker://, oras://)."""
    name = check_session_name(req.name) if req.name else "sess-" + secrets.token_hex(4)
    if req.kind not in ("interactive", "batch"):
        raise InvalidAPIParameters("type: must be 'interactive' or 'batch'")
    if req.kind == "batch" and not (req.startup_command or "").strip():
        raise InvalidAPIParameters("startupCommand: a batch session needs a startup command")
    if req.cluster_size < 1 or req.cluster_mode not in cluster.MODES:
        raise InvalidAPIParameters("clusterSize must be at least 1 and clusterMode single-node or multi-node")
    if (req.cluster_size > 1 or len(req.roles) > 1) and req.kind == "interactive" \
            and kernel_network == "private":
        raise InvalidAPIParameters("this site keeps interactive kernels in networks of their own "
                                   "(sessions.kernel_network = private), where a cluster's kernels cannot reach "
                                   "each other: interactive cluster sessions are not available; batch ones are")
    environ = dict(req.environ or {})
    for key in environ:
        if not _ENV_KEY.match(key):
            raise InvalidAPIParameters(f"config.environ: {key!r} is not a valid variable name")
    try:
        slots = parse_slots(req.resources, default_mem=parse_binary_size(default_mem),
                            shards_per_gpu=shards_per_gpu)
    except ValueError as e:
        raise InvalidAPIParameters(str(e)) from None
    role_slots: dict[str, SlotRequest] = {}
    heterogeneous = False
    if req.roles:   # from a cluster template: the kernels are its roles' replicas
        pulled = [r.image for r in req.roles if registry_image(r.image)]
        if pulled:
            raise InvalidAPIParameters(f"cluster template: {pulled[0]} is a registry image; a cluster template's "
                                       "roles name images the site has (an admin imports registry images)")
        try:
            cluster.check_roles([(r.role, r.replicas) for r in req.roles])
            role_slots = {r.role: parse_slots(r.resources, default_mem=parse_binary_size(
                default_mem), shards_per_gpu=shards_per_gpu)
                for r in req.roles}
        except ValueError as e:
            raise InvalidAPIParameters(f"cluster template: {e}") from None
        heterogeneous = any((r.image, role_slots[r.role]) != (req.roles[0].image, role_slots["main"])
                            for r in req.roles)
        if heterogeneous and req.cluster_mode != cluster.MULTI_NODE:
            raise InvalidAPIParameters("cluster template: roles that differ in image or resources run as one "
                                       "Slurm heterogeneous job, a component per role: the mode must be "
                                       "multi-node")
        # the session's per-kernel slots (its `resources`): the largest of the roles', never less than a
        # kernel holds; the quotas count each role at its own size (`want` below)
        slots = largest(list(role_slots.values()))
        req = dataclasses.replace(req, cluster_size=sum(r.replicas for r in req.roles), image=req.roles[0].image)
    # what the whole session will hold, for the quotas
    want = cluster.slots_of([(role_slots[r.role].as_slots(), r.replicas) for r in req.roles]
                            or [(slots.as_slots(), req.cluster_size)])
    return CheckedRequest(req, name, environ, slots, role_slots, heterogeneous, want)


def check_schedule(req: SessionRequest, now: datetime) -> datetime | None:
    """When the session may start (None: at once), and its batch timeout's sign."""
    starts_at = parse_starts_at(req.starts_at, now) if req.starts_at else None
    if req.batch_timeout is not None and req.batch_timeout <= 0:
        raise InvalidAPIParameters("batch_timeout: must be a positive number of seconds")
    return starts_at


def unsafe_session_dirs(stat_lines: str, unix_user: str) -> list[str]:
    """What is wrong with a session's folders, from `stat -c '%F|%U|%a|%n'`: each must be a real directory
    (not a symlink) owned by the user, which nobody else may write to (the session's own folders: not even
    read)."""
    problems = []
    lines = [line.split("|", 3) for line in stat_lines.strip().splitlines()]
    for i, (kind, owner, mode, path) in enumerate(f for f in lines if len(f) == 4):
        closed = 0o022 if i == 0 else 0o077     # the user's folder may be readable; its sessions' are not
        if kind != "directory":
            problems.append(f"{path} is a {kind}, not a directory")
        elif owner != unix_user:
            problems.append(f"{path} belongs to {owner}, not {unix_user}")
        elif int(mode, 8) & closed:
            problems.append(f"{path} has mode {mode}: others may {'write to' if i == 0 else 'enter'} it")
    if len(lines) != 3:
        problems.append("stat gave no answer for every folder")
    return problems
