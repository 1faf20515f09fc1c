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
    assert BridgeSettings(mode="production", secret="x" * 32,
                          server={"public_url": "https://gw.site", "apps_domain": "apps.gw.site"},
                          database={"url": "postgresql+asyncpg://gw@db/gw"},
                          images={"pull_user": "bridge-pull"}).mode == "production"


def test_production_refuses_plain_http_jobs_as_the_gateway_and_an_open_database_file(tmp_path):
    """Issue 12.10 and 12.6: production needs TLS in front (signatures do not cover bodies), a user switch,
    and a SQLite file (it holds every credential) that nobody else can read."""
    ok = {"mode": "production", "secret": "x" * 32,
          "server": {"public_url": "https://gw.site", "apps_domain": "apps.gw.site"},
          "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/db/gw.sqlite3"}, "images": {"pull_user": "pull"}}
    with pytest.raises(ValueError, match="public_url must be an https"):
        BridgeSettings(**{**ok, "server": {"public_url": "http://gw.site", "apps_domain": "apps.gw.site"}})
    with pytest.raises(ValueError, match="apps_domain is required"):   # issue 12.7: an origin per app
        BridgeSettings(**{**ok, "server": {"public_url": "https://gw.site"}})
    with pytest.raises(ValueError, match="user_switch"):
        BridgeSettings(**ok, slurm={"cli": {"user_switch": "none"}})
    folder = tmp_path / "db"
    folder.mkdir(mode=0o700)
    (folder / "gw.sqlite3").write_text("")
    (folder / "gw.sqlite3").chmod(0o644)
    with pytest.raises(ValueError, match="open to group or others"):
        BridgeSettings(**ok)
    (folder / "gw.sqlite3").chmod(0o600)
    folder.chmod(0o777)
    with pytest.raises(ValueError, match="writable by group or others"):
        BridgeSettings(**ok)
    folder.chmod(0o700)
    assert BridgeSettings(**ok).mode == "production"
    with pytest.raises(ValueError, match="images.pull_user is required"):   # issue 12.4
        BridgeSettings(**{**ok, "images": {}})


def test_a_new_sqlite_database_is_the_gateways_alone(tmp_path):
    from bridge.adapters.db.engine import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path}/state/gw.sqlite3"
    upgrade(url)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "state" / "gw.sqlite3").stat().st_mode & 0o777 == 0o600


def test_dev_cluster_overrides_point_into_the_root():
    s = BridgeSettings(**dev_cluster_overrides(Path("/srv/r")))
    assert s.slurm.cli.prefix == ["chroot", "/srv/r"]
    assert str(s.slurm.rest.jwt_key_file).endswith("jwt_hs256.key") and s.ssh.port == 2222


def test_production_wants_tls_before_the_transfer_port_and_plain_job_tag_prefixes(tmp_path):
    ok = {"mode": "production", "secret": "x" * 32, "images": {"pull_user": "pull"},
          "database": {"url": f"sqlite+aiosqlite:///{tmp_path}/none/gw.sqlite3"},
          "server": {"public_url": "https://gw.site", "apps_domain": "apps.gw.site"}}
    # the transfer port's links carry their token in the URL: TLS in front of it, in production
    with pytest.raises(ValueError, match="transfer_url must be the https"):
        BridgeSettings(**{**ok, "storage": {"transfer_port": 8091}})
    assert BridgeSettings(**{**ok, "storage": {"transfer_port": 8091,
                                               "transfer_url": "https://files.gw.site"}}).mode == "production"
    for prefix in ("x" * 49, "bad prefix:", ""):   # a signed tag must fit the column; a prefix must be plain
        with pytest.raises(ValueError):
            BridgeSettings(slurm={"job_tag_prefix": prefix})
