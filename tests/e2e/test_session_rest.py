"""Session routes the CLI does not cover, on the wire of the running gateway: rename, match, dependency
graph, info with its Slurm fields, restart, callbacks, status filters of the GraphQL listing."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from bridge.api import signing

pytestmark = pytest.mark.cluster


class Api:
    def __init__(self, env: dict[str, str], who: str = "BACKEND_") -> None:
        self.base = env["BACKEND_ENDPOINT"]
        self.access, self.secret = env[who + "ACCESS_KEY"], env[who + "SECRET_KEY"]
        self.host = urlsplit(self.base).netloc

    def __call__(self, method: str, path: str, body: object = None) -> httpx.Response:
        headers = signing.auth_headers(self.access, self.secret, method=method, path_qs=path, host=self.host,
                                       content_type="application/json", version="v6.20220615")
        return httpx.request(method, self.base + path, headers=headers, timeout=120,
                             content=json.dumps(body) if body is not None else None)


def run_query(api: Api, sid: str, code: str, run_id: str = "q") -> str:
    """Run code in query mode to its end (a run that outlasts one call goes on with empty code, as
    `continued`) and return its stdout and stderr together."""
    res = api("POST", f"/session/{sid}", {"mode": "query", "runId": run_id, "code": code}).json()
    out = ""
    for _ in range(120):
        out += "".join(text for kind, text in res["result"]["console"] if kind in ("stdout", "stderr"))
        if res["result"]["status"] == "finished":
            return out
        res = api("POST", f"/session/{sid}", {"mode": "query", "runId": run_id, "code": ""}).json()
    raise AssertionError(f"the run never finished: {res}")


def wait_status(api: Api, ref: str, statuses: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    info = {}
    while time.monotonic() < deadline:
        info = api("GET", f"/session/{ref}").json()
        if info.get("status") in statuses:
            return info
        time.sleep(0.3)
    raise AssertionError(f"{ref} never reached {statuses}: {info}")


def test_rename_match_info_restart(gateway):
    api = Api(gateway)
    name = "rest-" + uuid.uuid4().hex[:6]
    r = api("POST", "/session", {"name": name, "image": "python", "config": {"resources": {"cpu": "1"}}})
    assert r.status_code == 201 and r.json()["status"] == "RUNNING"
    sid = r.json()["sessionId"]
    again = api("POST", "/session", {"name": name, "image": "python"})
    assert again.status_code == 200 and again.json() == {**again.json(), "sessionId": sid, "created": False}
    dup = api("POST", "/session", {"name": name, "image": "python", "reuseIfExists": False})
    assert dup.status_code == 400 and dup.json()["data"]["existingSessionId"] == sid
    info = api("GET", f"/session/{name}").json()
    assert info["slurm"]["user"] == "alice" and info["slurm"]["jobId"] and info["slurm"]["nodes"]
    assert info["statusHistory"]["PENDING"] <= info["statusHistory"]["RUNNING"]
    assert api("GET", f"/session/_/match?id={name[:7]}").json()["matches"][0]["id"] == sid
    assert api("POST", f"/session/{name}/rename", {"name": name + "-b"}).status_code == 204
    assert api("GET", f"/session/{name}-b").json()["sessionId"] == sid
    assert Api(gateway, "BOB_")("GET", f"/session/{sid}").status_code == 404  # not bob's
    job = info["slurm"]["jobId"]
    assert api("PATCH", f"/session/{sid}").status_code == 204
    restarted = wait_status(api, sid, {"RUNNING"})
    assert restarted["slurm"]["jobId"] != job and "RESTARTING" in restarted["statusHistory"]
    assert api("DELETE", f"/session/{sid}").json()["status"] == "TERMINATING"
    assert wait_status(api, sid, {"TERMINATED"})["statusInfo"] == "user-requested"


def test_dependency_graph_and_status_filters(gateway):
    api = Api(gateway)
    a, b = "ga-" + uuid.uuid4().hex[:6], "gb-" + uuid.uuid4().hex[:6]
    api("POST", "/session", {"name": a, "image": "python", "type": "batch", "startupCommand": "true",
                             "enqueueOnly": True})
    api("POST", "/session", {"name": b, "image": "python", "type": "batch", "startupCommand": "exit 1",
                             "enqueueOnly": True, "dependencies": [a]})
    graph = api("GET", f"/session/{b}/dependency-graph").json()
    assert graph["session_name"] == b and graph["depends_on"][0]["session_name"] == a
    wait_status(api, b, {"TERMINATED"})
    q = ("query($s: String) { compute_session_list(limit: 100, offset: 0, status: $s, order: \"-created_at\") "
         "{ items { name status result dependencies { name } } total_count } }")
    dead = api("POST", "/admin/gql", {"query": q, "variables": {"s": "CANCELLED,TERMINATED,NO_SUCH_STATUS"}}).json()
    items = {i["name"]: i for i in dead["data"]["compute_session_list"]["items"]}
    assert items[a]["result"] == "SUCCESS" and items[b]["result"] == "FAILURE"
    assert items[b]["dependencies"] == [{"name": a}]
    running = api("POST", "/admin/gql", {"query": q, "variables": {"s": "RUNNING"}}).json()
    assert a not in {i["name"] for i in running["data"]["compute_session_list"]["items"]}


def test_callback_url_receives_the_lifecycle(gateway):
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = Api(gateway)
        url = f"http://127.0.0.1:{server.server_port}/hook"
        r = api("POST", "/session", {"name": "cb-" + uuid.uuid4().hex[:6], "image": "python", "type": "batch",
                                     "startupCommand": "sleep 1", "callback_url": url})
        sid = r.json()["sessionId"]
        wait_status(api, sid, {"TERMINATED"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e["event"] == "session_terminated" for e in received):
            time.sleep(0.2)
        events = [e["event"] for e in received if e["session_id"] == sid]
        assert "session_started" in events and events[-1] == "session_terminated", events
    finally:
        server.shutdown()
        server.server_close()


def test_an_ended_sessions_credentials_leave_its_folder(gateway):
    """Issue 12.6: the key pair's SSH private key (id_container), the kernel secret and sshd's host key stayed
    in every session folder after the session ended. The user's own files stay."""
    import os
    from pathlib import Path

    api = Api(gateway)
    r = api("POST", "/session", {"name": "scrub-" + uuid.uuid4().hex[:6], "image": "python"})
    assert r.status_code == 201, r.text
    sid = r.json()["sessionId"]
    folder = Path(os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")) / "srv/shared/bridge/alice" / sid
    assert (folder / "id_container").exists() and (folder / ".bridge" / "secret").exists()
    assert "kept" in run_query(api, sid, "open('result.txt', 'w').write('kept'); print('kept')")
    api("DELETE", f"/session/{sid}")
    wait_status(api, sid, {"TERMINATED"})
    deadline = time.monotonic() + 20
    while (folder / "id_container").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    for gone in ("id_container", ".bridge/secret", ".bridge/authorized_keys"):
        assert not (folder / gone).exists(), gone
    assert (folder / "result.txt").read_text() == "kept"


def test_a_session_killed_outright_leaves_nothing_on_its_node(gateway):
    """Issue 17: whatever ends a job (here `scancel --signal=KILL --full`, which gives the job script no chance
    to clean up), nothing of the session stays: Slurm's cgroup (proctrack/cgroup) takes every process of the
    job, Apptainer's included; the gateway sees the end and removes the credentials from the folder, as the
    user; and the folder keeps no socket or port file of the kernel runner."""
    import os
    import subprocess
    from pathlib import Path

    root = os.environ.get("BRIDGE_DEV_ROOT", "/srv/slurmroot")
    api = Api(gateway)
    r = api("POST", "/session", {"name": "killed-" + uuid.uuid4().hex[:6], "image": "python"})
    assert r.status_code == 201, r.text
    sid = r.json()["sessionId"]
    assert "up" in run_query(api, sid, "print('up')")   # the kernel runner serves, inside Apptainer
    job = api("GET", f"/session/{sid}").json()["containerId"]
    listed = subprocess.run(["chroot", root, "scontrol", "listpids", job], capture_output=True, text=True).stdout
    pids = [int(line.split()[0]) for line in listed.splitlines()[1:] if line.split() and line.split()[0].isdigit()]
    assert len(pids) >= 3, listed   # the job script, Apptainer, the kernel runner...
    subprocess.run(["chroot", root, "scancel", "--signal=KILL", "--full", job], check=True)
    info = wait_status(api, sid, {"TERMINATED", "CANCELLED", "ERROR"}, timeout=120)
    assert info["status"] in ("TERMINATED", "CANCELLED"), info
    folder = Path(root) / "srv/shared/bridge/alice" / sid
    deadline = time.monotonic() + 30
    left: list[str] = ["?"]
    while time.monotonic() < deadline:
        procs = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
        left = [p for p in (folder / ".bridge").iterdir() if p.name != "runner.py"] if (folder / ".bridge").exists() \
            else []
        if not procs and not left and not (folder / "id_container").exists():
            break
        time.sleep(0.5)
    assert not procs, f"processes of the session's job are still running: {procs}"
    assert not left and not (folder / "id_container").exists(), f"left in the folder: {left}"
