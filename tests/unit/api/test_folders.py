"""Virtual folders in process: the REST and GraphQL shapes the clients read, names and paths refused before
any disk is touched, every command run as the folder's owner, other accounts kept out, and mounts reaching
the job script. The disk is real (a temporary storage host); the user switch is the boundary faked here:
commands run as the test's own user and `stat` reports the user they were meant to run as."""

from __future__ import annotations

import json
import os
import uuid
from urllib.parse import quote

import httpx
import pytest

from bridge.adapters.db.tables import ImageRow, KeypairResourcePolicyRow, SessionRow, VFolderRow
from bridge.adapters.runner import LocalRunner
from bridge.api.transfer_port import TransferPort
from tests.unit.api.conftest import HOST


class AsOwner:
    def __init__(self) -> None:
        self.local = LocalRunner(user_switch="none")
        self.users: list[str | None] = []

    async def run(self, argv, *, user=None, env=None, stdin=None, timeout_s=60.0):
        if argv[0] != "df":   # how full a host's file system is: no user's files read, the gateway's own look
            self.users.append(user)
        done = await self.local.run(argv, env=env, stdin=stdin, timeout_s=timeout_s)
        if argv[0] == "stat" and done.ok and user and "%U" in argv[2]:
            kind, _, mode, path = done.stdout.strip().split("|", 3)
            return type(done)(done.argv, done.rc, f"{kind}|{user}|{mode}|{path}\n", done.stderr, done.duration_s)
        return done

    async def feed(self, argv, chunks, *, user=None, timeout_s=3600.0):
        self.users.append(user)
        return await self.local.feed(argv, chunks, timeout_s=timeout_s)

    def drain(self, argv, *, user=None):
        self.users.append(user)
        return self.local.drain(argv)

    async def receive_fd(self, argv, *, user=None, timeout_s=60.0):
        self.users.append(user)
        return await self.local.receive_fd(argv, timeout_s=timeout_s)


@pytest.fixture
def folders(gw, tmp_path):
    svc = gw.app.state.folders
    svc.runner = AsOwner()
    svc.config.hosts = {"local": str(tmp_path / "vfroot"), "fast": str(tmp_path / "fast")}
    (tmp_path / "vfroot").mkdir(mode=0o777)
    (tmp_path / "fast").mkdir(mode=0o777)
    return gw, svc


@pytest.fixture(params=["api", "port"])
async def transfers(request, folders):
    """Where transfer links point and a client for them: the API's own routes, or the transfer port."""
    gw, svc = folders
    if request.param == "api":
        yield gw.http, f"http://{HOST}"
        return
    port = TransferPort(svc, "127.0.0.1", 0)
    await port.start()
    gw.app.state.transfer_port = port
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port.port}", timeout=30) as http:
            yield http, f"http://{HOST}:{port.port}"   # the host the client named to the API
    finally:
        await port.aclose()


async def test_create_list_info_files_mkdir_delete(folders, tmp_path):
    gw, svc = folders
    hosts = (await gw.request("GET", "/folders/_/hosts", "alice")).json()
    assert {k: hosts[k] for k in ("default", "allowed")} == {"default": "local", "allowed": ["fast", "local"]}
    # each host's file system, as df sees it (the WebUI shows how full it is)
    assert set(hosts["volume_info"]) == {"fast", "local"}
    assert 0 <= hosts["volume_info"]["local"]["usage"]["percentage"] <= 100
    r = await gw.request("POST", "/folders", "alice", json={
        "name": "data1", "host": None, "unmanaged_path": None, "group": None, "usage_mode": "general",
        "permission": "rw", "quota": "0", "cloneable": False})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "data1" and created["host"] == "local" and len(created["id"]) == 32
    on_disk = tmp_path / "vfroot" / "alice" / created["id"]
    assert on_disk.is_dir() and oct(on_disk.stat().st_mode & 0o777) == "0o700"
    listed = await gw.gql("alice", "query($limit:Int!, $offset:Int!) { vfolder_list(limit:$limit, offset:$offset) "
                                   "{ items { host name created_at creator group permission ownership_type status } "
                                   "total_count } }", {"limit": 20, "offset": 0})
    items = listed["data"]["vfolder_list"]["items"]
    assert [(i["name"], i["host"], i["permission"], i["ownership_type"], i["creator"]) for i in items] == [
        ("data1", "local", "rw", "user", "alice@x.org")]
    assert (await gw.request("POST", "/folders/data1/mkdir", "alice", json={"path": "sub"})).status_code == 201
    (on_disk / "sub" / "result.txt").write_text("42\n")
    (on_disk / "weird\nname").write_text("x")
    info = (await gw.request("GET", "/folders/data1", "alice")).json()
    assert info["numFiles"] == 2 and info["is_owner"] and info["id"] == created["id"]
    r = await gw.http.request("GET", "/folders/data1/files", content=json.dumps({"path": "sub"}),
                              headers=gw.headers("GET", "/folders/data1/files", "alice"))
    files = json.loads(r.json()["files"])   # 22.x and 23.x: a JSON string
    assert [(f["filename"], f["size"]) for f in files] == [("result.txt", 3)]
    top = (await gw.request("GET", f"/folders/{created['id']}/files?path=.", "alice")).json()["items"]   # 26.x
    assert sorted(i["name"] for i in top) == ["sub", "weird\nname"]
    assert (await gw.request("GET", "/folders/_/id?name=data1", "alice")).json()["id"] == created["id"]
    assert set(svc.runner.users) == {"alice"}   # every command as the owner
    assert (await gw.request("DELETE", "/folders/data1", "alice")).status_code == 204
    assert not on_disk.exists()
    assert (await gw.request("GET", "/folders/data1", "alice")).json()["type"].endswith("/vfolder-not-found")


