"""Sharing folders through the real CLIs on the dev cluster: an invitation accepted by a second user, a
read-only share that neither a job nor a shell on the login node can write through, a change to read-write
(the invitee's files are theirs, and readable by the owner), leaving; a project folder shared with its
members, one of them raised to read-write with `vfolder share`. The ACLs on disk are real."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api
from tests.e2e.test_sessions_cli import wait_row
from tests.integration.test_dev_env import bai_bridge

pytestmark = pytest.mark.cluster
ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


def shell(user: str, command: str) -> subprocess.CompletedProcess[str]:
    """What a user with a shell on the login node can do, outside the gateway."""
    return subprocess.run(["chroot", str(ROOT), "runuser", "-u", user, "--", "sh", "-c", command],
                          capture_output=True, text=True, timeout=30)


def uid_of(user: str) -> int:
    return next(int(line.split(":")[2]) for line in (ROOT / "etc/passwd").read_text().splitlines()
                if line.startswith(f"{user}:"))


def batch(client, who: str, command: str, mounts: list[str]) -> None:
    """A batch session that must end SUCCESS: `command` checks what it should inside the container."""
    name = "share-" + uuid.uuid4().hex[:6]
    args = [a for m in mounts for a in ("-m", m)]
    ok(client.run(who, "session", "create", "python", "-t", name, "--type", "batch", *args, "-c", command))
    wait_row(client, who, name, "SUCCESS", timeout=120)


def test_an_invitation_a_read_only_share_and_leaving(client, gateway):
    name = "inv-" + uuid.uuid4().hex[:6]
    ok(client.run("alice", "vfolder", "create", name, "local"))
    (client.cwd / "in.txt").write_text("shared data\n")
    ok(client.run("alice", "vfolder", "upload", name, "in.txt", "-b", str(client.cwd)))
    alice = Api(gateway)
    fid = alice("GET", "/folders/_/id", {"name": name}).json()["id"]
    path = f"/srv/shared/vfolders/alice/{fid}"
    assert shell("bob", f"cat {path}/in.txt").returncode != 0   # not before it is shared

    assert "bob@example.com" in ok(client.run("alice", "vfolder", "invite", name, "bob@example.com", "-p", "ro"))
    listed = ok(client.run("bob", "vfolder", "invitations", answer="1\na\n"))
    assert "alice@example.com" in listed, listed
    assert name in ok(client.run("bob", "vfolder", "list"))
    assert "in.txt" in ok(client.run("bob", "vfolder", "ls", name))
    config = gateway["BRIDGE_CONFIG"]   # the admin's view: owner and shares
    listed = bai_bridge("--config", config, "admin", "folder", "list", "--json", cwd=Path(config).parent)
    mine = next(f for f in json.loads(listed.stdout) if f["name"] == name)
    assert mine["owner"] == "alice@example.com" and mine["shared_with"] == "bob@example.com:ro", mine
    dl = client.cwd / "bob-dl"
    dl.mkdir()
    ok(client.run("bob", "vfolder", "download", name, "in.txt", "-b", str(dl)))
    assert (dl / "in.txt").read_text() == "shared data\n"

    # read-only: in a job (the bind is read-only, and so is the ACL) and from a shell on the login node
    batch(client, "bob", f"cat /home/work/{name}/in.txt && ! touch /home/work/{name}/x 2>/dev/null", [name])
    assert shell("bob", f"cat {path}/in.txt").stdout == "shared data\n"
    wrote = shell("bob", f"echo x > {path}/x; echo x >> {path}/in.txt")
    assert wrote.returncode != 0 and "Permission denied" in wrote.stderr
    assert shell("hpcadmin", f"ls {path}").returncode != 0   # a third user: nothing
    up = client.run("bob", "vfolder", "upload", name, "in.txt", "-b", str(dl))
    assert up.returncode != 0 or "403" in up.stdout + up.stderr or "permission" in (up.stdout + up.stderr).lower()

    # read-write: bob's job writes a file that is bob's, and alice reads it
    bob_uuid = next(s["shared-to"]["uuid"] for s in alice("GET", "/folders/_/shared").json()
                    if s["vfolder_name"] == name)
    assert alice("POST", "/folders/_/shared", {"vfolder": fid, "user": bob_uuid, "perm": "rw"}).status_code == 200
    batch(client, "bob", f"id -un > /home/work/{name}/from-bob.txt", [name])
    made = ROOT / path.lstrip("/") / "from-bob.txt"
    assert made.stat().st_uid == uid_of("bob")
    assert shell("alice", f"cat {path}/from-bob.txt").stdout == "bob\n"   # the owner reads what a sharer made

    ok(client.run("bob", "vfolder", "leave", name))
    assert name not in client.run("bob", "vfolder", "list").stdout
    assert shell("bob", f"cat {path}/in.txt").returncode != 0   # cut off on disk too
    ok(client.run("alice", "vfolder", "delete", name))


def test_a_project_folder_and_vfolder_share(client, gateway):
    name = "proj-" + uuid.uuid4().hex[:6]
    ok(client.run("admin", "vfolder", "create", name, "local", "-g", "default", "-p", "ro"))
    admin = Api(gateway, "ADMIN_")
    fid = next(f["id"] for f in admin("GET", "/folders").json() if f["name"] == name)
    config = gateway["BRIDGE_CONFIG"]
    listed = bai_bridge("--config", config, "admin", "folder", "list", "--json", cwd=Path(config).parent)
    assert next(f for f in json.loads(listed.stdout) if f["name"] == name)["owner"] == "project default"
    path = f"/srv/shared/vfolders/hpcadmin/{fid}"
    assert name in ok(client.run("alice", "vfolder", "list"))   # every member sees it
    (client.cwd / "note.txt").write_text("from alice\n")
    refused = client.run("alice", "vfolder", "upload", name, "note.txt", "-b", str(client.cwd))
    assert refused.returncode != 0 or "403" in refused.stdout + refused.stderr
    assert shell("alice", f"touch {path}/x").returncode != 0

    assert "alice@example.com" in ok(client.run("admin", "vfolder", "share", name, "alice@example.com", "-p", "rw"))
    ok(client.run("alice", "vfolder", "upload", name, "note.txt", "-b", str(client.cwd)))
    assert (ROOT / path.lstrip("/") / "note.txt").stat().st_uid == uid_of("alice")
    batch(client, "bob", f"cat /home/work/{name}/note.txt && ! touch /home/work/{name}/y 2>/dev/null", [name])
    assert shell("bob", f"cat {path}/note.txt").stdout == "from alice\n"
    assert shell("bob", f"touch {path}/y").returncode != 0
    ok(client.run("admin", "vfolder", "delete", name))
    assert not (ROOT / path.lstrip("/")).exists()
