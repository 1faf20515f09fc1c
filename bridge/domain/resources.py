"""Resource slots and units: Backend.AI's user strings ("2", "1g", "512m") as numbers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def parse_binary_size(value: str | int) -> int:
    """'1g' -> 1073741824, '512m' -> 536870912, '1.5G' -> 1610612736, 1024 -> 1024 (binary units)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"invalid size {value!r} (examples: 1024, 512m, 1g)")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation:
        raise ValueError(f"invalid size {value!r}") from None
    return int(number * (1024 ** _UNITS[m.group(2).lower()]))


VFOLDER_HOST_PERMISSIONS = (
    "create-vfolder", "modify-vfolder", "delete-vfolder", "mount-in-session", "upload-file", "download-file",
    "invite-others", "set-user-specific-permission",
)


def normalize_vfolder_hosts(value: object) -> dict[str, list[str]]:
    """allowed_vfolder_hosts in any shape clients send it: {host: [perms]} (JSON text or object, 23+),
    or a list / comma list of host names (22.x), which get every permission."""
    import json

    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            if text.startswith("["):  # 22.x sends str() of a Python list: "['local']"
                import ast

                try:
                    value = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    raise ValueError(f"unreadable allowed_vfolder_hosts {text!r}") from None
            else:
                value = [h.strip() for h in text.split(",") if h.strip()]
    if isinstance(value, dict):
        return {str(k): [str(p) for p in (v or [])] for k, v in value.items()}
    if isinstance(value, list | tuple):
        return {str(h): list(VFOLDER_HOST_PERMISSIONS) for h in value}
    raise ValueError("allowed_vfolder_hosts must be a mapping of host to permissions or a list of hosts")


SLOT_UNITS = {"cpu": "count", "mem": "bytes", "cuda.device": "count"}


@dataclass(frozen=True, slots=True)
class SlotRequest:
    """Per-kernel resources of a session, parsed from the user's strings."""

    cpu: int = 1
    mem_bytes: int = 1024**3
    gpus: int = 0
    shards: int = 0          # Slurm gres/shard units, from cuda.shares
    shares: str | None = None

    @property
    def mem_mib(self) -> int:
        return -(-self.mem_bytes // 1024**2)  # round up

    def as_slots(self) -> dict[str, str]:
        """Backend.AI's output form: every value a string, memory in bytes."""
        out = {"cpu": str(self.cpu), "mem": str(self.mem_bytes), "cuda.device": str(self.gpus)}
        if self.shares is not None:
            out["cuda.shares"] = self.shares
        return out


def largest(requests: list[SlotRequest]) -> SlotRequest:
    """Each slot at its largest over `requests` (a kernel size no role of a cluster exceeds)."""
    shares = [r.shares for r in requests if r.shares is not None]
    return SlotRequest(cpu=max(r.cpu for r in requests), mem_bytes=max(r.mem_bytes for r in requests),
                       gpus=max(r.gpus for r in requests), shards=max(r.shards for r in requests),
                       shares=max(shares, key=Decimal) if shares else None)


def parse_slots(resources: dict[str, object] | None, *, default_cpu: int = 1, default_mem: int = 1024**3,
                shards_per_gpu: int = 0) -> SlotRequest:
    """{"cpu": "2", "mem": "1g", "cuda.device": "1"} -> SlotRequest; ValueError names the bad slot."""
    resources = dict(resources or {})
    if "cuda.devices" in resources:  # the docs' example spells it so
        resources.setdefault("cuda.device", resources.pop("cuda.devices"))
    cpu, mem, gpus, shards, shares = default_cpu, default_mem, 0, 0, None
    for key, value in resources.items():
        if value is None:
            continue
        if key == "cpu":
            cpu = _count(key, value)
        elif key == "mem":
            try:
                mem = parse_binary_size(value if isinstance(value, int) else str(value))
            except ValueError as e:
                raise ValueError(f"resources.mem: {e}") from None
        elif key == "cuda.device":
            gpus = _count(key, value, allow_zero=True)
        elif key == "cuda.shares":
            if not shards_per_gpu:
                raise ValueError("resources.cuda.shares: fractional GPUs are not configured on this cluster "
                                 "(use cuda.device)")
            try:
                share = Decimal(str(value))
            except InvalidOperation:
                raise ValueError(f"resources.cuda.shares: {value!r} is not a number") from None
            if share <= 0:
                raise ValueError("resources.cuda.shares must be positive")
            shards = int((share * shards_per_gpu).to_integral_value(rounding=ROUND_CEILING))  # whole shards
            if shards > shards_per_gpu:   # Slurm takes a job's shards from one GPU: more would pend forever
                raise ValueError(f"resources.cuda.shares: {value} is more than one GPU (a fraction of one GPU, "
                                 "at most 1; ask for cuda.device for whole GPUs)")
            shares = str(value)
        else:
            raise ValueError(f"resources.{key}: unknown resource slot (known: {', '.join(SLOT_UNITS)})")
    if cpu < 1:
        raise ValueError("resources.cpu must be at least 1")
    if mem < 1024**2:
        raise ValueError("resources.mem must be at least 1m")
    if shards and gpus:
        raise ValueError("resources: ask for cuda.device or cuda.shares, not both")
    return SlotRequest(cpu=cpu, mem_bytes=mem, gpus=gpus, shards=shards, shares=shares)


UNLIMITED_VALUES = (None, "", "inf", "infinity", "Infinity", "-1", -1)


def quota_tres(slots: dict[str, object] | None, *, shards_per_gpu: int = 0) -> dict[str, int]:
    """A project's total_resource_slots as Slurm GrpTRES: cpu, mem (MiB), gres/gpu, and gres/shard where
    the site has shards. Every TRES the slots leave out (or call unlimited) is -1, which clears an old limit,
    so the result always states the whole quota. ValueError names a slot Slurm cannot limit."""
    tres = {"cpu": -1, "mem": -1, "gres/gpu": -1}
    if shards_per_gpu:
        tres["gres/shard"] = -1
    for key, value in (slots or {}).items():
        if value in UNLIMITED_VALUES:
            continue
        if key == "cpu":
            tres["cpu"] = _quota_count(key, value)
        elif key == "mem":
            try:
                tres["mem"] = -(-parse_binary_size(value if isinstance(value, int) else str(value)) // 1024**2)
            except ValueError as e:
                raise ValueError(f"total_resource_slots.mem: {e}") from None
        elif key in ("cuda.device", "cuda.devices"):
            tres["gres/gpu"] = _quota_count(key, value)
        elif key == "cuda.shares" and shards_per_gpu:
            try:
                share = Decimal(str(value))
            except InvalidOperation:
                raise ValueError(f"total_resource_slots.cuda.shares: {value!r} is not a number") from None
            tres["gres/shard"] = int((share * shards_per_gpu).to_integral_value(rounding=ROUND_CEILING))
        else:
            raise ValueError(f"total_resource_slots.{key}: Slurm has no limit for this slot "
                             f"(known: cpu, mem, cuda.device{', cuda.shares' if shards_per_gpu else ''})")
    return tres


def _quota_count(key: str, value: object) -> int:
    try:
        return _count(key, value, allow_zero=True)
    except ValueError as e:
        raise ValueError(str(e).replace("resources.", "total_resource_slots.", 1)) from None


def _count(key: str, value: object, allow_zero: bool = False) -> int:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"resources.{key}: {value!r} is not a number") from None
    if number != number.to_integral_value():
        raise ValueError(f"resources.{key}: {value!r} must be a whole number")
    if number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"resources.{key}: {value!r} must be positive")
    return int(number)


