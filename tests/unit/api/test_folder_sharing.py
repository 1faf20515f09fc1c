"""Sharing folders in process: invitations to user folders, project folders and their members, the
permission each caller gets (in the API, in mounts, and as the Unix account file operations run as), and
the ACL the gateway asks for on disk. The disk is real; the user switch and the ACL tools are the boundary
faked here (this host has neither the test's users nor `setfacl`): ACL commands are recorded and their
effect on the folder's own entry kept, which is what `getfacl -cp` reads back. The e2e tier checks the
real thing on the dev cluster."""

from __future__ import annotations

import pytest

from tests.unit.api.test_folders import AsOwner, _auth


class WithAcls(AsOwner):
    def __init__(self) -> None:
        super().__init__()
        self.acls: dict[str, dict[str, str]] = {}   # path -> user -> 'ro' | 'rw' | 'x'
        self.acl_calls: list[tuple[str | None, list[str]]] = []
        self.missing = False
        self.unknown: set[str] = set()   # accounts the login node does not have

    async def run(self, argv, *, user=None, env=None, stdin=None, timeout_s=60.0):
        if argv[0] not in ("getfacl", "setfacl"):
            return await super().run(argv, user=user, env=env, stdin=stdin, timeout_s=timeout_s)
        self.users.append(user)
        self.acl_calls.append((user, list(argv)))
        if self.missing:
            return await self.local.run(["sh", "-c", f"echo 'runuser: failed to execute {argv[0]}: No such file or "
                                                     "directory' >&2; exit 127"])
        path = argv[-1]
        entries = self.acls.setdefault(path, {})
        if argv[0] == "getfacl":
            out = "user::rwx\n" + "".join(f"user:{u}:{'rwx' if p == 'rw' else 'r-x'}\n"
                                          for u, p in entries.items() if p != "x")
            return await self.local.run(["printf", "%s", out])
        op = next(a for a in argv if a in ("-m", "-x"))
        spec = argv[argv.index(op) + 1]
        if op == "-m" and any(part.split(":")[-2] in self.unknown for part in spec.split(",")):
            return await self.local.run(["sh", "-c", "echo 'setfacl: Option -m: Invalid argument near character 3'"
                                                     " >&2; exit 2"])
        for part in spec.split(","):
            bits = part.split(":")
            if bits[0] != "u":   # default entries: what new files get, not kept here
                continue
            if op == "-x":
                entries.pop(bits[1], None)
            else:
                entries[bits[1]] = "x" if bits[2] == "x" else "rw" if "w" in bits[2] else "ro"
        return await self.local.run(["true"])


@pytest.fixture
def shares(gw, tmp_path):
    svc = gw.app.state.folders
    svc.runner = WithAcls()
    svc.config.hosts = {"local": str(tmp_path / "vfroot")}
    svc.config.default_host = "local"
    (tmp_path / "vfroot").mkdir(mode=0o777)
    return gw, svc


async def _folder(gw, who: str, name: str, **kw) -> dict:
    r = await gw.request("POST", "/folders", who, json={"name": name, **kw})
    assert r.status_code == 201, r.text
    return r.json()


