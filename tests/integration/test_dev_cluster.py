"""`bai-bridge dev-cluster up|status` name what is wrong: a daemon that does not serve, with the end of its
own log, and packages that drifted from the versions the cluster was tested with.

A fresh machine once failed `up` with only sacctmgr's "Connection refused", three minutes in, while the
cause (slurmdbd's fatal error against a new MariaDB) sat in a log inside the root."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_dev_env import bai_bridge

pytestmark = pytest.mark.cluster


def _sql(root: Path, statement: str) -> None:
    subprocess.run(["mariadb", "--no-defaults", f"--socket={root}/run/bridge-mariadb/mysqld.sock", "-u", "root",
                    "-e", statement], check=True, capture_output=True, timeout=30)


def _stop_slurmdbd(root: Path) -> None:
    pid = int((root / "run" / "slurmdbd.pid").read_text().splitlines()[0])
    subprocess.run(["kill", str(pid)], check=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if "Z" in Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]:
            break
        time.sleep(0.1)


def test_up_names_a_slurmdbd_that_cannot_reach_its_database_and_quotes_its_log(cluster, tmp_path):
    # slurmdbd's database password no longer matches: slurmdbd starts, then retries its database every
    # 5 s forever; `up` must not wait for it, nor blame sacctmgr
    _sql(cluster, "ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'not-the-password'")
    try:
        _stop_slurmdbd(cluster)
        t0 = time.monotonic()
        up = bai_bridge("dev-cluster", "up", cwd=tmp_path)
        took = time.monotonic() - t0
        assert up.returncode != 0
        assert "slurmdbd does not serve" in up.stderr, up.stderr
        assert "last lines of /var/log/slurm/slurmdbd.log" in up.stderr
        assert "Access denied for user 'slurm'" in up.stderr   # slurmdbd's own words, quoted
        assert took < 20, f"up took {took:.1f} s to give up"
    finally:
        _sql(cluster, "ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'")
        again = bai_bridge("dev-cluster", "up", cwd=tmp_path)
        assert again.returncode == 0, again.stderr + again.stdout
    assert "up   slurmdbd" in again.stdout


def test_status_lists_every_daemon_and_names_drift_from_the_tested_versions(cluster, tmp_path):
    versions = tmp_path / "tested-versions.txt"
    versions.write_text("root slurmctld 0.0-tested\nhost mariadb-server-core 0.0-tested\n")
    status = bai_bridge("dev-cluster", "status", cwd=tmp_path, env={"BRIDGE_DEV_VERSIONS": str(versions)})
    assert status.returncode == 0, status.stdout + status.stderr
    for daemon in ("munge", "mariadb", "slurmdbd", "slurmctld", "slurmrestd", "sshd", "slurmd n1"):
        assert f"up   {daemon}\n" in status.stdout
    drift = [line for line in status.stdout.splitlines() if line.startswith("drift: ")]
    assert any(line.startswith("drift: root slurmctld 24.") and "tested with 0.0-tested" in line for line in drift)
    assert any(line.startswith("drift: host mariadb-server-core 1:10.11.") for line in drift)
    # a package with no recorded version is drift too: nobody tested it
    assert any(line.startswith("drift: root slurmd ") and "nothing recorded" in line for line in drift)

    clean = bai_bridge("dev-cluster", "status", cwd=tmp_path)
    assert "drift: " not in clean.stdout, "the installed cluster differs from tested-versions.txt"
