"""The official WebUI 23.09, served by the official webserver in front of the gateway, driven by Debian's
headless Chromium through its own forms and buttons: a user logs in through the login form and every page
they have answers with real data; the user starts an interactive session from the session launcher
(resource group, preset, image), opens JupyterLab from the session list's app launcher and runs a cell,
opens the web terminal and runs a command, reads the session's logs and terminates it; a batch session
from the launcher ends SUCCESS; an admin's pages answer too. Every call the WebUI makes through the
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
LAUNCHER = ("backend-ai-webui", "backend-ai-session-view", "backend-ai-session-launcher")
RUNNING = ("backend-ai-webui", "backend-ai-session-view", "#running-jobs")
APPS = ("backend-ai-webui", "backend-ai-app-launcher")
SCREEN = ("const b = window.term.buffer.active, out = []; for (let i = 0; i < b.length; i++) "
          "out.push(b.getLine(i).translateToString(true)); return out.join('\\n');")   # ttyd's xterm.js
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

    def is_open(self, *dialog: str) -> bool:
        return bool(self.driver.execute_script("return !!(arguments[0] && arguments[0].open)", self.find(*dialog)))

    def choose(self, *select: str, value: str) -> None:
        """Open an mwc-select and click its item of `value`, as a user does."""
        item = (*select[:-1], f'{select[-1]} mwc-list-item[value="{value}"]')
        self.wait(lambda: self.find(*item), 30, f"{value} among {select[-1]}")
        self.find(*select).click()
        time.sleep(0.7)   # the menu's opening animation
        self.find(*item).click()
        self.wait(lambda: self.driver.execute_script("return arguments[0].value", self.find(*select)) == value, 10,
                  f"{value} chosen in {select[-1]}")

    def launch(self, name: str, image: str, preset: str, command: str | None = None) -> None:
        """Start a session from the session page's launcher: Start, the session type, the image and a name,
        on to the resources (the resource group, a preset), then Confirm and launch (twice: the first goes
        to the summary), and Launch in the no-folder-mounted confirmation. `command` makes it a batch one."""
        self.find(*LAUNCHER, "#launch-session").click()
        self.wait(lambda: self.is_open(*LAUNCHER, "#new-session-dialog"), 30, "the session launcher")
        self.choose(*LAUNCHER, "#session-type", value="batch" if command else "interactive")
        self.choose(*LAUNCHER, "#environment", value=image)
        self.find(*LAUNCHER, "#session-name", "input").clear()   # the launcher keeps the last one typed
        self.find(*LAUNCHER, "#session-name").send_keys(name)
        if command:
            editor = (*LAUNCHER, "#command-editor", "wc-codemirror")
            self.find(*editor, ".CodeMirror-scroll").click()
            self.find(*editor, ".CodeMirror textarea").send_keys(command)
            assert self.driver.execute_script("return arguments[0].getValue()",
                                              self.find(*LAUNCHER, "#command-editor")) == command
        self.shot(f"launcher-{'batch' if command else 'interactive'}")
        for _ in range(2):   # past the folders to the resources
            self.find(*LAUNCHER, "#next-button").click()
            time.sleep(1)
        self.choose(*LAUNCHER, "#scaling-groups", value="debug")
        self.choose(*LAUNCHER, "#resource-templates", value=preset)
        self.shot(f"launcher-resources-{'batch' if command else 'interactive'}")
        self.find(*LAUNCHER, "#launch-button").click()
        time.sleep(1.5)
        self.find(*LAUNCHER, "#launch-button").click()
        self.wait(lambda: self.is_open(*LAUNCHER, "#launch-confirmation-dialog"), 10, "the launch confirmation")
        self.find(*LAUNCHER, "#launch-confirmation-button").click()
        self.wait(lambda: not self.is_open(*LAUNCHER, "#new-session-dialog"), 180, "the launch")

    def control(self, session: str, button: str):
        """A button of the running list's Control column, in the row of `session` (once it is listed)."""
        return self.wait(lambda: self.driver.execute_script(
            "for (const c of arguments[0].shadowRoot.querySelectorAll('#controls'))"
            "  if (c['session-name'] === arguments[1]) return c.querySelector(arguments[2]); return null;",
            self.find(*RUNNING), session, button), 60, f"{button} of {session} in the session list")

    def new_tab(self, before: list[str]) -> str:
        """The tab the WebUI opened (an app's), switched to."""
        self.wait(lambda: len(self.driver.window_handles) > len(before), 60, "the app's tab")
        tab = next(h for h in self.driver.window_handles if h not in before)
        self.driver.switch_to.window(tab)
        return tab

    def close(self) -> None:
        self.driver.quit()


