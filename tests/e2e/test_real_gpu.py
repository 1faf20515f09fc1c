"""A real NVIDIA GPU through the whole path: session -> Slurm gres on the dev cluster's node g1 (the host's
/dev/nvidiaN, partition "nvidia") -> `apptainer exec --nv` -> `nvidia-smi -L` inside the kernel.

Runs only where the host has a GPU that `nvidia-smi -L` lists and the dev cluster was brought up with it
(testbed.sh does that by itself: BRIDGE_DEV_NVIDIA=auto); everywhere else, CI included, it skips."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_session_rest import Api, run_query

GPU_LINE = re.compile(r"^GPU (\d+): .*\(UUID: (GPU-[0-9a-fA-F-]+|[^)]+)\)")
LIST_GPUS = ("import os, shutil, subprocess\n"
             "print('CVD=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'none'))\n"
             "smi = shutil.which('nvidia-smi')\n"
             "print(subprocess.run([smi, '-L'], capture_output=True, text=True).stdout if smi else 'no nvidia-smi')\n")


def host_gpus() -> list[str]:
    """The UUIDs of the host's GPUs, as `nvidia-smi -L` lists them; [] without a driver."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [m.group(2) for m in map(GPU_LINE.match, out.splitlines()) if m]


pytestmark = [pytest.mark.cluster, pytest.mark.gpu,
              pytest.mark.skipif(not host_gpus(), reason="no NVIDIA GPU on this host (nvidia-smi -L lists none)")]


@pytest.fixture(scope="module")
def gpus() -> list[str]:
    found = host_gpus()
    root = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")
    parts = subprocess.run(["chroot", root, "sinfo", "-h", "-o", "%P"], capture_output=True, text=True).stdout
    if "nvidia" not in parts.split():
        pytest.fail("the host has a GPU but the dev cluster has no 'nvidia' partition: "
                    "run `bai-bridge dev-cluster up` again (BRIDGE_DEV_NVIDIA=auto)")
    return found


def run_code(api: Api, resources: dict[str, str]) -> tuple[str, str]:
    """Console output of LIST_GPUS in a fresh session on the nvidia partition, and the session's gpus field."""
    r = api("POST", "/session", {"name": "gpu-" + uuid.uuid4().hex[:6], "image": "python",
                                 "config": {"scalingGroup": "nvidia", "resources": resources}})
    assert r.status_code == 201, r.text
    sid = r.json()["sessionId"]
    try:
        out = run_query(api, sid, LIST_GPUS)
        return out, api("GET", f"/session/{sid}").json()["slurm"].get("gpus") or ""
    finally:
        api("DELETE", f"/session/{sid}")


def test_the_kernel_sees_exactly_its_allocated_gpu(gpus, gateway):
    out, allocated = run_code(Api(gateway), {"cpu": "1", "cuda.device": "1"})
    seen = [m.group(2) for m in map(GPU_LINE.match, out.splitlines()) if m]
    assert len(seen) == 1, out                    # the allocated GPU, and nothing else
    assert seen[0] in gpus, (seen, gpus)          # a real one of this host's
    index = allocated.split(",")
    assert len(index) == 1 and f"CVD={index[0]}" in out.splitlines(), (allocated, out)
    assert seen[0] == gpus[int(index[0])], "the container lists another GPU than the one Slurm allocated"


def test_a_session_without_gpus_sees_none(gpus, gateway):
    out, allocated = run_code(Api(gateway), {"cpu": "1"})
    assert not allocated and "CVD=none" in out.splitlines()
    assert not [line for line in out.splitlines() if GPU_LINE.match(line)], out


def test_the_host_driver_is_what_the_container_runs(gpus):
    """The dev cluster's copy of nvidia-smi is the host's (testbed.sh nvidia_driver), not a stale one."""
    root = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))
    host = subprocess.run(["nvidia-smi", "--version"], capture_output=True, text=True).stdout
    inside = subprocess.run(["chroot", str(root), "nvidia-smi", "--version"], capture_output=True, text=True).stdout
    assert host and host == inside