@pytest.mark.parametrize("name", ["..", ".", "a/b", "x\ny", "", "a" * 65, "da ta", "../up"])
async def test_bad_names_are_refused_and_make_nothing(folders, tmp_path, name):
    gw, _ = folders
    r = await gw.request("POST", "/folders", "alice", json={"name": name})
    assert r.status_code == 400 and r.json()["type"].endswith("/invalid-api-params"), r.text
    assert not (tmp_path / "vfroot" / "alice").exists()


@pytest.mark.parametrize("path", ["../x", "/etc", "a/../../x", "a\nb", "a\0b", "sub/../.."])
async def test_paths_that_leave_the_folder_are_refused(folders, tmp_path, path):
    gw, _ = folders
    assert (await gw.request("POST", "/folders", "alice", json={"name": "box"})).status_code == 201
    for method, url, body in (("POST", "/folders/box/mkdir", {"path": path}),
                              ("GET", f"/folders/box/files?path={quote(path)}", None)):
        r = await gw.request(method, url, "alice", json=body)
        assert r.status_code == 400, (method, path, r.text)
    assert sorted(p.name for p in (tmp_path / "vfroot").iterdir()) == ["alice"]


async def test_duplicates_hosts_and_the_folder_count_limit(folders):
    gw, _ = folders
    assert (await gw.request("POST", "/folders", "alice", json={"name": "one"})).status_code == 201
    dup = await gw.request("POST", "/folders", "alice", json={"name": "one", "host": "fast"})
    assert dup.status_code == 400 and dup.json()["type"].endswith("/vfolder-already-exists")
    assert (await gw.request("POST", "/folders", "bob", json={"name": "one"})).status_code == 201   # bob's own
    nohost = await gw.request("POST", "/folders", "alice", json={"name": "two", "host": "nfs9"})
    assert nohost.status_code == 400 and "nfs9" in nohost.json()["msg"]
    async with gw.app.state.db.unit_of_work() as s:
        (await s.get(KeypairResourcePolicyRow, "default")).max_vfolder_count = 2
    assert (await gw.request("POST", "/folders", "alice", json={"name": "two", "host": "fast"})).status_code == 201
    third = await gw.request("POST", "/folders", "alice", json={"name": "three"})
    assert third.status_code == 412 and "2 folders" in third.json()["msg"]


async def test_a_pre_made_home_of_someone_else_is_refused(folders, tmp_path):
    """Under a 1777 root, bob makes /vfroot/alice first: alice's folders would be his to reach into."""
    gw, svc = folders
    home = tmp_path / "vfroot" / "alice"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    r = await gw.request("POST", "/folders", "alice", json={"name": "secret"})
    assert r.status_code == 403 and "others may write to it" in r.json()["msg"]
    async with gw.app.state.db.unit_of_work() as s:
        assert (await s.get(VFolderRow, "x")) is None
    assert list(home.iterdir()) == []


async def test_other_accounts_do_not_find_a_folder(folders):
    gw, _ = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "mine"})).json()["id"]
    for who, status in (("bob", 404), ("dadmin", 404), ("ladmin", 200), ("root", 200), ("alice", 200)):
        r = await gw.request("GET", f"/folders/{fid}", who)
        assert r.status_code == status, (who, r.text)
        if status == 404:
            assert (await gw.request("DELETE", f"/folders/{fid}", who)).status_code == 404
            assert (await gw.request("GET", f"/folders/{fid}/files", who)).status_code == 404
            assert (await gw.request("POST", f"/folders/{fid}/mkdir", who, json={"path": "x"})).status_code == 404
    assert (await gw.request("GET", "/folders/mine", "bob")).status_code == 404   # by name: bob's own only
    theirs = await gw.gql("bob", "query($a: String) { vfolder_list(limit: 5, offset: 0, access_key: $a) "
                                 "{ total_count } }", {"a": gw.keys["alice"].access})
    assert theirs["errors"] and "Forbidden" in theirs["errors"][0]["message"]


