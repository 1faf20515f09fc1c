"""The local dev cluster (real Slurm + Apptainer in a Debian trixie root) and the `dev up` environment.

testbed.sh does the provisioning (it must run as root on a Debian 12 machine without systemd); this
package finds it, passes settings through BRIDGE_DEV_* variables, and runs it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
TESTBED = PACKAGE_DIR / "testbed.sh"


def data_dir(name: str) -> Path:
    """A top-level folder of the project (templates/, containers/), in a checkout or an installed wheel."""
    repo = PACKAGE_DIR.parent.parent / name
    return repo if repo.is_dir() else PACKAGE_DIR.parent / "_data" / name


def testbed(*args: str, root: Path | None = None, check: bool = True) -> int:
    env = dict(os.environ)
    env.setdefault("BRIDGE_DEV_CONTAINERS", str(data_dir("containers")))
    if root is not None:
        env["BRIDGE_DEV_ROOT"] = str(root)
    rc = subprocess.call(["bash", str(TESTBED), *args], env=env)
    if check and rc != 0:
        raise SystemExit(rc)
    return rc
