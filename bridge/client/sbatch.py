"""`#SBATCH` scripts as Backend.AI batch sessions: the directives people already write, mapped onto the
session-create request. Pure: parse a script, build the request body."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

# directives with a value; short options as sbatch spells them
_VALUE = {"-N": "nodes", "--nodes": "nodes", "-t": "time", "--time": "time", "-p": "partition",
          "--partition": "partition", "-A": "account", "--account": "account", "-J": "job-name",
          "--job-name": "job-name", "-o": "output", "--output": "output", "-c": "cpus-per-task",
          "--cpus-per-task": "cpus-per-task", "--mem": "mem", "--gres": "gres", "-G": "gpus", "--gpus": "gpus",
          "--gpus-per-node": "gpus", "--begin": "begin", "-d": "dependency", "--dependency": "dependency",
          "-n": "ntasks", "--ntasks": "ntasks", "--export": "export", "-e": "error", "--error": "error"}
_IGNORED = {"ntasks", "error", "export"}


@dataclass
class SbatchScript:
    body: str
    options: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def parse(text: str) -> SbatchScript:
    """Read `#SBATCH` lines (only before the first command, as sbatch does) and `#BAI key=value` lines."""
    script = SbatchScript(body=text)
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not stripped.startswith(("#SBATCH", "#BAI"))):
            continue
        if stripped.startswith("#BAI"):
            for item in shlex.split(stripped[4:]):
                bai_key, _, bai_value = item.partition("=")
                script.options["bai-" + bai_key.strip()] = bai_value.strip()
            continue
        if not stripped.startswith("#SBATCH"):
            break  # the first command ends the directives
        for token in _split_options(shlex.split(stripped[len("#SBATCH"):])):
            name, value = token
            key = _VALUE.get(name)
            if key is None:
                script.warnings.append(f"#SBATCH {name} is not supported; ignored")
            elif key in _IGNORED:
                script.warnings.append(f"#SBATCH {name} has no effect on a session; ignored")
            else:
                script.options[key] = value or ""
    return script


def _split_options(tokens: list[str]) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--") and "=" in tok:
            name, value = tok.split("=", 1)
        elif tok in _VALUE and i + 1 < len(tokens):
            name, value = tok, tokens[i + 1]
            i += 1
        elif re.match(r"^-[A-Za-z].+", tok) and tok[:2] in _VALUE:  # -N2, -t10
            name, value = tok[:2], tok[2:]
        else:
            name, value = tok, ""
        out.append((name, value))
        i += 1
    return out


def slurm_time_to_seconds(value: str) -> int:
    """Slurm's --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    days = 0
    if "-" in value:
        d, value = value.split("-", 1)
        days = int(d)
        parts = [int(p) for p in value.split(":")]
        h, m, s = (parts + [0, 0])[:3]
        return ((days * 24 + h) * 60 + m) * 60 + s
    parts = [int(p) for p in value.split(":")]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]


_BEGIN = re.compile(r"^now\+(\d+)\s*(seconds?|minutes?|hours?|days?|weeks?|s|m|h|d)?\Z")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def begin_to_starts_at(value: str) -> str:
    """sbatch --begin (`now+600`, `now+1hour`, `2030-01-01T10:00:00`) -> the session's starts_at."""
    m = _BEGIN.match(value.strip())
    if m:
        unit = (m.group(2) or "s")[0]
        return f"{int(m.group(1)) * _UNIT_S[unit]}s"
    return value


def _gpus(options: dict[str, str]) -> str | None:
    if "gpus" in options:
        return options["gpus"].split(":")[-1]
    gres = options.get("gres")
    if gres:
        for item in gres.split(","):
            parts = item.split(":")
            if parts[0] == "gpu":
                return parts[-1] if len(parts) > 1 and parts[-1].isdigit() else "1"
    return None


def to_session(script: SbatchScript, *, image: str | None, group: str | None, name: str | None) -> dict[str, Any]:
    """The POST /session body of a batch session that runs the script with bash."""
    o = script.options
    command = f"exec /bin/bash -c {shlex.quote(script.body)}"
    if o.get("output"):
        path = re.sub(r'([\\"$`])', r"\\\1", o["output"]).replace("%j", "${SLURM_JOB_ID}")
        command = f'{{ {command}; }} > "{path}" 2>&1'  # double quotes: only the job id expands
    resources: dict[str, str] = {}
    if o.get("cpus-per-task"):
        resources["cpu"] = o["cpus-per-task"]
    if o.get("mem"):
        resources["mem"] = o["mem"].lower() if o["mem"][-1:].isalpha() else o["mem"] + "m"  # sbatch: MB
    gpus = _gpus(o)
    if gpus:
        resources["cuda.device"] = gpus
    body: dict[str, Any] = {
        "image": image or o.get("bai-image") or "python",
        "type": "batch",
        "startupCommand": command,
        "config": {"resources": resources},
        "enqueueOnly": True,
        "clusterSize": int(o.get("nodes", "1").split("-")[0]),
    }
    if name or o.get("job-name"):
        body["name"] = name or o["job-name"]
    if group or o.get("bai-group"):
        body["group"] = group or o["bai-group"]
    if o.get("partition"):
        body["config"]["scaling_group"] = o["partition"]
    if o.get("time"):
        body["batch_timeout"] = slurm_time_to_seconds(o["time"])
    if o.get("begin"):
        body["starts_at"] = begin_to_starts_at(o["begin"])
    if o.get("dependency"):
        kind, _, refs = o["dependency"].partition(":")
        if kind != "afterok":
            raise ValueError(f"--dependency={o['dependency']}: only afterok:<session> is supported")
        body["dependencies"] = [r for r in refs.split(":") if r]
    return body