async def test_mounts_reach_the_job_and_a_folder_not_ones_own_is_refused(folders, gw_no_submit):
    gw, svc = folders
    for name in ("data", ".dotfiles"):
        assert (await gw.request("POST", "/folders", "alice", json={"name": name})).status_code == 201
    assert (await gw.request("POST", "/folders", "bob", json={"name": "bobs"})).status_code == 201
    async with gw.app.state.db.unit_of_work() as s:
        s.add(ImageRow(name="python", path="/srv/images/python", labels={}, aliases=[]))
    r = await gw.request("POST", "/session", "alice", json={
        "name": "mnt-refused", "image": "python", "enqueueOnly": True, "config": {"mounts": ["data", "bobs"]}})
    assert r.status_code == 404 and "bobs" in r.json()["msg"], r.text
    async with gw.app.state.db.unit_of_work() as s:
        from sqlalchemy import select

        assert not list((await s.execute(select(SessionRow).where(SessionRow.name == "mnt-refused"))).scalars())
    rows = {a.row.name: a.row for a in await svc.visible(await _auth(gw, "alice"))}
    mounts = await svc.mounts(rows["data"].user_uuid, ["data"], {"data": "inputs"})
    assert [(m.name, m.source, m.target, m.mode) for m in mounts] == [
        ("data", rows["data"].path, "/home/work/inputs", "rw"),
        (".dotfiles", rows[".dotfiles"].path, "/home/work/.dotfiles", "rw")]   # dot-folders come along
    with pytest.raises(Exception, match="not a place to mount"):
        await svc.mounts(rows["data"].user_uuid, ["data"], {"data": "/home/work"})


async def _auth(gw, who: str):
    from bridge.api.authn import load_keypair

    async with gw.app.state.db.unit_of_work() as s:
        return (await load_keypair(s, gw.keys[who].access))[0]


