"""Virtual folders through the real CLIs on the dev cluster: create, list, info, mkdir, ls, upload, download,
a batch session that mounts a folder and writes into it as the user, ownership on disk, strangers kept out,
delete."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

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

    job = "vfjob-" + uuid.uuid4().hex[:6]
    ok(client.run("alice", "session", "create", "python", "-t", job, "--type", "batch", "-m", name,
                  "-c", f"ls /home/work/{name} && id -un > /home/work/{name}/inputs/who.txt"))
    wait_row(client, "alice", job, "SUCCESS", timeout=120)
    listing = ok(client.run("alice", "vfolder", "ls", name, "inputs"))
    assert "who.txt" in listing
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

    ok(client.run("alice", "vfolder", "delete", name))
    assert not (ROOT / "srv/shared/vfolders/alice" / fid).exists()
    assert name not in client.run("alice", "vfolder", "list").stdout