@pytest.fixture(scope="module")
def preset(web) -> str:
    """A resource preset for the launcher to offer (a site's admin makes some; the dev gateway has none)."""
    name = "webui-" + uuid.uuid4().hex[:6]
    made = Api(web, "ADMIN_")("POST", "/admin/gql", {
        "query": "mutation($n: String!, $p: CreateResourcePresetInput!) { create_resource_preset(name: $n, "
                 "props: $p) { ok msg } }",
        "variables": {"n": name, "p": {"resource_slots": json.dumps({"cpu": "1", "mem": "1g"}),
                                       "shared_memory": "64m"}}}).json()
    assert made["data"]["create_resource_preset"]["ok"], made
    yield name
    Api(web, "ADMIN_")("POST", "/admin/gql", {"query": "mutation($n: String!) { delete_resource_preset(name: $n) "
                                                       "{ ok } }", "variables": {"n": name}})


@pytest.fixture
def webui(web, tmp_path):
    shots = Path(os.environ.get("BRIDGE_TEST_ARTIFACTS") or tmp_path) / "webui"
    shots.mkdir(parents=True, exist_ok=True)
    browser = WebUI(web["BRIDGE_DEV_WEBUI"], shots)
    browser.driver.implicitly_wait(0)
    yield browser
    browser.close()


def test_a_user_logs_in_and_every_page_answers(web, webui):
    webui.log_in("alice@example.com", "alice-dev-password")
    for page in USER_PAGES:
        webui.visit(page)
    assert webui.failures() == []


def test_a_user_launches_a_session_opens_jupyterlab_and_a_terminal_reads_its_logs_and_ends_it(web, webui, preset):
    alice, name = Api(web), "wu-" + uuid.uuid4().hex[:6]
    webui.log_in("alice@example.com", "alice-dev-password")
    webui.visit("job", settle_s=2)
    webui.launch(name, "local/" + web["BRIDGE_DEV_JUPYTER_IMAGE"], preset)
    sid = webui.wait(lambda: webui.driver.execute_script(
        "for (const c of arguments[0].shadowRoot.querySelectorAll('#controls'))"
        "  if (c['session-name'] === arguments[1]) return c['session-uuid'];", webui.find(*RUNNING), name),
        60, f"{name} in the session list")
    main = webui.driver.current_window_handle
    try:
        info = wait_status(alice, sid, {"RUNNING"}, 180)
        assert info["scalingGroup"] == "debug", info
        # the launcher opens the app launcher by itself once the session runs; closed, to open it from the list
        webui.wait(lambda: webui.is_open(*APPS, "#app-dialog"), 60, "the app launcher after the launch")
        webui.find(*APPS, "#app-dialog", "mwc-icon-button[icon=close]").click()
        webui.wait(lambda: "RUNNING" in webui.find(*RUNNING).text, 60, "RUNNING in the session list")
        webui.shot("session-running")

        # JupyterLab from the list's app launcher, in the tab the WebUI opens; the notebook is written through
        # the API (typing one into JupyterLab is not the WebUI's part)
        code = f"open('proxy-test.ipynb', 'w').write({json.dumps(NOTEBOOK)!r})"
        assert alice("POST", f"/session/{sid}", {"mode": "query", "code": code, "runId": "nb"}).status_code == 200
        webui.control(name, "[icon=apps]").click()
        webui.wait(lambda: webui.is_open(*APPS, "#app-dialog"), 30, "the app launcher")
        webui.shot("app-launcher")
        webui.driver.execute_script("return [...arguments[0].shadowRoot.querySelectorAll('#app-dialog .apps')]"
                                    ".find(b => b['app-name'] === 'jupyterlab')", webui.find(*APPS)).click()
        webui.new_tab([main])
        webui.wait(lambda: "/jupyterlab/lab" in webui.driver.current_url, 60, "JupyterLab in its tab")
        lab = webui.driver.current_url.split("/lab", 1)[0]
        _run_the_cell(webui.driver, lab + "/lab/tree/proxy-test.ipynb")
        webui.shot("jupyterlab")
        webui.driver.close()
        webui.driver.switch_to.window(main)

        # the web terminal (ttyd), from the list's terminal button
        webui.control(name, "mwc-icon-button:nth-of-type(2)").click()
        webui.new_tab([main])
        webui.wait(lambda: "/ttyd/" in webui.driver.current_url and webui.driver.execute_script(
            "return !!(window.term && document.querySelector('.xterm-helper-textarea'))"), 60, "the terminal")
        from selenium.webdriver.common.by import By

        webui.wait(lambda: webui.driver.execute_script(SCREEN).strip(), 30, "the shell's prompt")
        webui.driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea").send_keys(
            "echo hello-$((6*7)) uid=$(id -u)\n")
        screen = webui.wait(lambda: "hello-42 uid=" in webui.driver.execute_script(SCREEN)
                            and webui.driver.execute_script(SCREEN), 30, "the command's output")
        assert "hello-42 uid=1001" in screen, screen          # alice's own uid on the node
        webui.shot("terminal")
        webui.driver.close()
        webui.driver.switch_to.window(main)
        if webui.is_open(*APPS, "#terminal-guide"):           # the WebUI's tips, shown on a first terminal
            webui.find(*APPS, "#terminal-guide", "mwc-icon-button[icon=close]").click()

        # the session's logs
        webui.control(name, "[icon=assignment]").click()
        view = RUNNING   # the list's dialogs are its own
        webui.wait(lambda: webui.is_open(*view, "#work-dialog"), 30, "the logs dialog")
        logs = webui.wait(lambda: webui.find(*view, "#work-area").text, 30, "the logs")
        assert f"session {sid}" in logs and "kernel runner listening" in logs, logs
        webui.shot("logs")
        webui.find(*view, "#work-dialog", "mwc-icon-button[icon=close]").click()

        # terminated from the list
        webui.control(name, "[icon=power_settings_new]").click()
        webui.wait(lambda: webui.is_open(*view, "#terminate-session-dialog"), 30, "the terminate dialog")
        webui.find(*view, "#terminate-session-dialog mwc-button.ok").click()
        wait_status(alice, sid, {"TERMINATED"}, 120)
        webui.wait(lambda: name not in webui.find(*RUNNING).text, 60, "the session gone from the running list")
        webui.shot("terminated")
    finally:
        if len(webui.driver.window_handles) > 1:
            webui.driver.switch_to.window(main)
        alice("DELETE", f"/session/{sid}")
    assert webui.failures() == []