async def test_upload_with_tus_and_download_with_ranges(folders, transfers, tmp_path):
    """client-compat.md §5.15: PATCHes from offset 0 answered 204 with Upload-Offset; downloads with a
    Content-Length, resumed with Range: bytes=N-. Links carry a token and no signature. The same through the
    API's own routes and through the transfer port (bridge.api.transfer_port), where the links then point."""
    gw, svc = folders
    http, base = transfers
    assert (await gw.request("POST", "/folders", "alice", json={"name": "xfer"})).status_code == 201
    r = await gw.request("POST", "/folders/xfer/request-upload", "alice", json={"path": "big.bin", "size": 10})
    assert r.status_code == 200, r.text
    token, url = r.json()["token"], r.json()["url"]
    assert url == base + "/folders/_/transfer/upload"
    path = "/folders/_/transfer/upload?token=" + token
    tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    first = await http.patch(path, content=b"0123", headers={**tus, "Upload-Offset": "0"})
    assert first.status_code == 204 and first.headers["upload-offset"] == "4", first.text
    fid = (await gw.request("GET", "/folders/_/id?name=xfer", "alice")).json()["id"]
    assert not (tmp_path / "vfroot" / "alice" / fid / "big.bin").exists()   # in place only once complete
    ahead = await http.patch(path, content=b"01234", headers={**tus, "Upload-Offset": "5"})   # past where it ends
    assert ahead.status_code == 409 and ahead.json()["data"] == {"offset": 4}
    again = await http.patch(path, content=b"01", headers={**tus, "Upload-Offset": "0"})   # a client started again
    assert again.status_code == 204 and again.headers["upload-offset"] == "4"   # the same bytes: on to where it was
    head = await http.head(path)
    assert head.headers["upload-offset"] == "4" and head.headers["upload-length"] == "10"
    over = await http.patch(path, content=b"456789xyz", headers={**tus, "Upload-Offset": "4"})
    assert over.status_code == 400 and "10 bytes announced" in over.json()["msg"]
    rest = await http.patch(path, content=b"456789", headers={**tus, "Upload-Offset": "4"})
    assert rest.status_code == 204 and rest.headers["upload-offset"] == "10"
    assert (tmp_path / "vfroot" / "alice" / fid / "big.bin").read_bytes() == b"0123456789"

    empty = await gw.request("POST", "/folders/xfer/request-upload", "alice", json={"path": "empty", "size": 0})
    assert empty.status_code == 200 and (tmp_path / "vfroot" / "alice" / fid / "empty").read_bytes() == b""

    d = (await gw.request("POST", "/folders/xfer/request-download", "alice", json={"path": "big.bin"})).json()
    whole = await http.get("/folders/_/transfer/download?token=" + d["token"])
    assert whole.status_code == 200 and whole.content == b"0123456789" and whole.headers["content-length"] == "10"
    part = await http.get("/folders/_/transfer/download?token=" + d["token"], headers={"Range": "bytes=6-"})
    assert part.status_code == 206 and part.content == b"6789" and part.headers["content-range"] == "bytes 6-9/10"
    past = await http.get("/folders/_/transfer/download?token=" + d["token"], headers={"Range": "bytes=10-"})
    assert past.status_code == 416 and past.headers["content-range"] == "bytes */10"
    assert (await http.get("/folders/_/transfer/download?token=é.é")).status_code == 401
    # a second upload of the file that stops half-way leaves the first one as it was
    again = (await gw.request("POST", "/folders/xfer/request-upload", "alice",
                              json={"path": "big.bin", "size": 10})).json()
    half = await http.patch("/folders/_/transfer/upload?token=" + again["token"], content=b"ab",
                               headers={**tus, "Upload-Offset": "0"})
    assert half.status_code == 204
    assert (tmp_path / "vfroot" / "alice" / fid / "big.bin").read_bytes() == b"0123456789"
    # tokens are for one thing: not forged, not the other direction, not a folder
    assert (await http.get("/folders/_/transfer/download?token=" + token)).status_code == 401
    assert (await http.get("/folders/_/transfer/download?token=x.y")).status_code == 401
    assert (await http.patch("/folders/_/transfer/upload?token=" + d["token"], content=b"x",
                                headers={**tus, "Upload-Offset": "10"})).status_code == 401
    folder_link = (await gw.request("POST", "/folders/xfer/request-download", "alice", json={"path": "."})).json()
    assert (await http.get("/folders/_/transfer/download?token=" + folder_link["token"])).status_code == 400
    (tmp_path / "vfroot" / "alice" / fid / "sub").mkdir()
    onto = await gw.request("POST", "/folders/xfer/request-upload", "alice", json={"path": "sub", "size": 1})
    assert onto.status_code == 400 and "sub is a folder" in onto.json()["msg"], onto.text
    for bad in ("../x", "/etc/passwd"):
        up = await gw.request("POST", "/folders/xfer/request-upload", "alice", json={"path": bad, "size": 1})
        down = await gw.request("POST", "/folders/xfer/request-download", "alice", json={"path": bad})
        assert up.status_code == down.status_code == 400
    stranger = await gw.request("POST", f"/folders/{fid}/request-download", "bob", json={"path": "big.bin"})
    assert stranger.status_code == 404
    assert set(svc.runner.users) == {"alice"}


async def test_rename_move_and_delete_files_as_the_owner(folders, tmp_path):
    gw, svc = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "work"})).json()["id"]
    root = tmp_path / "vfroot" / "alice" / fid
    (root / "a.txt").write_text("a")
    (root / "dir").mkdir()
    (root / "dir" / "inner.txt").write_text("i")
    assert (await gw.request("POST", "/folders/work/rename-file", "alice",
                             json={"target_path": "a.txt", "new_name": "b.txt"})).status_code == 200
    assert (root / "b.txt").exists() and not (root / "a.txt").exists()
    assert (await gw.request("POST", "/folders/work/move-file", "alice",
                             json={"src": "b.txt", "dst": "dir"})).status_code == 200   # into a folder
    assert (root / "dir" / "b.txt").read_text() == "a"
    assert (await gw.request("POST", "/folders/work/move-file", "alice",
                             json={"src": "dir/b.txt", "dst": "c.txt"})).status_code == 200   # to a name
    clash = await gw.request("POST", "/folders/work/move-file", "alice", json={"src": "c.txt", "dst": "dir/inner.txt"})
    assert clash.status_code == 400 and "exists already" in clash.json()["msg"]
    for body in ({"target_path": "c.txt", "new_name": "../escape"}, {"target_path": "../x", "new_name": "y"},
                 {"target_path": ".", "new_name": "y"}):
        assert (await gw.request("POST", "/folders/work/rename-file", "alice", json=body)).status_code == 400
    assert (await gw.request("POST", "/folders/work/move-file", "alice",
                             json={"src": "c.txt", "dst": "../../c.txt"})).status_code == 400
    no_r = await gw.request("DELETE", "/folders/work/delete-files", "alice", json={"files": ["dir"]})
    assert no_r.status_code == 400 and (root / "dir").exists()   # a folder needs recursive
    assert (await gw.request("DELETE", "/folders/work/delete-files", "alice",
                             json={"files": ["dir", "c.txt"], "recursive": True})).status_code == 200
    assert list(root.iterdir()) == []
    assert (await gw.request("DELETE", "/folders/work/delete-files", "alice",
                             json={"files": ["."], "recursive": True})).status_code == 400
    assert (await gw.request("POST", "/folders/work/rename", "alice", json={"new_name": "done"})).status_code == 201
    assert (await gw.request("GET", "/folders/done", "alice")).json()["id"] == fid and root.exists()
    assert (await gw.request("POST", "/folders/done/update-options", "alice",
                             json={"cloneable": True})).status_code == 201
    assert (await gw.request("GET", "/folders/done", "alice")).json()["cloneable"] is True
    assert (await gw.request("POST", f"/folders/{fid}/rename", "bob", json={"new_name": "mine"})).status_code == 404
    assert set(svc.runner.users) == {"alice"}


