"""The job script of one fixed, representative session, byte for byte against golden/session.sh: any change
of templates/session.sh.j2 (or of what reaches it through bridge.adapters.jobscript and
bridge.domain.cluster) fails here until the golden file is rewritten and the change reviewed in its diff.

To rewrite it after an intended change:

    BRIDGE_REGENERATE_GOLDEN=1 python -m pytest tests/unit/adapters/test_jobscript_golden.py

then read `git diff tests/unit/adapters/golden/` and commit it with the template change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridge.adapters import jobscript
from bridge.domain import cluster

GOLDEN = Path(__file__).parent / "golden" / "session.sh"
SID = "0d4d3a52-6c8e-4f0a-9a43-2f6b1e0c9a17"


def representative() -> dict[str, Any]:
    """An interactive two-node cluster with GPUs: a folder mount, an environment value that needs quoting,
    a bootstrap script and a startup command, and everything that differs per session (id, user, access key,
    work dir, callback) fixed. The values are those session_submit passes."""
    kernels = cluster.kernels(SID, 2, cluster.MULTI_NODE)
    return dict(
        session_id=SID, session_name="golden-run", kind="interactive", owner="alice", image="cr.example/python:3.11",
        image_path="/srv/bridge/images/python-3.11.sif", cluster_mode=cluster.MULTI_NODE,
        kernels=[{"rank": k.rank, "host": k.host, "environ": cluster.environment(kernels, k),
                  "image_path": "/srv/bridge/images/python-3.11.sif", "gpus": True} for k in kernels],
        sub_groups=[{"het_group": None, "base": 1, "count": 1, "cpus": 4}], cluster_timeout_s=300,
        access_key="AKGOLDENTESTKEY00001", environ={"GREETING": "it's $(here)", "OMP_NUM_THREADS": "4"},
        work_dir=f"/srv/shared/bridge/alice/{SID}", gpus=1, bootstrap_script="pip install --user rich",
        startup_command="python3 -m http.server 8765", kernel_callback=f"http://gw.example:8090/kernel-callback/{SID}",
        service_network="private", kernel_network="node",
        binds=[["/srv/vfolders/alice/ab12", "/home/work/data", "rw"],
               ["/srv/vfolders/alice/cd34", "/home/work/ref", "ro"]],
    )


def test_the_rendered_job_script_is_the_golden_file():
    out = jobscript.render("session.sh.j2", **representative())
    if os.environ.get("BRIDGE_REGENERATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_bytes(out.encode())
    assert out.encode() == GOLDEN.read_bytes(), (
        "the job script changed: BRIDGE_REGENERATE_GOLDEN=1 rewrites tests/unit/adapters/golden/session.sh "
        "(review its diff)")