def test_a_batch_session_from_the_launcher_ends_success(web, webui, preset):
    alice, name = Api(web), "wb-" + uuid.uuid4().hex[:6]
    webui.log_in("alice@example.com", "alice-dev-password")
    webui.visit("job", settle_s=2)
    webui.launch(name, "local/" + web["BRIDGE_DEV_IMAGE"], preset, command="python3 -c 'print(6 * 7)'")
    listing = "query { compute_session_list(limit: 100, offset: 0) { items { id name type status result } } }"

    def ended():
        items = alice("POST", "/admin/gql", {"query": listing}).json()["data"]["compute_session_list"]["items"]
        mine = [s for s in items if s["name"] == name]
        return mine and mine[0]["status"] in ("TERMINATED", "CANCELLED", "ERROR") and mine[0]

    done = webui.wait(ended, 180, f"{name} to end")
    assert done["type"] == "batch" and (done["status"], done["result"]) == ("TERMINATED", "SUCCESS"), done
    logs = alice("GET", f"/session/{done['id']}/logs").json()
    assert "42" in json.dumps(logs), logs
    webui.visit("job", settle_s=2)
    webui.shot("batch-done")
    assert webui.failures() == []


def test_an_admin_sees_the_admin_pages(web, webui):
    webui.log_in("admin@example.com", "hpcadmin-dev-password")
    for page in (*USER_PAGES[:2], *ADMIN_PAGES):
        webui.visit(page)
    assert webui.failures() == []