async def test_usage_and_an_upload_past_the_size_limit(folders, tmp_path):
    gw, _ = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "quota"})).json()["id"]
    root = tmp_path / "vfroot" / "alice" / fid
    (root / "ten.bin").write_bytes(b"x" * 10)
    use = (await gw.request("GET", f"/folders/_/usage?folder_host=local&id={fid}", "alice")).json()
    assert use["file_count"] == 1 and use["used_bytes"] >= 10
    async with gw.app.state.db.unit_of_work() as s:
        (await s.get(KeypairResourcePolicyRow, "default")).max_vfolder_size = use["used_bytes"] + 5
    q = (await gw.request("GET", f"/folders/_/quota?folder_host=local&id={fid}", "alice")).json()
    assert q == {"used_bytes": use["used_bytes"], "limit_bytes": use["used_bytes"] + 5}
    over = await gw.request("POST", "/folders/quota/request-upload", "alice", json={"path": "more.bin", "size": 6})
    assert over.status_code == 412 and "max_vfolder_size" in over.json()["msg"]
    assert not (root / "more.bin").exists()   # refused before a byte: no partial file
    fits = await gw.request("POST", "/folders/quota/request-upload", "alice", json={"path": "more.bin", "size": 5})
    assert fits.status_code == 200
    # that upload has written nothing yet, but its 5 bytes are reserved: a second one at once does not fit
    other = await gw.request("POST", "/folders/quota/request-upload", "alice", json={"path": "other.bin", "size": 5})
    assert other.status_code == 412 and "announce 5" in other.json()["msg"], other.text
    again = await gw.request("POST", "/folders/quota/request-upload", "alice", json={"path": "more.bin", "size": 5})
    assert again.status_code == 200   # the same upload asked for again: reserved already
    assert (await gw.request("GET", f"/folders/_/used-bytes?folder_host=local&id={fid}", "bob")).status_code == 404


async def test_two_creates_of_one_name_at_once_make_one_folder(folders, tmp_path):
    import asyncio

    gw, _ = folders
    answers = await asyncio.gather(*(gw.request("POST", "/folders", "alice", json={"name": "twin"}) for _ in range(4)))
    assert sorted(r.status_code for r in answers) == [201, 400, 400, 400], [r.text for r in answers]
    assert len(list((tmp_path / "vfroot" / "alice").iterdir())) == 1   # the losers' directories are gone


@pytest.mark.parametrize("name", [".bridge", "0123456789abcdef0123456789abcdef",
                                  "01234567-89ab-cdef-0123-456789abcdef"])
async def test_reserved_and_id_like_names_are_refused(folders, name):
    gw, _ = folders
    assert (await gw.request("POST", "/folders", "alice", json={"name": name})).status_code == 400


@pytest.mark.parametrize("target", ["/etc", "/usr/local/x", "/home", "/home/work", ".bridge", "/home/work/.bridge/k",
                                    "a:b", "x,y", "/"])
async def test_mount_targets_that_would_cover_the_system_or_the_session_are_refused(folders, target):
    gw, svc = folders
    assert (await gw.request("POST", "/folders", "alice", json={"name": "m"})).status_code == 201
    with pytest.raises(Exception, match="not a place to mount"):
        await svc.mounts((await _auth(gw, "alice")).user_uuid, ["m"], {"m": target})


