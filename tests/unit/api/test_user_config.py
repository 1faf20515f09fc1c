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
