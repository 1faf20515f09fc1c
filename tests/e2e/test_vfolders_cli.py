"""Virtual folders through the real CLIs on the dev cluster: create, list, info, mkdir, ls, upload, download,
a batch session that mounts a folder and writes into it as the user, ownership on disk, strangers kept out,
delete."""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api
from tests.e2e.test_sessions_cli import wait_row
from tests.integration.test_dev_env import bai_bridge

pytestmark = pytest.mark.cluster
ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


def test_a_folder_from_create_to_a_job_that_writes_into_it(client, gateway):
    name = "vf-" + uuid.uuid4().hex[:6]
    hosts = ok(client.run("alice", "vfolder", "list-hosts"))
    assert "local" in hosts
    ok(client.run("alice", "vfolder", "create", name, "local"))
    assert name in ok(client.run("alice", "vfolder", "list"))
    info = ok(client.run("alice", "vfolder", "info", name))
    assert f"\"{name}\"" in info and "Owner: True" in info and "Permission: rw" in info
    ok(client.run("alice", "vfolder", "mkdir", name, "inputs"))
    assert "inputs" in ok(client.run("alice", "vfolder", "ls", name))

    # a file in and out: tus PATCHes of 16 MiB, then a download that must match byte for byte
    payload = os.urandom(20_000_000)
    (client.cwd / "payload.bin").write_bytes(payload)
    ok(client.run("alice", "vfolder", "upload", name, "payload.bin", "-b", str(client.cwd)))
    assert "payload.bin" in ok(client.run("alice", "vfolder", "ls", name))
    dl = client.cwd / "dl"
    dl.mkdir()
    ok(client.run("alice", "vfolder", "download", name, "payload.bin", "-b", str(dl)))
    assert (dl / "payload.bin").read_bytes() == payload
    fid = Api(gateway)("GET", "/folders/_/id", {"name": name}).json()["id"]
    uploaded = ROOT / "srv/shared/vfolders/alice" / fid / "payload.bin"
    assert uploaded.stat().st_uid == next(int(line.split(":")[2]) for line in (ROOT / "etc/passwd").read_text()
                                          .splitlines() if line.startswith("alice:"))   # alice's, not root's

    config = gateway["BRIDGE_CONFIG"]   # the admin's view: owner, path on disk, size measured as the owner
    listed = bai_bridge("--config", config, "admin", "folder", "list", "--usage", "--json", cwd=Path(config).parent)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    mine = next(f for f in json.loads(listed.stdout) if f["name"] == name and f["unix_user"] == "alice")
    assert mine["bytes"] >= 20_000_000 and mine["files"] == 2 and mine["path"].endswith(fid)

    ok(client.run("alice", "vfolder", "mv", name, "payload.bin", "inputs/moved.bin"))
    ok(client.run("alice", "vfolder", "rm", name, "inputs/moved.bin", answer="y\n"))
    assert "moved.bin" not in ok(client.run("alice", "vfolder", "ls", name, "inputs"))

    (client.cwd / "in.txt").write_text("hello folders\n")   # the job's input, uploaded; its output, downloaded
    ok(client.run("alice", "vfolder", "upload", name, "in.txt", "-b", str(client.cwd)))
    job = "vfjob-" + uuid.uuid4().hex[:6]
    ok(client.run("alice", "session", "create", "python", "-t", job, "--type", "batch", "-m", name,
                  "-c", f"tr a-z A-Z < /home/work/{name}/in.txt > /home/work/{name}/inputs/out.txt && "
                        f"id -un > /home/work/{name}/inputs/who.txt"))
    wait_row(client, "alice", job, "SUCCESS", timeout=120)
    listing = ok(client.run("alice", "vfolder", "ls", name, "inputs"))
    assert "who.txt" in listing and "out.txt" in listing
    (dl / "inputs").mkdir()   # the clients write to <dir>/<path> without making its folders
    ok(client.run("alice", "vfolder", "download", name, "inputs/out.txt", "-b", str(dl)))
    assert next(dl.rglob("out.txt")).read_text() == "HELLO FOLDERS\n"
    api = Api(gateway)
    fid = api("GET", "/folders/_/id", {"name": name}).json()["id"]
    written = next((ROOT / "srv/shared/vfolders/alice" / fid / "inputs").glob("who.txt"))
    assert written.read_text() == "alice\n"
    passwd = (ROOT / "etc/passwd").read_text().splitlines()
    alice_uid = int(next(line.split(":")[2] for line in passwd if line.startswith("alice:")))
    assert written.stat().st_uid == alice_uid   # the user's file, not the gateway's

    bob = Api(gateway, "BOB_")
    assert bob("GET", f"/folders/{fid}").status_code == 404
    assert bob("GET", f"/folders/{fid}/files", {"path": "."}).status_code == 404
    refused = bob("POST", "/session", {"name": "steal-" + uuid.uuid4().hex[:6], "image": "python", "type": "batch",
                                       "startupCommand": "true", "config": {"mounts": [name]}})
    assert refused.status_code == 404 and name in refused.json()["msg"]
    for bad in ("../alice", "/etc"):
        r = api("GET", f"/folders/{fid}/files", {"path": bad})
        assert r.status_code == 400, r.text

    assert api("POST", f"/folders/{name}/update-options", {"cloneable": True}).status_code == 201
    assert "complete" in ok(client.run("alice", "vfolder", "clone", name, name + "-copy", "local"))
    assert "who.txt" in ok(client.run("alice", "vfolder", "ls", name + "-copy", "inputs"))
    ok(client.run("alice", "vfolder", "delete", name + "-copy"))

    ok(client.run("alice", "vfolder", "delete", name))
    assert not (ROOT / "srv/shared/vfolders/alice" / fid).exists()
    assert name not in client.run("alice", "vfolder", "list").stdout