async def test_listing_a_file_is_a_400(folders, tmp_path):
    gw, _ = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "lf"})).json()["id"]
    (tmp_path / "vfroot" / "alice" / fid / "f.txt").write_text("x")
    r = await gw.request("GET", "/folders/lf/files?path=f.txt", "alice")
    assert r.status_code == 400 and "not a folder" in r.json()["msg"]
    long = await gw.request("POST", "/folders/lf/mkdir", "alice", json={"path": "x" * 300})
    assert long.status_code == 400 and "255 bytes" in long.json()["msg"]


async def test_a_planted_symlink_is_never_followed(folders, tmp_path):
    """A link inside a folder (made from a job, or by a user it is shared with) leads nowhere: listing,
    reading, writing, moving and deleting through it are refused, and an upload onto a link's name
    replaces the link, not the file it points at."""
    gw, _ = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "trap"})).json()["id"]
    root = tmp_path / "vfroot" / "alice" / fid
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("private\n")
    (root / "door").symlink_to(outside)
    (root / "note").symlink_to(outside / "secret.txt")
    tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    refused = [("GET", "/folders/trap/files?path=door", None),
               ("POST", "/folders/trap/mkdir", {"path": "door/x"}),
               ("POST", "/folders/trap/request-upload", {"path": "door/secret.txt", "size": 3}),
               ("DELETE", "/folders/trap/delete-files", {"files": ["door/secret.txt"]}),
               ("POST", "/folders/trap/move-file", {"src": "door/secret.txt", "dst": "stolen.txt"}),
               ("POST", "/folders/trap/rename-file", {"target_path": "door/secret.txt", "new_name": "x"})]
    for method, url, body in refused:
        r = await gw.request(method, url, "alice", json=body)
        assert r.status_code == 400 and "symbolic link" in r.json()["msg"], (url, r.text)
    d = (await gw.request("POST", "/folders/trap/request-download", "alice", json={"path": "note"})).json()
    r = await gw.http.get("/folders/_/transfer/download?token=" + d["token"])
    assert r.status_code == 400 and "symbolic link" in r.json()["msg"], r.text
    up = (await gw.request("POST", "/folders/trap/request-upload", "alice", json={"path": "note", "size": 3})).json()
    assert (await gw.http.patch("/folders/_/transfer/upload?token=" + up["token"], content=b"new",
                                headers=tus)).status_code == 204
    assert (outside / "secret.txt").read_text() == "private\n" and not (root / "note").is_symlink()
    assert (root / "note").read_bytes() == b"new" and (outside / "secret.txt").exists()
    listed = (await gw.request("GET", "/folders/trap/files?path=.", "alice")).json()["items"]
    assert {i["name"]: i["type"] for i in listed} == {"door": "SYMLINK", "note": "FILE"}


async def test_an_upload_asked_for_again_continues_where_it_stopped(folders, tmp_path):
    """A client killed half-way and run again asks for the same file: it learns the offset with HEAD and
    sends only the rest. A different size is a different upload."""
    gw, svc = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "resume"})).json()["id"]
    tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    first = (await gw.request("POST", "/folders/resume/request-upload", "alice",
                              json={"path": "f.bin", "size": 8})).json()
    assert (await gw.http.patch("/folders/_/transfer/upload?token=" + first["token"], content=b"abcd",
                                headers={**tus, "Upload-Offset": "0"})).status_code == 204
    svc._close_upload(next(iter(svc._open_uploads)))   # as after the idle sweep: opened again by the user
    second = (await gw.request("POST", "/folders/resume/request-upload", "alice",
                               json={"path": "f.bin", "size": 8})).json()
    head = await gw.http.head("/folders/_/transfer/upload?token=" + second["token"])
    assert head.headers["upload-offset"] == "4"
    done = await gw.http.patch("/folders/_/transfer/upload?token=" + second["token"], content=b"efgh",
                               headers={**tus, "Upload-Offset": "4"})
    assert done.status_code == 204 and (tmp_path / "vfroot" / "alice" / fid / "f.bin").read_bytes() == b"abcdefgh"
    assert [p.name for p in (tmp_path / "vfroot" / "alice" / fid).iterdir()] == ["f.bin"]   # no hidden file left
    other = (await gw.request("POST", "/folders/resume/request-upload", "alice",
                              json={"path": "f.bin", "size": 9})).json()
    assert (await gw.http.head("/folders/_/transfer/upload?token=" + other["token"])).headers["upload-offset"] == "0"