async def test_invite_accept_permission_and_leave(shares, tmp_path):
    gw, svc = shares
    made = await _folder(gw, "alice", "shared1")
    path = str(tmp_path / "vfroot" / "alice" / made["id"])
    (tmp_path / "vfroot" / "alice" / made["id"] / "in.txt").write_text("data\n")
    r = await gw.request("POST", "/folders/shared1/invite", "alice", json={"perm": "rw", "user_ids": ["bob@x.org"]})
    assert r.status_code == 200 and r.json() == {"invited_ids": ["bob@x.org"]}, r.text
    again = await gw.request("POST", "/folders/shared1/invite", "alice", json={"perm": "ro", "user_ids": ["bob@x.org"]})
    assert again.json() == {"invited_ids": []}   # invited already: left as it is
    assert (await gw.request("GET", "/folders/shared1", "bob")).status_code == 404   # not before accepting
    sent = (await gw.request("GET", "/folders/invitations/list-sent", "alice")).json()["invitations"]
    got = (await gw.request("GET", "/folders/invitations/list", "bob")).json()["invitations"]
    assert [(i["inviter"], i["vfolder_name"], i["perm"], i["vfolder_id"]) for i in got] == [
        ("alice@x.org", "shared1", "rw", made["id"])] and sent == got
    inv = got[0]["id"]
    assert (await gw.request("POST", "/folders/invitations/accept", "ladmin", json={"inv_id": inv})).status_code == 404
    r = await gw.request("POST", f"/folders/invitations/update/{inv}", "bob", json={"perm": "ro"})
    assert r.status_code == 404
    assert (await gw.request("POST", f"/folders/invitations/update/{inv}", "alice",
                             json={"perm": "ro"})).status_code == 200
    assert svc.runner.acls.get(path, {}) == {}   # nothing on disk before the invitee accepts
    assert (await gw.request("POST", "/folders/invitations/accept", "bob", json={"inv_id": inv})).status_code == 200
    assert svc.runner.acls[path] == {"bob": "ro"}
    assert svc.runner.acls[str(tmp_path / "vfroot" / "alice")] == {"bob": "x"}   # to pass through, not to list
    grant = [argv for user, argv in svc.runner.acl_calls if argv[:4] == ["setfacl", "-R", "-P", "-m"]]
    assert grant == [["setfacl", "-R", "-P", "-m", "u:bob:rX,d:u:bob:rX,d:u:alice:rwX", "--", path]]   # -P: no link
    assert (await gw.request("GET", "/folders/invitations/list", "bob")).json() == {"invitations": []}

    listed = {f["name"]: f for f in (await gw.request("GET", "/folders", "bob")).json()}
    assert listed["shared1"]["is_owner"] is False and listed["shared1"]["permission"] == "ro"
    gql = await gw.gql("bob", "{ vfolder_list(limit: 20, offset: 0) { items { name permission ownership_type } } }")
    assert {"name": "shared1", "permission": "ro", "ownership_type": "user"} in gql["data"]["vfolder_list"]["items"]
    svc.runner.users.clear()
    files = (await gw.request("GET", "/folders/shared1/files?path=.", "bob")).json()["items"]
    assert [f["name"] for f in files] == ["in.txt"] and set(svc.runner.users) == {"bob"}   # as bob, not alice
    for method, url, body in [("POST", "/folders/shared1/mkdir", {"path": "x"}),
                              ("POST", "/folders/shared1/request-upload", {"path": "y", "size": 1}),
                              ("DELETE", "/folders/shared1/delete-files", {"files": ["in.txt"]}),
                              ("POST", "/folders/shared1/rename", {"new_name": "mine"}),
                              ("DELETE", "/folders/shared1", None),
                              ("POST", "/folders/shared1/invite", {"perm": "rw", "user_ids": ["ladmin@x.org"]})]:
        r = await gw.request(method, url, "bob", json=body)
        assert r.status_code == 403, (url, r.text)
    assert (tmp_path / "vfroot" / "alice" / made["id"] / "in.txt").exists()
    bob = await _auth(gw, "bob")
    assert [(m.name, m.mode) for m in await svc.mounts(bob.user_uuid, ["shared1"], None)] == [("shared1", "ro")]

    shared = (await gw.request("GET", "/folders/_/shared", "alice")).json()
    assert [(s["vfolder_name"], s["shared-to"]["email"], s["perm"]) for s in shared] == [
        ("shared1", "bob@x.org", "ro")]
    r = await gw.request("POST", "/folders/_/shared", "alice", json={"vfolder": made["id"], "user": bob.user_uuid,
                                                                    "perm": "rw"})
    assert r.status_code == 200 and svc.runner.acls[path] == {"bob": "rw"}
    assert (await gw.request("POST", "/folders/shared1/mkdir", "bob", json={"path": "x"})).status_code == 201
    assert (await gw.request("POST", "/folders/shared1/leave", "bob")).status_code == 200
    assert svc.runner.acls[path] == {} and (await gw.request("GET", "/folders/shared1", "bob")).status_code == 404
    assert (await gw.request("POST", "/folders/shared1/leave", "alice")).status_code == 400   # an owner cannot


