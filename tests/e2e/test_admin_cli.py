"""The real backend.ai CLI (22.3.2 and 23.9.10): configuration, admin listings, mutations, refusals."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert "Traceback" not in p.stdout + p.stderr
    return p.stdout + p.stderr


def test_config_shows_the_negotiated_version_and_the_server(client):
    out = ok(client.run("alice", "config"))
    assert client.env["BACKEND_ACCESS_KEY"] in out
    assert "Server version: 22.09.0 (API: v6.20220615)" in out
    assert "Negotiated API version: (6, '2022" in out


def test_a_user_sees_only_their_own_keypair_and_user(client):
    out = ok(client.run("alice", "admin", "keypair", "info"))
    assert client.env["BACKEND_ACCESS_KEY"] in out and client.env["BOB_ACCESS_KEY"] not in out
    out = ok(client.run("alice", "admin", "keypair", "list"))
    assert client.env["BACKEND_ACCESS_KEY"] in out and client.env["BOB_ACCESS_KEY"] not in out
    out = ok(client.run("alice", "admin", "user", "info"))
    assert "alice@example.com" in out and "bob@example.com" not in out


def test_admin_listings(client):
    out = ok(client.run("admin", "admin", "user", "list"))
    assert all(e in out for e in ("alice@example.com", "bob@example.com", "admin@example.com"))
    out = ok(client.run("admin", "admin", "keypair", "list"))
    assert client.env["BACKEND_ACCESS_KEY"] in out and client.env["BOB_ACCESS_KEY"] in out
    assert "default" in ok(client.run("admin", "admin", "group", "list"))
    assert "default" in ok(client.run("admin", "admin", "domain", "list"))
    out = ok(client.run("admin", "admin", "scaling-group", "list"))
    assert "debug" in out and "gpu" in out and "slurm" in out
    assert "default" in ok(client.run("admin", "admin", "keypair-resource-policy", "list"))
    out = ok(client.run("admin", "admin", "agent", "list"))
    assert all(n in out for n in ("n1", "n2", "n3", "n4")) and "ALIVE" in out


def test_admin_mutations(client):
    tag = uuid.uuid4().hex[:6]
    email = f"u{tag}@example.com"
    out = ok(client.run("admin", "admin", "user", "add", "default", email, "pw-" + tag, "-u", "u" + tag))
    assert email in out
    out = ok(client.run("admin", "admin", "keypair", "add", email, "default"))
    assert "AKIA" in out
    assert email in ok(client.run("admin", "admin", "keypair", "list"))
    assert "p" + tag in ok(client.run("admin", "admin", "group", "add", "default", "p" + tag))
    assert "p" + tag in ok(client.run("admin", "admin", "group", "list"))
    assert "success" in ok(client.run("admin", "admin", "keypair-resource-policy", "add", "pol" + tag))
    assert "pol" + tag in ok(client.run("admin", "admin", "keypair-resource-policy", "list"))


def test_a_user_cannot_administer(client):
    p = client.run("alice", "admin", "user", "add", "default", "x" + uuid.uuid4().hex[:6] + "@e.com", "pw")
    assert "Forbidden" in p.stdout + p.stderr
    assert "x@" not in ok(client.run("admin", "admin", "user", "list"))


def test_a_wrong_secret_key_is_refused(client):
    p = client.run("alice", "admin", "keypair", "info", secret="0" * 40)
    out = p.stdout + p.stderr
    assert p.returncode != 0 or "401" in out
    assert "401" in out and ("mismatch" in out.lower() or "unauthorized" in out.lower())


def test_an_unknown_access_key_is_refused(client):
    p = client.run("alice", "admin", "keypair", "info", access="AKIA0000000000000000")
    out = p.stdout + p.stderr
    assert "401" in out and "unknown or inactive access key" in out


def sacctmgr_assoc(account: str, *more: str) -> list[str]:
    """`account|user[|more...]` of each association of the account (user empty: the account's own)."""
    import os
    import subprocess

    root = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")
    return subprocess.run(["chroot", root, "sacctmgr", "-n", "-P", "show", "assoc", f"accounts={account}",
                           "format=" + ",".join(("account", "user", *more))],
                          capture_output=True, text=True).stdout.split()


def test_bai_bridge_admin_keeps_slurm_in_step(gateway, tmp_path):
    """`bai-bridge admin group create/add-user`: with accounts.slurm_sync (the dev config) the Slurm account
    and the association follow; with it off, only the explicit flags reach Slurm."""
    from tests.e2e.conftest import _bridge

    tag = uuid.uuid4().hex[:6]
    config = gateway["BRIDGE_CONFIG"]
    for argv in (["group", "create", "sync" + tag], ["group", "add-user", "sync" + tag, "bob@example.com"]):
        done = _bridge("--config", config, "admin", *argv, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    assert f"sync{tag}|bob" in sacctmgr_assoc("sync" + tag)
    done = _bridge("--config", config, "admin", "group", "quota", "sync" + tag, '{"cpu": 4, "mem": "2g"}',
                   cwd=tmp_path)
    assert done.returncode == 0 and "GrpTRES: cpu=4,mem=2048" in done.stdout, done.stdout + done.stderr
    assert f"sync{tag}||cpu=4,mem=2G" in sacctmgr_assoc("sync" + tag, "grptres")   # sacctmgr shows 2048M as 2G
    done = _bridge("--config", config, "admin", "group", "quota", "sync" + tag, '{"tpu": 1}', cwd=tmp_path)
    assert done.returncode != 0 and "total_resource_slots.tpu" in done.stderr
    assert f"sync{tag}||cpu=4,mem=2G" in sacctmgr_assoc("sync" + tag, "grptres")   # unchanged
    off = tmp_path / "off.toml"
    off.write_text(Path(config).read_text().replace("slurm_sync = true", "slurm_sync = false"))
    done = _bridge("--config", str(off), "admin", "group", "create", "nosync" + tag, cwd=tmp_path)
    assert done.returncode == 0 and sacctmgr_assoc("nosync" + tag) == []   # the site's sacctmgr, not ours
    for argv in (["group", "create", "flag" + tag, "--create-slurm-account"],
                 ["group", "add-user", "flag" + tag, "bob@example.com", "--sync-slurm"]):
        done = _bridge("--config", str(off), "admin", *argv, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
    assert f"flag{tag}|bob" in sacctmgr_assoc("flag" + tag)


def test_a_user_is_never_mapped_to_a_system_account(client):
    """`admin user add` maps munge@… to Unix user munge (the email's local part): the cluster's passwd says
    it is a system account (uid < 1000), so the gateway refuses before anything is written."""
    p = client.run("admin", "admin", "user", "add", "default", "munge@example.com", "pw-munge")
    assert "system account" in p.stdout + p.stderr and "Traceback" not in p.stdout + p.stderr
    assert "munge@example.com" not in ok(client.run("admin", "admin", "user", "list"))


def test_bai_bridge_admin_user_create_checks_the_unix_identity(gateway, tmp_path):
    """The gateway host's `admin user create` follows the API's identity rules: no system account, no other
    user's identity; a good one gets keys and, with the Slurm sync, an association in its project."""
    from tests.e2e.conftest import _bridge

    tag = uuid.uuid4().hex[:6]
    config = gateway["BRIDGE_CONFIG"]

    def create(email: str, unix_user: str, *more: str):
        return _bridge("--config", config, "admin", "user", "create", email, "--unix-user", unix_user, *more,
                       cwd=tmp_path)

    done = create(f"m{tag}@example.com", "munge")
    assert done.returncode != 0 and "a system account" in done.stderr
    done = create(f"b{tag}@example.com", "bob")
    assert done.returncode != 0 and "already the Unix identity of bob@example.com" in done.stderr
    done = create(f"n{tag}@example.com", "n" + tag, "--group", "default")
    assert done.returncode == 0 and "access_key: AKIA" in done.stdout, done.stdout + done.stderr
    assert f"default|n{tag}" in sacctmgr_assoc("default")