async def test_a_client_that_starts_again_is_sent_on_or_overwrites(folders, tmp_path):
    """The official clients start every upload at offset 0 (they never ask HEAD): bytes that agree with
    those kept are skipped and the answer's Upload-Offset sends the client on; bytes that differ replace
    the rest."""
    gw, _ = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "again"})).json()["id"]
    tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}

    async def patch(token: str, at: int, data: bytes) -> str:
        r = await gw.http.patch("/folders/_/transfer/upload?token=" + token, content=data,
                                headers={**tus, "Upload-Offset": str(at)})
        assert r.status_code == 204, r.text
        return r.headers["upload-offset"]

    link = (await gw.request("POST", "/folders/again/request-upload", "alice", json={"path": "f", "size": 8})).json()
    assert await patch(link["token"], 0, b"abcdef") == "6"
    assert await patch(link["token"], 0, b"abc") == "6"   # the same start: on to where the file stands
    assert await patch(link["token"], 0, b"abXY") == "4"   # another file: it is cut where they differ
    assert await patch(link["token"], 4, b"1234") == "8"
    assert (tmp_path / "vfroot" / "alice" / fid / "f").read_bytes() == b"abXY1234"


async def test_clone_copies_as_the_caller_and_only_a_cloneable_folder(folders, tmp_path):
    gw, svc = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "orig"})).json()["id"]
    root = tmp_path / "vfroot" / "alice" / fid
    (root / "sub").mkdir()
    (root / "sub" / "a.txt").write_text("a\n")
    (root / "link").symlink_to(tmp_path)   # copied as a link, not followed
    body = {"target_name": "copy", "target_host": "local", "usage_mode": "general", "permission": "rw"}
    r = await gw.request("POST", "/folders/orig/clone", "alice", json=body)
    assert r.status_code == 403 and "not cloneable" in r.json()["msg"]
    assert (await gw.request("POST", "/folders/orig/update-options", "alice",
                             json={"cloneable": True})).status_code == 201
    svc.runner.users.clear()
    r = await gw.request("POST", "/folders/orig/clone", "alice", json=body)
    assert r.status_code == 201 and r.json()["name"] == "copy" and r.json()["bgtask_id"], r.text
    done = await gw.request("GET", f"/events/background-task?task_id={r.json()['bgtask_id']}", "alice")
    assert "event: bgtask_done" in done.text, done.text   # the copy runs on, followed by the client
    assert (await gw.request("GET", "/folders/copy", "alice")).json()["status"] == "ready"
    copy = tmp_path / "vfroot" / "alice" / r.json()["id"]
    assert (copy / "sub" / "a.txt").read_text() == "a\n" and (copy / "link").is_symlink()
    assert set(svc.runner.users) == {"alice"}
    again = await gw.request("POST", "/folders/orig/clone", "alice", json=body)
    assert again.status_code == 400   # the name is taken: nothing copied
    assert (await gw.request("POST", "/folders/orig/clone", "bob", json=body)).status_code == 404


async def test_a_folder_still_being_cloned_is_neither_mounted_nor_written(folders):
    gw, svc = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "half"})).json()["id"]
    await svc._set_status(str(uuid.UUID(fid)), "cloning")
    alice = await _auth(gw, "alice")
    with pytest.raises(Exception, match="still being cloned"):
        await svc.mounts(alice.user_uuid, ["half"], None)
    r = await gw.request("POST", "/folders/half/mkdir", "alice", json={"path": "x"})
    assert r.status_code == 409 and "still being cloned" in r.json()["msg"]
    assert (await gw.request("GET", "/folders/half/files", "alice")).status_code == 200   # reading is fine


async def test_a_folder_a_live_session_mounts_is_not_deleted(folders, tmp_path):
    from tests.unit.api.test_graphql import add_session

    gw, _ = folders
    made = (await gw.request("POST", "/folders", "alice", json={"name": "inuse"})).json()
    path = str(tmp_path / "vfroot" / "alice" / made["id"])
    sid = await add_session(gw, "alice", "mounter")
    async with gw.app.state.db.unit_of_work() as s:
        (await s.get(SessionRow, sid)).status_data = {"binds": [[path, "/home/work/inuse", "rw"]]}
    r = await gw.request("DELETE", "/folders/inuse", "alice")
    assert r.status_code == 409 and "mounter" in r.json()["msg"], r.text
    async with gw.app.state.db.unit_of_work() as s:
        (await s.get(SessionRow, sid)).status = "TERMINATED"
    assert (await gw.request("DELETE", "/folders/inuse", "alice")).status_code == 204


class Streaming(AsOwner):
    """A transport that cannot hand an open file over (as SSH): transfers go through the helper's
    standard input and output."""

    receive_fd = None


