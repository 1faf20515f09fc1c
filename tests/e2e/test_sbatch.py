"""`bai-bridge sbatch`: an #SBATCH script becomes a batch session through the API, as an ordinary user."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.cluster

SCRIPT = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH -A default
#SBATCH --time=5 -c 2
#SBATCH --gres=gpu:1
echo "cpus=$SLURM_CPUS_PER_TASK gpus=$CUDA_VISIBLE_DEVICES user=$(id -un)"
exit 4
"""


def test_sbatch_script_runs_as_a_batch_session(gateway, tmp_path):
    name = f"sb-{os.getpid()}"
    script = tmp_path / "job.sh"
    script.write_text(SCRIPT.format(name=name))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "BRIDGE_"))},
           "BACKEND_ENDPOINT": gateway["BACKEND_ENDPOINT"], "BACKEND_ACCESS_KEY": gateway["BACKEND_ACCESS_KEY"],
           "BACKEND_SECRET_KEY": gateway["BACKEND_SECRET_KEY"]}
    p = subprocess.run([sys.executable, "-m", "bridge", "sbatch", "--wait", str(script)], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 4, p.stdout + p.stderr
    assert "cpus=2 gpus=0 user=alice" in p.stdout
    assert "TERMINATED self-terminated FAILURE" in p.stderr
