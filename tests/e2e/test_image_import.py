"""Images from a real OCI registry (Debian's docker-registry on loopback): `bai-bridge admin image import`
of docker:// and oras:// references into the digest-keyed cache, and a session that names a registry
image directly, which is PULLING until the image is in the cache."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api, wait_status
from tests.integration.test_dev_env import bai_bridge, free_port
from tests.support import oci_registry

pytestmark = pytest.mark.cluster
ROOT = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory, gateway):
    work = tmp_path_factory.mktemp("registry")
    port = free_port()
    try:
        proc = oci_registry.start(work, port)
    except FileNotFoundError as e:
        if os.environ.get("BRIDGE_TEST_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"{e} is needed (scripts/test-deps.sh installs it)")
        pytest.skip(str(e))
    address = f"127.0.0.1:{port}"
    oci_registry.push_rootfs(address, "bridge/python", "1", ROOT / "srv/images/python")
    # an ORAS artifact: the same image as a SIF, pushed with Apptainer itself
    sif = f"/tmp/bridge-oras-{uuid.uuid4().hex[:6]}.sif"
    for argv in (["apptainer", "-s", "build", sif, "/srv/images/python"],
                 ["apptainer", "-s", "push", "--no-https", sif, f"oras://{address}/bridge/python-sif:1"]):
        done = subprocess.run(["chroot", str(ROOT), *argv], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    (ROOT / sif.lstrip("/")).unlink()
    yield address
    proc.kill()
    proc.wait()


def _admin(gateway, *args: str) -> str:
    config = gateway["BRIDGE_CONFIG"]
    done = bai_bridge("--config", config, "admin", "image", *args, cwd=Path(config).parent)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_import_docker_and_oras_images_into_the_digest_cache(client, gateway, registry):
    alias = "imported-" + uuid.uuid4().hex[:6]
    out = _admin(gateway, "import", f"docker://{registry}/bridge/python:1", "--alias", alias)
    assert f"image {registry}/bridge/python:1 (sha256:" in out and "/srv/images/.cache/sha256-" in out
    path = out.split(" -> ")[1].split(" ")[0]
    # one read-only SIF file, built as the unprivileged pull user: no directory of unpacked layers (with the
    # image's setuid-root binaries) on the shared storage
    sif = (ROOT / path.lstrip("/"))
    assert path.endswith(".sif") and sif.is_file() and sif.stat().st_mode & 0o7777 == 0o444
    assert sif.owner() == "nobody"
    built = sif.stat().st_mtime
    again = _admin(gateway, "import", f"docker://{registry}/bridge/python:1")
    assert again.split(" -> ")[1].split(" ")[0] == path
    assert sif.stat().st_mtime == built   # a cache hit: no second pull
    listing = _admin(gateway, "list", "--json")
    assert alias in listing and "sha256:" in listing
    # the real client runs code in the imported image, by its alias and by its registry reference
    assert "42" in ok(client.run("alice", "run", "--rm", alias, "-c", "print(40+2)"))
    by_ref = ok(client.run("alice", "run", "--rm", f"docker://{registry}/bridge/python:1", "-c", "print(6*7)"))
    assert "42" in by_ref.splitlines()

    sif = _admin(gateway, "import", f"oras://{registry}/bridge/python-sif:1")
    assert sif.split(" -> ")[1].split(" ")[0].endswith(".sif")
    api = Api(gateway)
    sid = api("POST", "/session", {"name": "oras-" + uuid.uuid4().hex[:6],
                                   "image": f"{registry}/bridge/python-sif:1"}).json()["sessionId"]
    try:
        res = api("POST", f"/session/{sid}", {"mode": "query", "runId": "o", "code": "print('from a SIF')"}).json()
        assert res["result"]["console"] == [["stdout", "from a SIF\n"]]
    finally:
        api("DELETE", f"/session/{sid}")


def test_a_session_naming_a_registry_image_is_pulling_first(gateway, registry):
    tag = uuid.uuid4().hex[:6]   # a new image (its own label), so its digest is not in the cache yet
    oci_registry.push_rootfs(registry, "bridge/python", tag, ROOT / "srv/images/python", labels={"bridge.test": tag})
    api = Api(gateway)
    r = api("POST", "/session", {"name": "pull-" + tag, "image": f"docker://{registry}/bridge/python:{tag}",
                                 "enqueueOnly": True})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "PULLING"
    sid = r.json()["sessionId"]
    try:
        info = wait_status(api, sid, {"RUNNING"}, timeout=180)
        history = info["statusHistory"]
        assert "PULLING" in history and history["PULLING"] < history["RUNNING"]
        res = api("POST", f"/session/{sid}", {"mode": "query", "runId": "p", "code": "print(6 * 7)"}).json()
        assert res["result"]["console"] == [["stdout", "42\n"]]
    finally:
        api("DELETE", f"/session/{sid}")

    # refused before anything is created: an image that is not there, a registry the site does not pull from
    before = time.time()
    missing = api("POST", "/session", {"name": "miss-" + tag, "image": f"docker://{registry}/bridge/none:1"})
    assert missing.status_code == 400 and "does not exist" in missing.json()["msg"]
    foreign = api("POST", "/session", {"name": "far-" + tag, "image": "docker://registry.example.org/x/y:1"})
    assert foreign.status_code == 400 and "does not pull from registry.example.org" in foreign.json()["msg"]
    assert time.time() - before < 30
    for name in ("miss-" + tag, "far-" + tag):
        assert api("GET", f"/session/{name}").status_code == 404


HELLO = {
    "prestart": [
        {"action": "mkdir", "args": {"path": "/home/work/hello-site"}},
        {"action": "write_file", "args": {"filename": "/home/work/hello-site/index.html", "mode": "644",
                                          "body": ["hello from port {ports[0]}\n"]}},
    ],
    "command": ["{runtime_path}", "-m", "http.server", "{ports[0]}", "--bind", "127.0.0.1",
                "--directory", "/home/work/hello-site"],
}


def test_an_image_defined_service_through_tcpproxy_and_the_browser_proxy(gateway, registry):
    """A service-definition JSON in the image (/etc/backend.ai/service-defs/hello.json) and its port in the
    image's label: started on first use, reached through the tcpproxy and the browser proxy."""
    import asyncio
    import json

    import httpx
    from websockets.asyncio.client import connect

    from tests.e2e.test_pty import ws_headers

    tag = uuid.uuid4().hex[:6]
    oci_registry.push_rootfs(
        registry, "bridge/hello", tag, ROOT / "srv/images/python",
        labels={"ai.backend.service-ports": "hello:http:8081", "bridge.test": tag},
        extra_files={"etc/backend.ai/service-defs/hello.json": json.dumps(HELLO).encode()})
    api = Api(gateway)
    r = api("POST", "/session", {"name": "svc-" + tag, "image": f"docker://{registry}/bridge/hello:{tag}"})
    assert r.status_code == 201, r.text
    sid = r.json()["sessionId"]
    try:
        wait_status(api, sid, {"RUNNING"}, timeout=180)
        hello = {a["name"]: a for a in api("GET", f"/stream/session/{sid}/apps").json()}["hello"]
        assert hello["url_template"] == "http://{host}:{port}/" and hello["ports"] == [8081]
        base_ws = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://")
        path = f"/stream/session/{sid}/tcpproxy?app=hello"

        async def get() -> bytes:
            async with connect(base_ws + path, additional_headers=ws_headers(gateway, path, "BACKEND_")) as ws:
                await ws.send(b"GET /index.html HTTP/1.0\r\n\r\n")
                data = b""
                async for msg in ws:
                    data += msg
                return data

        assert b"hello from port 8081" in asyncio.run(get())
        url = api("POST", f"/session/{sid}/start-service", {"app": "hello"}).json()["url"]
        page = httpx.get(url.replace("/hello/?", "/hello/index.html?"), follow_redirects=True, timeout=60)
        assert page.status_code == 200 and page.text == "hello from port 8081\n"
        # it listens on a loopback of its own: code on the node (here the session's own, which shares the
        # node's network as any other user's would) finds nothing on port 8081
        probe = ("import socket\ntry:\n    socket.create_connection(('127.0.0.1', 8081), timeout=5)\n"
                 "    print('reached')\nexcept OSError as e:\n    print(type(e).__name__)\n")
        res = api("POST", f"/session/{sid}", {"mode": "query", "runId": "probe", "code": probe}).json()
        assert res["result"]["console"] == [["stdout", "ConnectionRefusedError\n"]], res
    finally:
        api("DELETE", f"/session/{sid}")


def test_a_moved_tag_gets_a_new_cache_entry_and_prune_removes_the_old_one(gateway, registry):
    rootfs = ROOT / "srv/images/python"
    oci_registry.push_rootfs(registry, "bridge/moving", "t", rootfs, labels={"bridge.version": "1"})
    first = _admin(gateway, "import", f"docker://{registry}/bridge/moving:t").split(" -> ")[1].split(" ")[0]
    oci_registry.push_rootfs(registry, "bridge/moving", "t", rootfs, labels={"bridge.version": "2"})
    second = _admin(gateway, "import", f"docker://{registry}/bridge/moving:t").split(" -> ")[1].split(" ")[0]
    assert first != second and (ROOT / first.lstrip("/")).exists()
    assert f"would remove {first}" in _admin(gateway, "prune", "--dry-run").splitlines()
    assert (ROOT / first.lstrip("/")).exists()
    out = _admin(gateway, "prune")
    assert f"removed {first}" in out.splitlines() and second not in out
    assert not (ROOT / first.lstrip("/")).exists() and (ROOT / second.lstrip("/")).exists()