def test_an_admin_creates_a_user_and_a_policy_through_the_forms_and_freezes_the_gateway(web, webui):
    admin, alice = Api(web, "ADMIN_"), Api(web)
    email, policy = f"wu-{uuid.uuid4().hex[:6]}@example.com", "wp-" + uuid.uuid4().hex[:6]
    webui.log_in("admin@example.com", "hpcadmin-dev-password")
    webui.visit("credential", settle_s=2)
    view = ("backend-ai-webui", "backend-ai-credential-view")
    from selenium.webdriver.common.keys import Keys

    def typed(*field: str, text: str) -> None:
        box = webui.find(*view, *field, "input")
        webui.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
        if not box.is_enabled():   # a limit field starts "Unlimited": its checkbox beside it unticked first
            webui.driver.execute_script("return arguments[0].parentElement.querySelector('mwc-checkbox')",
                                        webui.find(*view, *field)).click()
            webui.wait(lambda: webui.find(*view, *field, "input").is_enabled(), 10, f"{field} enabled")
        box = webui.find(*view, *field, "input")
        box.click()
        box.send_keys(Keys.CONTROL, "a")   # over what is there (emptied, a limit field turns Unlimited again)
        box.send_keys(text)

    # a user, through the Users tab's Create User dialog
    webui.find(*view, "#add-user").click()
    webui.wait(lambda: webui.is_open(*view, "#new-user-dialog"), 30, "the user creation dialog")
    typed("#id_user_email", text=email)
    typed("#id_user_name", text=email.split("@")[0])
    for field in ("#id_user_password", "#id_user_confirm"):
        typed(field, text="Webui-walk-pw1!")
    webui.shot("create-user")
    webui.find(*view, "#create-user-button").click()
    webui.wait(lambda: not webui.is_open(*view, "#new-user-dialog"), 30, "the user created")
    found = admin("POST", "/admin/gql", {"query": "query($e: String) { user(email: $e) { email role status } }",
                                         "variables": {"e": email}}).json()
    assert found["data"]["user"] == {"email": email, "role": "user", "status": "active"}, found
    webui.shot("user-created")

    # a keypair resource policy, through the Resource Policies tab's Create Policy dialog
    webui.find(*view, "mwc-tab[title=resource-policy-lists]").click()
    webui.find(*view, "#add-policy").click()
    webui.wait(lambda: webui.is_open(*view, "#new-policy-dialog"), 30, "the policy creation dialog")
    typed("#id_new_policy_name", text=policy)
    typed("#cpu-resource", text="4")
    typed("#ram-resource", text="8")
    typed("#concurrency-limit", text="3")
    webui.shot("create-policy")
    webui.find(*view, "#create-policy-button").click()
    webui.wait(lambda: not webui.is_open(*view, "#new-policy-dialog"), 30, "the policy created")
    policies = admin("POST", "/admin/gql", {"query": "{ keypair_resource_policies { name total_resource_slots "
                                                     "max_concurrent_sessions } }"}).json()
    made = [p for p in policies["data"]["keypair_resource_policies"] if p["name"] == policy]
    assert made and made[0]["max_concurrent_sessions"] == 3, policies
    assert json.loads(made[0]["total_resource_slots"])["cpu"] in ("4", 4), made
    # and listed by the tab: every row rendered to its controls, the new one with its folder hosts (the WebUI
    # reads allowed_vfolder_hosts as {host: [permissions]} from manager 22.09 on; told 22.03, it took it for a
    # list and threw "s.map is not a function" in every row's Storage Nodes cell, leaving Control empty)
    hosts = json.loads(admin("POST", "/admin/gql", {"query": "query($n: String) { keypair_resource_policy(name: $n) "
                                                             "{ allowed_vfolder_hosts } }",
                                                    "variables": {"n": policy}}).json()
                       ["data"]["keypair_resource_policy"]["allowed_vfolder_hosts"])

    def cells() -> list[str]:
        return webui.driver.execute_script("""
            let e = document; for (const s of arguments[0]) e = (e.shadowRoot || e).querySelector(s);
            const grid = e.shadowRoot.querySelector('vaadin-grid');
            return Array.from(grid.querySelectorAll('vaadin-grid-cell-content')).map(c => c.innerHTML);
        """, [*view, "backend-ai-resource-policy-list"])

    webui.wait(lambda: any(f">{policy}<" in c for c in cells()), 30, "the new policy in the list")
    assert sum('id="controls"' in c for c in cells()) == len(policies["data"]["keypair_resource_policies"])
    assert hosts and all(any(f'description="{h}"' in c for c in cells()) for h in hosts), (hosts, cells())
    webui.shot("policy-created")

    # a maintenance freeze: the WebUI 23.09 has no control for it (its maintenance page rescans images and
    # recalculates usage), so it is set as the official client's `admin manager freeze` does, from the admin's
    # page through the webserver; a user's new session is refused while frozen, and starts once lifted
    webui.visit("maintenance", settle_s=2)
    try:
        frozen = webui.fetch("PUT", "/func/manager/status", {"status": "frozen"})
        assert frozen["status"] == 204, frozen
        assert json.loads(webui.fetch("GET", "/func/manager/status")["body"])["status"] == "frozen"
        refused = alice("POST", "/session", {"name": "wf-" + uuid.uuid4().hex[:6], "image": web["BRIDGE_DEV_IMAGE"]})
        assert refused.status_code == 503 and "frozen" in refused.text.lower(), refused.text
    finally:
        lifted = webui.fetch("PUT", "/func/manager/status", {"status": "running"})
    assert lifted["status"] == 204, lifted
    made = alice("POST", "/session", {"name": "wr-" + uuid.uuid4().hex[:6], "image": web["BRIDGE_DEV_IMAGE"]})
    assert made.status_code in (200, 201), made.text
    alice("DELETE", f"/session/{made.json()['sessionId']}")
    webui.shot("maintenance")
    assert webui.failures() == []
    for doc, variables in (("mutation($e: String!) { purge_user(email: $e, props: {}) { ok msg } }", {"e": email}),
                           ("mutation($n: String!) { delete_keypair_resource_policy(name: $n) { ok msg } }",
                            {"n": policy})):   # what the test made, gone (the list is counted row by row)
        done = admin("POST", "/admin/gql", {"query": doc, "variables": variables}).json()
        assert all(r["ok"] for r in done["data"].values()), done
