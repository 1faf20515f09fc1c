"""The official WebUI 23.09, served by the official webserver in front of the gateway, driven by Debian's
headless Chromium: a user logs in through the login form and every page they have answers with real data;
the app launcher's path (start-service through the webserver, then the gateway as its "v2" app proxy)
opens JupyterLab and runs a cell; an admin's pages answer too. Every call the WebUI makes through the
webserver is recorded, and one answered 404, 405 or 5xx, or a GraphQL document the gateway refuses, fails
the test. Screenshots of each step go to $BRIDGE_TEST_ARTIFACTS/webui (else the test's tmp folder)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_app_proxy import NOTEBOOK, _browser, _run_the_cell
from tests.e2e.test_session_rest import Api, wait_status

pytestmark = pytest.mark.cluster

USER_PAGES = ("summary", "job", "session", "data", "statistics", "usersettings")
ADMIN_PAGES = ("credential", "environment", "agent", "settings", "maintenance", "information")
# answers the WebUI expects and handles: the open-source manager has no license (404 means "none")
EXPECTED = {("GET", "/func/license", 404)}
FIND = "let e = document; for (const s of arguments[0]) { e = (e.shadowRoot || e).querySelector(s); " \
       "if (!e) return null; } return e;"


class WebUI:
    """A browser on the WebUI that records every /func and /server call and its answer."""

    def __init__(self, base: str, shots: Path) -> None:
        self.base, self.shots = base, shots
        self.driver = _browser(network_log=True)
        self.driver.execute_cdp_cmd("Network.enable", {})
        self.calls: list[tuple[str, str, int]] = []
        self.who = "anonymous"
        self.gql_errors: list[str] = []

    def record(self) -> None:
        """What the WebUI asked since the last look (Chrome's network log)."""
        methods: dict[str, str] = {}
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            params = msg.get("params", {})
            if msg["method"] == "Network.requestWillBeSent":
                methods[params["requestId"]] = params["request"]["method"]
            elif msg["method"] == "Network.responseReceived":
                url, status = params["response"]["url"], params["response"]["status"]
                path = "/" + url.split("/", 3)[3].split("?")[0] if url.count("/") >= 3 else url
                if not path.startswith(("/func/", "/server/")):
                    continue
                self.calls.append((methods.get(params["requestId"], "?"), path, status))
                if path == "/func/admin/gql":
                    try:
                        body = self.driver.execute_cdp_cmd("Network.getResponseBody",
                                                           {"requestId": params["requestId"]})["body"]
                        self.gql_errors += [e.get("message", "") for e in json.loads(body).get("errors") or []]
                    except Exception:  # noqa: BLE001 - a body Chrome no longer holds: its status was recorded
                        pass

    def failures(self) -> list[str]:
        self.record()
        bad = [f"{m} {p} -> {s}" for m, p, s in self.calls
               if (s in (404, 405) or s >= 500) and (m, p, s) not in EXPECTED]
        return bad + [f"GraphQL: {e}" for e in self.gql_errors if not e.startswith("Forbidden")]

    def find(self, *selectors: str):
        return self.driver.execute_script(FIND, list(selectors))

    def wait(self, what, timeout: float = 60, message: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = what()
            if got:
                return got
            time.sleep(0.5)
        self.shot("timeout")
        raise AssertionError(f"timed out: {message}")

    def shot(self, name: str) -> None:
        self.driver.save_screenshot(str(self.shots / f"{self.who}-{name}.png"))

    def log_in(self, email: str, password: str) -> None:
        self.who = email.split("@")[0]
        self.driver.get(self.base + "/")
        self.wait(lambda: self.find("backend-ai-webui", "#login-panel", "#id_user_id"), message="the login form")
        self.shot("login")
        self.driver.execute_script("""
            const f = (p) => {
              let e = document; for (const s of p) e = (e.shadowRoot || e).querySelector(s); return e; };
            for (const [id, value] of [["#id_user_id", arguments[0]], ["#id_password", arguments[1]]]) {
              const field = f(["backend-ai-webui", "#login-panel", id]);
              field.value = value; field.dispatchEvent(new Event("input"));
            }
            f(["backend-ai-webui", "#login-panel", "#login-button"]).click();""", email, password)
        self.wait(lambda: self.driver.current_url.endswith("/summary")
                  and self.driver.execute_script("return document.title") is not None, message="the summary")

    def visit(self, page: str, settle_s: float = 4) -> None:
        """Go to a page as its menu does: inside the app (a reload would mean logging in again)."""
        self.driver.execute_script("window.history.pushState({}, '', arguments[0]);"
                                   "window.dispatchEvent(new PopStateEvent('popstate', {state: {}}));", f"/{page}")
        self.wait(lambda: self.driver.current_url.endswith(f"/{page}"), message=page)
        time.sleep(settle_s)   # the page's own calls: they are recorded and judged, not waited for one by one
        self.shot(page)

    def fetch(self, method: str, path: str, body: object = None) -> dict:
        """A call from the WebUI's own page, through the webserver, as its code makes it (with the login
        session's id, which the WebUI sends as X-BackendAI-SessionID)."""
        got = self.driver.execute_async_script("""
            const done = arguments[arguments.length - 1];
            const headers = {"Content-Type": "application/json", "X-BackendAI-Version": "v6.20220615"};
            if (arguments[3]) headers["X-BackendAI-SessionID"] = arguments[3];
            fetch(arguments[0], {method: arguments[1], credentials: "include", headers: headers,
                                 body: arguments[2] === null ? undefined : JSON.stringify(arguments[2])})
              .then(async r => done({status: r.status, body: await r.text()})).catch(e => done({error: String(e)}));
        """, path, method, body, self.session_id if path.startswith("/func/") else None)
        return got

    @property
    def session_id(self) -> str:
        """The login session (what the WebUI's app launcher sends as login_session_token)."""
        return self.wait(lambda: self.driver.execute_script(
            "const c = globalThis.backendaiclient; return c && (c._loginSessionId || c._config?._session_id)"),
            message="the WebUI's login session")

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture
def webui(web, tmp_path):
    shots = Path(os.environ.get("BRIDGE_TEST_ARTIFACTS") or tmp_path) / "webui"
    shots.mkdir(parents=True, exist_ok=True)
    browser = WebUI(web["BRIDGE_DEV_WEBUI"], shots)
    browser.driver.implicitly_wait(0)
    yield browser
    browser.close()


def test_a_user_logs_in_every_page_answers_and_jupyterlab_opens_from_the_launcher(web, webui):
    webui.log_in("alice@example.com", "alice-dev-password")
    for page in USER_PAGES:
        webui.visit(page)
    # the app launcher's path, from the WebUI's page: start-service through the webserver (signed with
    # alice's keypair), then the gateway as the "v2" app proxy, then the app's URL in the browser
    alice = Api(web)
    made = alice("POST", "/session", {"name": "webui-" + uuid.uuid4().hex[:6],
                                      "image": web["BRIDGE_DEV_JUPYTER_IMAGE"]})
    assert made.status_code in (200, 201), made.text
    sid = made.json()["sessionId"]
    try:
        wait_status(alice, sid, {"RUNNING"}, 180)
        code = f"open('proxy-test.ipynb', 'w').write({json.dumps(NOTEBOOK)!r})"
        assert alice("POST", f"/session/{sid}", {"mode": "query", "code": code, "runId": "nb"}).status_code == 200
        webui.visit("job")
        found = webui.fetch("POST", "/func/admin/gql", {
            "query": "query($id: UUID!) { compute_session(id: $id) { scaling_group service_ports } }",
            "variables": {"id": sid}})
        assert found["status"] == 200 and "data" in json.loads(found["body"]), found
        scaling_group = json.loads(found["body"])["data"]["compute_session"]["scaling_group"]
        version = json.loads(webui.fetch("GET", f"/func/scaling-groups/{scaling_group}/wsproxy-version?group=default")
                             ["body"])
        assert version == {"wsproxy_version": "v2"}
        started = webui.fetch("POST", f"/func/session/{sid}/start-service",
                              {"app": "jupyter", "login_session_token": webui.session_id})
        assert started["status"] == 200, started
        token, proxy = json.loads(started["body"])["token"], json.loads(started["body"])["wsproxy_addr"]
        added = webui.fetch("GET", f"{proxy}/v2/proxy/{token}/{sid}/add?app=jupyter&protocol=http")
        assert added.get("status") == 200, (added, proxy)                        # cross-origin, as the WebUI reads it
        _run_the_cell(webui.driver, json.loads(added["body"])["url"])
        webui.shot("jupyterlab")
    finally:
        alice("DELETE", f"/session/{sid}")
    assert webui.failures() == []


def test_an_admin_sees_the_admin_pages(web, webui):
    webui.log_in("admin@example.com", "hpcadmin-dev-password")
    for page in (*USER_PAGES[:2], *ADMIN_PAGES):
        webui.visit(page)
    assert webui.failures() == []
