"""`bai-bridge admin preset|maintenance`: the operator's commands on the gateway host, against a real
(SQLite) database. (`admin quota check` runs against the real cluster: tests/e2e/test_quotas_resource_groups.py.)"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bridge.adapters.db import engine
from bridge.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path}/cli.db"
    engine.upgrade(url)
    monkeypatch.setenv("BRIDGE_DATABASE__URL", url)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def test_presets_are_created_checked_and_listed(cli):
    made = cli("admin", "preset", "create", "small", "--slot", "cpu=2", "--slot", "mem=4g", "--shared-memory", "64m")
    assert made.exit_code == 0 and "created" in made.output
    again = cli("admin", "preset", "create", "small", "--slot", "cpu=1")
    assert again.exit_code != 0 and "already exists" in again.output
    bad = cli("admin", "preset", "create", "odd", "--slot", "tpu=1")
    assert bad.exit_code != 0 and "tpu" in bad.output
    listed = json.loads(cli("admin", "preset", "list", "--json").output)
    assert listed == [{"name": "small", "slots": {"cpu": "2", "mem": "4g"}, "shared_memory": 64 * 1024**2}]


def test_a_freeze_and_back(cli):
    assert cli("admin", "maintenance", "status").output.strip() == "running"
    assert "frozen" in cli("admin", "maintenance", "freeze").output
    assert json.loads(cli("admin", "maintenance", "status", "--json").output) == {"status": "frozen"}
    assert "running" in cli("admin", "maintenance", "run").output
    assert cli("admin", "maintenance", "status").output.strip() == "running"