@pytest.fixture(scope="module")
def gigabyte(tmp_path_factory) -> tuple[Path, str]:
    """A file of 1 GiB of random bytes, and its SHA-256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(1024):
            block = os.urandom(1 << 20)
            digest.update(block)
            f.write(block)
    return path, digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def test_a_gigabyte_upload_killed_half_way_continues_and_downloads_identical(client, gateway, gigabyte):
    """`vfolder upload` of 1 GiB, killed part-way: run again, it continues from the bytes the gateway holds
    (the same file asked for again gets the same hidden file, whose offset HEAD tells), and the download
    is byte-identical."""
    src, digest = gigabyte
    name = "big-" + uuid.uuid4().hex[:6]
    ok(client.run("alice", "vfolder", "create", name, "local"))
    fid = Api(gateway)("GET", "/folders/_/id", {"name": name}).json()["id"]
    folder = ROOT / "srv/shared/vfolders/alice" / fid
    proc = client.popen("alice", "vfolder", "upload", name, src.name, "-b", str(src.parent))
    partial = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        partial = next(folder.glob(".bridge-upload-*"), None)
        if partial is not None and partial.stat().st_size >= 64 << 20:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the upload ended before it could be killed"
    proc.kill()
    proc.communicate(timeout=30)
    assert partial is not None
    time.sleep(0.5)   # the gateway notices the client went away
    kept = partial.stat().st_size
    assert 0 < kept < src.stat().st_size and not (folder / src.name).exists()

    api = Api(gateway)   # what the client will learn when it asks again: the offset to continue from
    link = api("POST", f"/folders/{name}/request-upload", {"path": src.name, "size": src.stat().st_size}).json()
    # the links name the transfer port (storage.transfer_port, which dev up opens), not the API's
    assert urlsplit(link["url"]).port not in (None, urlsplit(gateway["BACKEND_ENDPOINT"]).port), link["url"]
    head = httpx.head(link["url"], params={"token": link["token"]})
    assert int(head.headers["upload-offset"]) >= kept, head.headers

    ok(client.run("alice", "vfolder", "upload", name, src.name, "-b", str(src.parent), timeout=600))
    assert not list(folder.glob(".bridge-upload-*"))
    dl = client.cwd / "dl"
    dl.mkdir()
    ok(client.run("alice", "vfolder", "download", name, src.name, "-b", str(dl), timeout=600))
    assert sha256_of(dl / src.name) == digest
    (dl / src.name).unlink()
    ok(client.run("alice", "vfolder", "delete", name))
