"""The gateway's HTTP proxy for browsers: `start-service` hands out an app token, the browser trades it for
a cookie scoped to `/proxy/{session}/{app}/`, and JupyterLab (HTTP and its WebSockets) runs through it.
A second user is refused on every path to the first user's services."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from bridge.devcluster.devenv import read_env
from tests.e2e.conftest import cancel_tagged
from tests.e2e.test_pty import ws_headers
from tests.e2e.test_session_rest import Api, wait_status
from tests.integration.test_dev_env import bai_bridge, free_port

pytestmark = pytest.mark.cluster

NOTEBOOK = {
    "cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
               "source": ["print('through the proxy', 6 * 7)"]}],
    "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}


@pytest.fixture
def jupyter_session(gateway):
    alice = Api(gateway)
    r = alice("POST", "/session", {"name": "web-" + uuid.uuid4().hex[:6], "image": gateway["BRIDGE_DEV_JUPYTER_IMAGE"]})
    assert r.status_code in (200, 201), r.text
    sid = r.json()["sessionId"]
    wait_status(alice, sid, {"RUNNING"})
    yield sid
    alice("DELETE", f"/session/{sid}")


def _browser(*extra: str, network_log: bool = False):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("BRIDGE_TEST_REQUIRE_CLUSTER") == "1":
            pytest.fail("chromium and chromium-driver are needed (scripts/test-deps.sh installs them)")
        pytest.skip("no chromium / chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", *extra):
        options.add_argument(arg)
    if network_log:   # every request and answer, for a test that judges them
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def _run_the_cell(browser, url: str) -> None:
    """Open the notebook at `url` (a start-service link) and run its cell; JupyterLab re-renders as it loads,
    so elements are looked up afresh on every try, and one that went stale is simply looked up again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url.replace("/jupyter/?", "/jupyter/lab/tree/proxy-test.ipynb?"))
    wait = WebDriverWait(browser, 120, ignored_exceptions=(StaleElementReferenceException,))
    cell = (By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")
    wait.until(lambda b: b.find_element(*cell).is_displayed())
    wait.until(lambda b: "Idle" in b.find_element(By.CSS_SELECTOR, ".jp-StatusBar-Widget, body").text
               or b.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']"))

    def run_cell(b):
        """Done once the first cell shows an execution mark ([*] or [1]); until then, Shift+Enter again: on a
        loaded machine JupyterLab can drop the first key press while it still settles (CI18 timed out so)."""
        prompt = b.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt")
        if prompt and any(ch in prompt[0].text for ch in "*0123456789"):
            return True
        editor = b.find_element(*cell)
        editor.click()
        editor.send_keys(Keys.SHIFT, Keys.ENTER)
        return False

    WebDriverWait(browser, 120, poll_frequency=3, ignored_exceptions=(StaleElementReferenceException,)).until(
        run_cell)
    wait.until(lambda b: any("through the proxy 42" in e.text
                             for e in b.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")))
    assert "/proxy/" in browser.current_url and "token=" not in browser.current_url


def _notebook_and_link(api: Api, sid: str) -> str:
    code = f"open('proxy-test.ipynb', 'w').write({json.dumps(NOTEBOOK)!r})"
    run = api("POST", f"/session/{sid}", {"mode": "query", "code": code, "runId": uuid.uuid4().hex})
    assert run.status_code == 200 and run.json()["result"]["status"] == "finished", run.text
    started = api("POST", f"/session/{sid}/start-service", {"app": "jupyter"})
    assert started.status_code == 200, started.text
    url = started.json()["url"]
    assert "/proxy/" in url and "token=" in url
    return url


def test_a_browser_runs_a_jupyterlab_cell_through_the_proxy(gateway, jupyter_session):
    alice, sid = Api(gateway), jupyter_session
    url = _notebook_and_link(alice, sid)
    browser = _browser()
    try:
        _run_the_cell(browser, url)
    finally:
        browser.quit()
    traffic = alice("GET", f"/session/{sid}/tunnels").json()
    assert traffic["bytes_down"] > 10000 and traffic["circuits_total"] > 3 and traffic["last_activity"]


@pytest.fixture(scope="module")
def apps_gateway(tmp_path_factory):
    """A gateway of its own whose apps are served on hosts of their own (server.apps_domain)."""
    from bridge.devcluster.devenv import read_env
    from tests.integration.test_dev_env import bai_bridge, free_port

    work = tmp_path_factory.mktemp("apps-domain")
    state = work / "state"
    up = bai_bridge("dev", "up", "--no-webui", "--state-dir", str(state), "--port", str(free_port()), "--no-first-job",
                    "--apps-domain", "apps.bridge.test", cwd=work)
    assert up.returncode == 0, up.stdout + up.stderr
    yield read_env(state / "env")
    bai_bridge("dev", "down", "--state-dir", str(state), cwd=work)


def test_with_an_apps_domain_jupyterlab_runs_on_a_host_of_its_own(apps_gateway):
    """Issue 12.7: each session's app on its own origin, so no app's JavaScript shares an origin with another
    user's app or with the gateway. The browser resolves *.apps.bridge.test to this machine."""
    alice = Api(apps_gateway)
    r = alice("POST", "/session", {"name": "host-" + uuid.uuid4().hex[:6],
                                   "image": apps_gateway["BRIDGE_DEV_JUPYTER_IMAGE"]})
    assert r.status_code in (200, 201), r.text
    sid = r.json()["sessionId"]
    try:
        wait_status(alice, sid, {"RUNNING"})
        url = _notebook_and_link(alice, sid)
        port = apps_gateway["BACKEND_ENDPOINT"].rsplit(":", 1)[1]
        assert url.startswith(f"http://{sid}-jupyter.apps.bridge.test:{port}/proxy/{sid}/jupyter/"), url
        browser = _browser("--host-resolver-rules=MAP *.apps.bridge.test 127.0.0.1")
        try:
            _run_the_cell(browser, url)
            cookies = browser.get_cookies()
            assert cookies and all(c["domain"] == f"{sid}-jupyter.apps.bridge.test" for c in cookies), cookies
        finally:
            browser.quit()
        # the gateway's own origin does not serve the app, even with the app's cookie
        cookie = {c["name"]: c["value"] for c in cookies}
        r = httpx.get(f"{apps_gateway['BACKEND_ENDPOINT']}/proxy/{sid}/jupyter/api/status", cookies=cookie)
        assert r.status_code == 404 and "own host" in r.json()["msg"]
    finally:
        alice("DELETE", f"/session/{sid}")


def test_a_second_user_is_refused_on_every_path(gateway, jupyter_session):
    alice, bob, sid = Api(gateway), Api(gateway, "BOB_"), jupyter_session
    base_ws = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://")
    assert {a["name"] for a in alice("GET", f"/stream/session/{sid}/apps").json()} >= {"jupyter", "sshd", "ttyd"}
    for method, path, body in (
        ("GET", f"/stream/session/{sid}/apps", None),
        ("POST", f"/session/{sid}/start-service", {"app": "jupyter"}),
        ("POST", f"/session/{sid}/shutdown-service", {"service_name": "jupyter"}),
        ("GET", f"/session/{sid}/tunnels", None),
    ):
        r = bob(method, path, body)
        assert r.status_code == 404 and r.json()["type"].endswith("/session-not-found"), (path, r.text)

    async def relay_works(who: str, kind: str, app: str) -> bool:
        path = f"/stream/session/{sid}/{kind}?app={app}"
        try:
            async with connect(base_ws + path, additional_headers=ws_headers(gateway, path, who)) as ws:
                await ws.send(f"GET /proxy/{sid}/{app}/api/status HTTP/1.0\r\n\r\n".encode())
                return b"200 OK" in await asyncio.wait_for(ws.recv(), 60)
        except Exception:
            return False

    for kind in ("tcpproxy", "httpproxy"):
        assert asyncio.run(relay_works("BACKEND_", kind, "jupyter")) is True
        assert asyncio.run(relay_works("BOB_", kind, "jupyter")) is False
        assert asyncio.run(relay_works("BACKEND_", kind, "no-such-app")) is False

    # the browser proxy: no cookie, a forged one, one for another app, or bob's keys: all refused
    token = alice("POST", f"/session/{sid}/start-service", {"app": "jupyter"}).json()["token"]
    status_url = f"{gateway['BACKEND_ENDPOINT']}/proxy/{sid}/jupyter/api/status"
    assert httpx.get(status_url, timeout=30).status_code == 401
    assert httpx.get(status_url, cookies={"bridge-app-token": token[:-2] + "xx"}, timeout=30).status_code == 401
    assert httpx.get(status_url.replace("/jupyter/", "/ttyd/"), cookies={"bridge-app-token": token},
                     timeout=30).status_code == 401
    assert httpx.get(status_url, cookies={"bridge-app-token": token}, timeout=60).status_code == 200
    bob_headers = ws_headers(gateway, f"/proxy/{sid}/jupyter/api/status", "BOB_")
    assert httpx.get(status_url, headers=bob_headers, timeout=30).status_code == 401

    # an admin of the domain may open the user's app (checked as the admin on every request)
    admin_url = Api(gateway, "ADMIN_")("POST", f"/session/{sid}/start-service", {"app": "jupyter"}).json()["url"]
    opened = httpx.get(admin_url.replace("/jupyter/?", "/jupyter/api/status?"), follow_redirects=True, timeout=60)
    assert opened.status_code == 200 and "kernels" in opened.json()

    # the kernel runner itself, reached directly on its node port, wants the session's secret
    runner = gateway_kernel_address(gateway, sid)
    r = httpx.post(f"http://{runner}/service", json={"name": "jupyter"}, timeout=30)
    assert r.status_code == 403


def gateway_kernel_address(gateway, sid: str) -> str:
    """host:port of a session's kernel runner, from the gateway's database (what an attacker on the node
    could find by scanning)."""
    import sqlite3

    config = Path(gateway["BRIDGE_CONFIG"]).read_text().splitlines()
    url = [line for line in config if line.strip().startswith("url")][0]
    path = url.split("sqlite+aiosqlite:///", 1)[1].strip().strip('"')
    with sqlite3.connect(path) as db:
        host, port = db.execute("SELECT kernel_host, kernel_port FROM sessions WHERE id = ?", (sid,)).fetchone()
    return f"{host}:{port}"


def test_the_gpu_group_reaches_its_kernels_through_ssh_forwarding(gateway):
    """The dev gateway's `gpu` resource group uses the SSH transport (via the login node, as the session's
    user): code execution and the tcpproxy work the same, and the gateway's log shows the forward."""
    alice = Api(gateway)
    r = alice("POST", "/session", {"name": "fwd-" + uuid.uuid4().hex[:6], "image": gateway["BRIDGE_DEV_JUPYTER_IMAGE"],
                                   "config": {"scaling_group": "gpu"}})
    assert r.status_code in (200, 201), r.text
    sid = r.json()["sessionId"]
    try:
        assert wait_status(alice, sid, {"RUNNING"})["scalingGroup"] == "gpu"
        run = alice("POST", f"/session/{sid}", {"mode": "query", "runId": "f", "code": "print(6 * 7)"}).json()
        assert run["result"]["console"] == [["stdout", "42\n"]]
        base_ws = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://")

        async def status() -> bytes:
            path = f"/stream/session/{sid}/tcpproxy?app=jupyter"
            async with connect(base_ws + path, additional_headers=ws_headers(gateway, path, "BACKEND_")) as ws:
                await ws.send(f"GET /proxy/{sid}/jupyter/api/status HTTP/1.0\r\n\r\n".encode())
                return await asyncio.wait_for(ws.recv(), 90)

        assert b"200 OK" in asyncio.run(status())
        log = (Path(gateway["BRIDGE_CONFIG"]).parent / "gateway.log").read_text()
        assert f"as alice (session {sid})" in log and "ssh forward 127.0.0.1:" in log
    finally:
        alice("DELETE", f"/session/{sid}")


def test_preopen_ports_reach_what_the_user_runs_there(gateway):
    alice = Api(gateway)
    r = alice("POST", "/session", {"name": "pre-" + uuid.uuid4().hex[:6], "image": gateway["BRIDGE_DEV_IMAGE"],
                                   "config": {"preopen_ports": [8765]}})
    assert r.status_code in (200, 201), r.text
    sid = r.json()["sessionId"]
    base_ws = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://")
    path = f"/stream/session/{sid}/tcpproxy?app=8765"

    async def get_root() -> bytes:
        async with connect(base_ws + path, additional_headers=ws_headers(gateway, path, "BACKEND_")) as ws:
            await ws.send(b"GET / HTTP/1.0\r\n\r\n")
            return await asyncio.wait_for(ws.recv(), 30)

    try:
        ports = {p["name"]: p for p in alice("GET", f"/stream/session/{sid}/apps").json()}
        assert ports["8765"]["protocol"] == "preopen"
        with pytest.raises(Exception, match="nothing listens on port 8765"):   # refused with the reason
            asyncio.run(get_root())
        start = "import subprocess, sys; srv = subprocess.Popen([sys.executable, '-m', 'http.server', '8765'])"
        alice("POST", f"/session/{sid}", {"mode": "query", "runId": "s", "code": start})
        deadline = time.monotonic() + 30
        while True:
            try:
                assert b"200" in asyncio.run(get_root()).split(b"\r\n")[0]
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", 8765), timeout=5):   # the node's loopback: anyone's
            pass
        bad = alice("POST", "/session", {"name": "pre2-" + uuid.uuid4().hex[:6], "image": gateway["BRIDGE_DEV_IMAGE"],
                                         "config": {"preopen_ports": [2200]}})
        assert bad.status_code == 400 and "preopen_ports" in bad.json()["msg"]
    finally:
        alice("DELETE", f"/session/{sid}")


def test_ttyd_in_a_browser_tab_and_services_stop_on_request(gateway, jupyter_session):
    """ttyd's page and its WebSocket through the browser proxy; shutdown-service stops a service, and the
    next circuit starts it again."""
    alice, sid = Api(gateway), jupyter_session
    started = alice("POST", f"/session/{sid}/start-service", {"app": "ttyd"})
    assert started.status_code == 200, started.text
    with httpx.Client(timeout=60, follow_redirects=True) as browser:
        page = browser.get(started.json()["url"])
        assert page.status_code == 200 and "ttyd" in page.text
        assert browser.get(f"{gateway['BACKEND_ENDPOINT']}/proxy/{sid}/ttyd/token").status_code == 200
        cookie = browser.cookies.get("bridge-app-token")
    base_ws = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://")

    async def shell() -> str:
        async with connect(f"{base_ws}/proxy/{sid}/ttyd/ws", subprotocols=["tty"],
                           additional_headers={"Cookie": f"bridge-app-token={cookie}"}) as ws:
            await ws.send(json.dumps({"AuthToken": "", "columns": 80, "rows": 24}))
            await ws.send(b"0" + b"echo ttyd-$((6*7))\r")   # ttyd's protocol: '0' + input
            seen = ""
            deadline = asyncio.get_running_loop().time() + 30
            while "ttyd-42" not in seen and asyncio.get_running_loop().time() < deadline:
                msg = await asyncio.wait_for(ws.recv(), 30)
                if isinstance(msg, bytes) and msg[:1] == b"0":
                    seen += msg[1:].decode(errors="replace")
            return seen

    assert "ttyd-42" in asyncio.run(shell())
    assert alice("POST", f"/session/{sid}/shutdown-service", {"service_name": "ttyd"}).json() == {"stopped": True}
    assert alice("POST", f"/session/{sid}/shutdown-service", {"service_name": "ttyd"}).json() == {"stopped": False}
    assert alice("POST", f"/session/{sid}/start-service", {"app": "ttyd"}).status_code == 200


def test_bai_bridge_open_prints_a_working_browser_url(gateway, jupyter_session):
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "BRIDGE_"))},
           "BACKEND_ENDPOINT": gateway["BACKEND_ENDPOINT"], "BACKEND_ACCESS_KEY": gateway["BACKEND_ACCESS_KEY"],
           "BACKEND_SECRET_KEY": gateway["BACKEND_SECRET_KEY"]}
    done = subprocess.run([sys.executable, "-m", "bridge", "open", jupyter_session], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    lab = httpx.get(url.replace("/jupyter/?", "/jupyter/lab?"), follow_redirects=True, timeout=60)
    assert lab.status_code == 200 and "JupyterLab" in lab.text
    bob = {**env, "BACKEND_ACCESS_KEY": gateway["BOB_ACCESS_KEY"], "BACKEND_SECRET_KEY": gateway["BOB_SECRET_KEY"]}
    refused = subprocess.run([sys.executable, "-m", "bridge", "open", jupyter_session], env=bob, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1 and "HTTP 404" in refused.stderr


def test_open_circuits_close_when_the_session_ends(gateway):
    alice = Api(gateway)
    sid = alice("POST", "/session", {"name": "end-" + uuid.uuid4().hex[:6],
                                     "image": gateway["BRIDGE_DEV_IMAGE"]}).json()["sessionId"]
    wait_status(alice, sid, {"RUNNING"})
    base_ws = gateway["BACKEND_ENDPOINT"].replace("http://", "ws://")
    path = f"/stream/session/{sid}/tcpproxy?app=sshd"

    async def hold_then_end() -> float:
        async with connect(base_ws + path, additional_headers=ws_headers(gateway, path, "BACKEND_")) as ws:
            banner = await asyncio.wait_for(ws.recv(), 30)          # sshd speaks first
            assert banner.startswith(b"SSH-2.0-")
            assert len(alice("GET", f"/session/{sid}/tunnels").json()["open"]) == 1
            t0 = time.monotonic()
            await asyncio.to_thread(alice, "DELETE", f"/session/{sid}")
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 60)
            except Exception:   # closed by the gateway (or the kernel going away), not by us
                return time.monotonic() - t0

    assert asyncio.run(hold_then_end()) < 30
    assert alice("GET", f"/session/{sid}/tunnels").json()["open"] == []


@pytest.fixture(scope="module")
def private_gateway(gateway, tmp_path_factory):
    """A second gateway whose kernels have a network of their own (sessions.kernel_network = private)."""
    work = tmp_path_factory.mktemp("private-net")
    state = work / "state"
    up = bai_bridge("dev", "up", "--no-webui", "--state-dir", str(state), "--port", str(free_port()), "--no-first-job",
                    cwd=work,
                    env={"BRIDGE_SESSIONS__KERNEL_NETWORK": "private"})
    assert up.returncode == 0, up.stdout + up.stderr
    yield read_env(state / "env")
    bai_bridge("dev", "down", "--state-dir", str(state), cwd=work)
    cancel_tagged(Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")),
                  f"bridge-{(state / 'instance-id').read_text().strip()}:")


def test_a_private_kernel_network_keeps_preopen_ports_from_the_node(private_gateway):
    """Preopen ports are the user's own listeners: on the node's loopback any user of the node reaches them
    (above). With kernel_network = private the kernel has a loopback of its own, and the gateway reaches
    the runner through a relay on the node."""
    alice = Api(private_gateway)
    port = free_port()
    r = alice("POST", "/session", {"name": "priv-" + uuid.uuid4().hex[:6], "image": private_gateway["BRIDGE_DEV_IMAGE"],
                                   "config": {"preopen_ports": [port]}})
    assert r.status_code == 201 and r.json()["status"] == "RUNNING", r.text
    sid = r.json()["sessionId"]
    base_ws = private_gateway["BACKEND_ENDPOINT"].replace("http://", "ws://")
    path = f"/stream/session/{sid}/tcpproxy?app={port}"

    async def get_root() -> bytes:
        async with connect(base_ws + path, additional_headers=ws_headers(private_gateway, path, "BACKEND_")) as ws:
            await ws.send(b"GET / HTTP/1.0\r\n\r\n")
            return await asyncio.wait_for(ws.recv(), 30)

    try:
        start = f"import subprocess, sys; srv = subprocess.Popen([sys.executable, '-m', 'http.server', '{port}'])"
        res = alice("POST", f"/session/{sid}", {"mode": "query", "runId": "s", "code": start}).json()
        assert res["result"]["status"] == "finished", res
        deadline = time.monotonic() + 30
        while True:
            try:
                assert b"200" in asyncio.run(get_root()).split(b"\r\n")[0]
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with pytest.raises(ConnectionRefusedError):   # a neighbour on the node finds nothing there
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        gw_port = int(private_gateway["BACKEND_ENDPOINT"].rsplit(":", 1)[1])
        probe = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {gw_port}), timeout=5)\n"
                 "    print('reached')\nexcept OSError as e:\n    print(type(e).__name__)\n")
        res = alice("POST", f"/session/{sid}", {"mode": "query", "runId": "p", "code": probe}).json()
        assert res["result"]["console"] == [["stdout", "ConnectionRefusedError\n"]], res   # nor out of it
    finally:
        alice("DELETE", f"/session/{sid}")
