from pathlib import Path

import pytest

from bridge.config import BridgeSettings, dev_cluster_overrides, load_settings


def test_defaults_are_the_embedded_mode():
    s = BridgeSettings()
    assert s.database.url.startswith("sqlite+aiosqlite:///") and s.slurm.driver == "cli"
    assert s.slurm.cli.transport == "local" and s.auth.max_clock_skew_s == 900


def test_toml_file_then_environment_wins(tmp_path, monkeypatch):
    f = tmp_path / "c.toml"
    f.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[slurm]\ndriver = "rest"\n')
    monkeypatch.setenv("BRIDGE_SERVER__PORT", "9100")
    s = load_settings(f)
    assert s.server.port == 9100 and s.server.host == "0.0.0.0" and s.slurm.driver == "rest"


def test_unknown_keys_and_bad_values_are_refused(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[server]\nport = 70000\n")
    with pytest.raises(ValueError, match="port"):
        load_settings(f)
    f.write_text("colour = 1\n")
    with pytest.raises(ValueError, match="colour"):
        load_settings(f)


def test_production_refuses_the_dev_secret_and_unchecked_ssh():
    with pytest.raises(ValueError, match="secret is the dev default"):
        BridgeSettings(mode="production")
    with pytest.raises(ValueError, match="known_hosts"):
        BridgeSettings(mode="production", secret="x" * 32, slurm={"cli": {"transport": "ssh"}})
    assert BridgeSettings(mode="production", secret="x" * 32).mode == "production"


def test_dev_cluster_overrides_point_into_the_root():
    s = BridgeSettings(**dev_cluster_overrides(Path("/srv/r")))
    assert s.slurm.cli.prefix == ["chroot", "/srv/r"]
    assert str(s.slurm.rest.jwt_key_file).endswith("jwt_hs256.key") and s.ssh.port == 2222