async def test_transfers_stream_where_the_file_cannot_be_handed_over(folders, tmp_path):
    gw, svc = folders
    svc.runner = Streaming()
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "ssh"})).json()["id"]
    root = tmp_path / "vfroot" / "alice" / fid
    tus = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream"}
    payload = os.urandom(3 << 20)
    link = (await gw.request("POST", "/folders/ssh/request-upload", "alice",
                             json={"path": "f.bin", "size": len(payload)})).json()
    url = "/folders/_/transfer/upload?token=" + link["token"]
    r = await gw.http.patch(url, content=payload[:1 << 20], headers={**tus, "Upload-Offset": "0"})
    assert r.status_code == 204 and r.headers["upload-offset"] == str(1 << 20)
    assert (await gw.http.head(url)).headers["upload-offset"] == str(1 << 20)
    r = await gw.http.patch(url, content=payload[:2 << 20], headers={**tus, "Upload-Offset": "0"})   # again
    assert r.headers["upload-offset"] == str(2 << 20)
    over = await gw.http.patch(url, content=payload[2 << 20:] + b"x", headers={**tus, "Upload-Offset": str(2 << 20)})
    assert over.status_code == 400 and "announced" in over.json()["msg"]
    r = await gw.http.patch(url, content=payload[2 << 20:], headers={**tus, "Upload-Offset": str(2 << 20)})
    assert r.status_code == 204 and (root / "f.bin").read_bytes() == payload
    d = (await gw.request("POST", "/folders/ssh/request-download", "alice", json={"path": "f.bin"})).json()
    whole = await gw.http.get("/folders/_/transfer/download?token=" + d["token"])
    assert whole.content == payload and whole.headers["content-length"] == str(len(payload))
    part = await gw.http.get("/folders/_/transfer/download?token=" + d["token"], headers={"Range": "bytes=10-"})
    assert part.status_code == 206 and part.content == payload[10:]
    (root / "link").symlink_to(root / "f.bin")
    d = (await gw.request("POST", "/folders/ssh/request-download", "alice", json={"path": "link"})).json()
    r = await gw.http.get("/folders/_/transfer/download?token=" + d["token"])
    assert r.status_code == 400, r.text


async def test_what_a_sharer_could_plant_is_refused(folders, tmp_path):
    """A hard link planted under an upload's hidden name, a clone of a setuid file, and a folder whose
    directory became a link before a session mounts it."""
    gw, svc = folders
    fid = (await gw.request("POST", "/folders", "alice", json={"name": "plant"})).json()["id"]
    root = tmp_path / "vfroot" / "alice" / fid
    link = (await gw.request("POST", "/folders/plant/request-upload", "alice", json={"path": "f", "size": 3})).json()
    partial = next(root.glob(".bridge-upload-*"))
    partial.unlink()
    keep = tmp_path / "theirs"
    keep.write_bytes(b"")
    os.link(keep, partial)   # what a sharer keeps after being unshared
    r = await gw.http.patch("/folders/_/transfer/upload?token=" + link["token"], content=b"abc",
                            headers={"Tus-Resumable": "1.0.0", "Upload-Offset": "0",
                                     "Content-Type": "application/offset+octet-stream"})
    assert r.status_code == 400 and "one name" in r.json()["msg"] and keep.read_bytes() == b""

    (root / "tool").write_bytes(b"#!/bin/sh\n")
    (root / "tool").chmod(0o4755)
    (root / "sub").mkdir(mode=0o777)
    await gw.request("POST", "/folders/plant/update-options", "alice", json={"cloneable": True})
    made = await gw.request("POST", "/folders/plant/clone", "alice", json={"target_name": "copied"})
    await gw.request("GET", f"/events/background-task?task_id={made.json()['bgtask_id']}", "alice")
    copy = tmp_path / "vfroot" / "alice" / made.json()["id"]
    assert (copy / "tool").stat().st_mode & 0o7777 == 0o755   # no setuid bit comes along
    assert oct(copy.stat().st_mode & 0o777) == "0o700"   # the new folder's own mode, not the source's

    alice = await _auth(gw, "alice")
    moved = tmp_path / "moved"
    root.rename(moved)
    root.symlink_to(tmp_path)   # the folder's own directory now a link
    with pytest.raises(Exception, match="symbolic link"):
        await svc.mounts(alice.user_uuid, ["plant"], None)


async def test_the_host_permissions_a_policy_can_grant(gw):
    """GET /acl (the WebUI's resource-policy pages, manager 22.09+): the names allowed_vfolder_hosts maps to."""
    r = await gw.request("GET", "/acl", "alice")
    assert r.status_code == 200 and "mount-in-session" in r.json()["vfolder_host_permission_list"], r.text
    assert (await gw.http.get("/acl")).status_code in (400, 401)   # unsigned: refused as every signed route
