"""Batch mode with uploaded files, listings and downloads through the real CLIs; no path leaves the folder."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api

pytestmark = pytest.mark.cluster


@pytest.fixture
def project(tmp_path):
    src = tmp_path / "proj"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("import pkg.util as u\nprint('sum', u.add(40, 2))\n"
                                 "open('result.txt', 'w').write('written by the job\\n')\n")
    (src / "pkg" / "__init__.py").write_text("")
    (src / "pkg" / "util.py").write_text("def add(a, b):\n    return a + b\n")
    return src


def test_batch_run_with_files_build_exec_and_download(client, project, tmp_path):
    name = "bat-" + uuid.uuid4().hex[:6]
    files = [str(project / p) for p in ("main.py", "pkg/__init__.py", "pkg/util.py")]
    out = ok(client.run("alice", "run", "-t", name, "--basedir", str(project), "python", *files,
                        "--build", "echo building-step", "--exec", "python3 main.py"))
    assert "building-step" in out and "sum 42" in out and "exit code = 0" in out
    listing = ok(client.run("alice", "session", "ls", name))
    assert "main.py" in listing and "result.txt" in listing and "pkg" in listing
    dest = tmp_path / "dl"
    dest.mkdir()
    ok(client.run("alice", "session", "download", name, "result.txt", "pkg", "--dest", str(dest)))
    assert (dest / "result.txt").read_text() == "written by the job\n"
    assert (dest / "pkg" / "util.py").read_text().startswith("def add")
    for bad in ("../../../../etc/passwd", "/etc/passwd"):
        p = client.run("alice", "session", "download", name, bad, "--dest", str(dest))
        assert "leaves the session folder" in p.stdout + p.stderr
        assert not (dest / "passwd").exists()
    ok(client.run("alice", "session", "rm", name))


def test_upload_refuses_escapes_and_strangers(gateway, tmp_path):
    alice, bob = Api(gateway), Api(gateway, "BOB_")
    sid = alice("POST", "/session", {"name": "up-" + uuid.uuid4().hex[:6], "image": "python"}).json()["sessionId"]
    try:
        listing = alice("GET", f"/session/{sid}/files", {"path": "../../.."})
        assert listing.status_code == 400 and "leaves the session folder" in listing.json()["msg"]
        assert bob("GET", f"/session/{sid}/files", {"path": "."}).status_code == 404
        files = alice("GET", f"/session/{sid}/files", {"path": "."}).json()
        assert any(f["filename"] == ".bridge" for f in files["items"])
    finally:
        alice("DELETE", f"/session/{sid}")


def test_download_single_streams_one_file(gateway):
    alice = Api(gateway)
    sid = alice("POST", "/session", {"name": "ds-" + uuid.uuid4().hex[:6], "image": "python"}).json()["sessionId"]
    try:
        alice("POST", f"/session/{sid}", {"mode": "query", "runId": "w",
                                         "code": "open('blob.bin', 'wb').write(bytes(range(256)) * 4096)"})
        r = alice("GET", f"/session/{sid}/download_single", {"file": "blob.bin"})
        assert r.status_code == 200 and r.content == bytes(range(256)) * 4096
        assert alice("GET", f"/session/{sid}/download_single", {"file": ".bridge"}).status_code == 400
        escape = alice("GET", f"/session/{sid}/download_single", {"file": "../../../etc/passwd"})
        assert escape.status_code == 400 and "leaves the session folder" in escape.json()["msg"]
    finally:
        alice("DELETE", f"/session/{sid}")