async def test_reject_cancel_and_a_name_taken_already(shares):
    gw, _ = shares
    await _folder(gw, "alice", "same")
    await _folder(gw, "bob", "same")
    await gw.request("POST", "/folders/same/invite", "alice", json={"perm": "rw", "user_ids": ["bob@x.org"]})
    inv = (await gw.request("GET", "/folders/invitations/list", "bob")).json()["invitations"][0]["id"]
    r = await gw.request("POST", "/folders/invitations/accept", "bob", json={"inv_id": inv})
    assert r.status_code == 400 and "named same" in r.json()["msg"]
    r = await gw.request("DELETE", "/folders/invitations/delete", "bob", json={"inv_id": inv})
    assert r.status_code == 200 and (await gw.request("GET", "/folders/invitations/list", "bob")).json() == {
        "invitations": []}
    assert (await gw.request("POST", "/folders/invitations/accept", "bob", json={"inv_id": inv})).status_code == 404
    await gw.request("POST", "/folders/same/invite", "alice", json={"perm": "rw", "user_ids": ["ladmin@x.org"]})
    inv = (await gw.request("GET", "/folders/invitations/list-sent", "alice")).json()["invitations"][0]["id"]
    assert (await gw.request("DELETE", f"/folders/invitations/delete?inv_id={inv}", "bob")).status_code == 404
    assert (await gw.request("DELETE", f"/folders/invitations/delete?inv_id={inv}", "alice")).status_code == 200
    assert (await gw.request("GET", "/folders/invitations/list", "ladmin")).json() == {"invitations": []}
    for bad in [{"perm": "rwx", "user_ids": ["bob@x.org"]}, {"perm": "rw", "user_ids": []},
                {"perm": "rw", "user_ids": ["nobody@x.org"]}, {"perm": "rw", "user_ids": ["alice@x.org"]}]:
        assert (await gw.request("POST", "/folders/same/invite", "alice", json=bad)).status_code == 400, bad


async def test_project_folders_follow_the_projects_members(shares, tmp_path):
    gw, svc = shares
    r = await gw.request("POST", "/folders", "bob", json={"name": "team", "group": "default"})
    assert r.status_code == 403   # a member is not an admin of the project's domain
    made = await _folder(gw, "ladmin", "team", group="default", permission="ro")
    assert made["ownership_type"] == "group" and made["group"] is not None
    path = str(tmp_path / "vfroot" / "ladmin" / made["id"])
    assert svc.runner.acls[path] == {"alice": "ro", "bob": "ro", "sysadm": "ro"}   # every member, on disk
    listed = {f["name"]: f for f in (await gw.request("GET", "/folders", "alice")).json()}
    assert listed["team"]["type"] == "group" and listed["team"]["permission"] == "ro"
    assert listed["team"]["group_name"] == "default"
    assert (await gw.request("GET", "/folders/team", "dadmin")).status_code == 404   # another domain's admin
    r = await gw.request("POST", "/folders/team/mkdir", "alice", json={"path": "x"})
    assert r.status_code == 403
    r = await gw.request("POST", "/folders/team/share", "ladmin", json={"permission": "rw", "emails": ["alice@x.org"]})
    assert r.status_code == 201 and r.json() == {"shared_emails": ["alice@x.org"]}
    assert svc.runner.acls[path]["alice"] == "rw"
    assert (await gw.request("POST", "/folders/team/mkdir", "alice", json={"path": "x"})).status_code == 201
    assert (await gw.request("POST", "/folders/team/share", "alice",
                             json={"permission": "rw", "emails": ["bob@x.org"]})).status_code == 403
    r = await gw.request("POST", "/folders/team/share", "ladmin", json={"permission": "rw", "emails": ["dadmin@x.org"]})
    assert r.status_code == 400 and "not a member" in r.json()["msg"]
    alice = await _auth(gw, "alice")
    group_id = made["group"]
    assert [(m.name, m.mode) for m in await svc.mounts(alice.user_uuid, ["team"], None, group_id)] == [("team", "rw")]
    with pytest.raises(Exception, match="no folder 'team'"):   # only the session's own project's folders
        await svc.mounts(alice.user_uuid, ["team"], None, None)
    r = await gw.request("DELETE", "/folders/team/unshare", "ladmin", json={"emails": ["alice@x.org"]})
    assert r.json() == {"unshared_emails": ["alice@x.org"]} and svc.runner.acls[path]["alice"] == "ro"

    # alice leaves the project: the folder is gone for her, in the API and on disk
    out = await gw.gql("ladmin", "mutation($gid: UUID!, $props: ModifyGroupInput!) { modify_group(gid: $gid, "
                                 "props: $props) { ok msg } }",
                       {"gid": group_id, "props": {"user_update_mode": "remove", "user_uuids": [alice.user_uuid]}})
    assert out["data"]["modify_group"]["ok"], out
    assert "alice" not in svc.runner.acls[path]
    assert (await gw.request("GET", "/folders/team", "alice")).status_code == 404
    r = await gw.request("POST", "/folders/team/update-options", "ladmin", json={"permission": "rw"})
    assert r.status_code == 201 and svc.runner.acls[path] == {"bob": "rw", "sysadm": "rw"}


