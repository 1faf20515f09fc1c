#!/usr/bin/python3
"""PrologSlurmctld / EpilogSlurmctld for the bridge gateway: tells each gateway whose job tag the job carries
that its job has started or ended, so that the gateway's shared watcher looks at Slurm now instead of at its
next poll. The notice carries only the job id and the event, signed with the gateway's notify secret; the
gateway then asks Slurm itself (squeue), so a forged or replayed notice costs one look at most.

Configuration: /etc/slurm/bridge-notify.d/*.json (readable by SlurmUser only), one per gateway:
    {"prefix": "bridge-abc123:", "url": "http://gateway:8090", "secret": "..."}
`prefix` is the gateway's slurm.job_tag_prefix, matched against the job's comment (SLURM_JOB_COMMENT, which
slurmctld gives these scripts).

It never fails the job and delays it only by Python's start: the notices go out from a child in a session of
its own, and the process slurmctld waits for returns as soon as that child is detached (a child that is merely
backgrounded by a script that exits at once is gone with it). Each notice has a short timeout, and the script
exits 0 whatever happens. Standard library only.
"""

import hashlib
import hmac
import json
import os
import sys
import time
import urllib.request

CONF_DIR = os.environ.get("BRIDGE_NOTIFY_DIR", "/etc/slurm/bridge-notify.d")
TIMEOUT_S = 1.0


def targets(comment: str) -> list[dict]:
    found = []
    try:
        names = sorted(os.listdir(CONF_DIR))
    except OSError:
        return []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(CONF_DIR, name)) as f:
                conf = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(conf, dict) and conf.get("prefix") and comment.startswith(str(conf["prefix"])):
            found.append(conf)
    return found


def signature(secret: str, job_id: str, event: str, t: int) -> str:
    return hmac.new(secret.encode(), f"{job_id}\n{event}\n{t}".encode(), hashlib.sha256).hexdigest()


def notify(conf: dict, job_id: str, event: str) -> None:
    t = int(time.time())
    body = json.dumps({"job_id": job_id, "event": event, "t": t}).encode()
    request = urllib.request.Request(
        str(conf["url"]).rstrip("/") + "/slurm/job-event", data=body, method="POST",
        headers={"Content-Type": "application/json",
                 "X-Bridge-Notify": signature(str(conf.get("secret", "")), job_id, event, t)})
    try:
        urllib.request.urlopen(request, timeout=TIMEOUT_S).close()
    except Exception:   # noqa: BLE001 - a gateway that is down polls anyway
        pass


def main() -> int:
    job_id = os.environ.get("SLURM_JOB_ID", "")
    context = os.environ.get("SLURM_SCRIPT_CONTEXT", "")
    event = "end" if "epilog" in context.lower() else "start"
    if len(sys.argv) > 1 and sys.argv[1] in ("start", "end"):
        event = sys.argv[1]
    found = targets(os.environ.get("SLURM_JOB_COMMENT", ""))
    if not job_id or not found:
        return 0
    ready_r, ready_w = os.pipe()
    if os.fork() != 0:   # the process slurmctld waits for: done once the child has its own session
        os.close(ready_w)
        os.read(ready_r, 1)
        return 0
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)   # nor does slurmctld wait for the pipes it reads the output from
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.write(ready_w, b"1")
    os.close(ready_w)
    for conf in found:
        notify(conf, job_id, event)
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except Exception:   # noqa: BLE001 - never fail a job for a notice
        code = 0
    os._exit(code)
