"""The local dev cluster (real Slurm + Apptainer in a Debian trixie root) and the `dev up` environment.

testbed.sh does the provisioning (it must run as root on a Debian 12 machine without systemd); this
package finds it, passes settings through BRIDGE_DEV_* variables, and runs it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bridge.package_data import data_dir

TESTBED = Path(__file__).resolve().parent / "testbed.sh"


def testbed(*args: str, root: Path | None = None, check: bool = True) -> int:
    env = dict(os.environ)
    env.setdefault("BRIDGE_DEV_CONTAINERS", str(data_dir("containers")))
    env.setdefault("BRIDGE_DEV_PLUGINS", str(data_dir("slurm_plugins")))
    if root is not None:
        env["BRIDGE_DEV_ROOT"] = str(root)
    rc = subprocess.call(["bash", str(TESTBED), *args], env=env)
    if check and rc != 0:
        raise SystemExit(rc)
    return rc