# ---- slot arithmetic: limits, what is in use, what remains ----------------------------------------------

INFINITE = float("inf")
Amounts = dict[str, float]
"""Resource slots as numbers ({"cpu": 2, "mem": 2147483648, "cuda.device": 1}); INFINITE is no limit."""


def amounts(slots: Mapping[str, object] | None, keys: tuple[str, ...] = tuple(SLOT_UNITS)) -> Amounts:
    """Stored or configured slots (strings, sizes like "4g", "Infinity") as numbers, one per key; a slot left
    out or unlimited is INFINITE. ValueError names a slot that is not a number."""
    out = dict.fromkeys(keys, INFINITE)
    for key, value in (slots or {}).items():
        key = "cuda.device" if key == "cuda.devices" else key
        if key not in out or value in UNLIMITED_VALUES or str(value).lower() in ("inf", "infinity"):
            continue
        try:
            out[key] = float(parse_binary_size(str(value))) if key == "mem" else float(Decimal(str(value)))
        except (ValueError, InvalidOperation):
            raise ValueError(f"{key}: {value!r} is not an amount") from None
    return out


def occupied(slots: Mapping[str, object] | None, count: int = 1) -> Amounts:
    """What a session holds: its per-kernel slots times its kernels (a slot left out holds nothing)."""
    held = amounts(slots)
    return {k: (0.0 if v == INFINITE else v * count) for k, v in held.items()}


def session_slots(slots: Mapping[str, object] | None, kernels: int) -> dict[str, str]:
    """A session's slots on the wire (occupied_slots, requestedSlots): each kernel's, times its kernels, in
    the same decimal strings ("2", "0.5") a kernel's have."""
    out: dict[str, str] = {}
    for key, value in (slots or {}).items():
        try:
            total = Decimal(str(value)) * max(kernels, 1)
        except (InvalidOperation, ValueError):
            out[key] = str(value)
            continue
        out[key] = format(total.normalize(), "f") if total else "0"
    return out


def summed_slots(*parts: Mapping[str, object]) -> dict[str, str]:
    """Slot dicts added key by key, in the same decimal strings."""
    total: dict[str, Decimal] = {}
    for part in parts:
        for key, value in part.items():
            try:
                total[key] = total.get(key, Decimal(0)) + Decimal(str(value))
            except (InvalidOperation, ValueError):
                continue
    return {k: format(v.normalize(), "f") if v else "0" for k, v in total.items()}


def added(*parts: Amounts) -> Amounts:
    out: Amounts = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0.0) + v
    return out


def remaining(limits: Amounts, using: Amounts) -> Amounts:
    """What is left under `limits` after `using` (never below zero; INFINITE stays INFINITE)."""
    return {k: (INFINITE if lim == INFINITE else max(lim - using.get(k, 0.0), 0.0)) for k, lim in limits.items()}


def smallest(*parts: Amounts) -> Amounts:
    """The tightest of several limits, slot by slot."""
    keys = {k for p in parts for k in p}
    return {k: min(p.get(k, INFINITE) for p in parts) for k in keys}


def exceeded(want: Amounts, left: Amounts) -> str | None:
    """The first slot (in a fixed order) where `want` is more than `left`, or None when it fits."""
    for key in sorted(want):
        if want[key] > left.get(key, INFINITE):
            return key
    return None


def wire_amounts(values: Amounts) -> dict[str, str]:
    """Backend.AI's output form: "Infinity" for no limit, whole numbers as strings."""
    return {k: ("Infinity" if v == INFINITE else str(int(v)) if v == int(v) else str(v)) for k, v in values.items()}


def describe(key: str, value: float) -> str:
    """A slot amount as a person reads it: "2 cuda.device", "4 GiB of mem"."""
    if value == INFINITE:
        return f"unlimited {key}"
    if key == "mem":
        return f"{value / 1024**3:g} GiB of mem"
    return f"{value:g} {key}"