async def test_a_missing_acl_tool_is_named(shares, tmp_path):
    gw, svc = shares
    await _folder(gw, "alice", "noacl")
    svc.runner.missing = True   # as runuser answers for a program that is not there
    await gw.request("POST", "/folders/noacl/invite", "alice", json={"perm": "rw", "user_ids": ["bob@x.org"]})
    inv = (await gw.request("GET", "/folders/invitations/list", "bob")).json()["invitations"][0]["id"]
    r = await gw.request("POST", "/folders/invitations/accept", "bob", json={"inv_id": inv})
    assert r.status_code == 502 and "setfacl" in r.json()["msg"], r.text
    assert len((await gw.request("GET", "/folders/invitations/list", "bob")).json()["invitations"]) == 1
    assert (await gw.request("GET", "/folders/noacl", "bob")).status_code == 404   # not shared half-way


async def test_keypairs_list_their_owners_folders(shares):
    gw, _ = shares
    await _folder(gw, "alice", "kpf")
    out = await gw.gql("alice", "{ keypairs(email: \"alice@x.org\") { access_key vfolders { name user_email } } }")
    assert out["data"]["keypairs"][0]["vfolders"] == [{"name": "kpf", "user_email": "alice@x.org"}], out


async def test_accounts_the_login_node_does_not_know_are_left_out(shares, tmp_path):
    """A project member without a Unix account on the login node does not stop the project's folder; an
    invitee without one is told so, and the invitation stays."""
    gw, svc = shares
    svc.runner.unknown = {"bob"}
    made = await _folder(gw, "ladmin", "mixed", group="default")
    assert svc.runner.acls[str(tmp_path / "vfroot" / "ladmin" / made["id"])] == {"alice": "rw", "sysadm": "rw"}
    await _folder(gw, "alice", "forbob")
    await gw.request("POST", "/folders/forbob/invite", "alice", json={"perm": "rw", "user_ids": ["bob@x.org"]})
    inv = (await gw.request("GET", "/folders/invitations/list", "bob")).json()["invitations"][0]["id"]
    r = await gw.request("POST", "/folders/invitations/accept", "bob", json={"inv_id": inv})
    assert r.status_code == 400 and "does not exist on the login node" in r.json()["msg"], r.text
    assert len((await gw.request("GET", "/folders/invitations/list", "bob")).json()["invitations"]) == 1
