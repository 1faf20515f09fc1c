"""The package as a site installs it: a wheel built from the checkout carries the job-script and systemd
templates, the container definitions and the Slurm plugins, and runs from its own install, not the checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bridge

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_installs_and_runs_with_its_data(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(REPO)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((tmp_path / "dist").glob("bai_bridge-*.whl"))
    assert wheel.name.startswith(f"bai_bridge-{bridge.__version__}-")   # one version, from bridge/__init__.py
    site = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                                str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    probe = ("import bridge, bridge.package_data as p; print(bridge.__file__); "
             "print(*(p.data_dir(d) for d in ('templates', 'containers', 'slurm_plugins')), sep='\\n')")
    where = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    module, *dirs = where.stdout.split()
    assert module.startswith(str(site)), module   # the install, not the checkout
    templates, containers, plugins = map(Path, dirs)
    for path in (templates / "session.sh.j2", templates / "cluster.sh.j2", templates / "systemd/bai-bridge.service.j2",
                 containers / "python.def", plugins / "bridge_notify.py", plugins / "bridge_notify.sh"):
        assert path.is_file() and str(path).startswith(str(site)), path
    version = subprocess.run([sys.executable, "-m", "bridge", "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip() == f"bai-bridge, version {bridge.__version__}"
    units = subprocess.run([sys.executable, "-m", "bridge", "--config", str(REPO / "docs/bridge.sample.toml"),
                            "systemd-units", "--out", str(tmp_path / "units")], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert units.returncode == 0, units.stderr
    assert "Type=notify" in (tmp_path / "units/bai-bridge.service").read_text()
