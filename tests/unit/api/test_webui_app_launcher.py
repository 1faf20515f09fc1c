"""The WebUI's app launcher ("v2"): wsproxy-version says v2, the start-service token gets the app's URL from
/v2/proxy/.../add (unsigned, readable by the WebUI's page), the page's JSON look does not spend the link,
and the link opens the app at the `redirect` path inside it, never elsewhere."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

from bridge.services import app_proxy


def _token(gw, sid="sid1", app="jupyter", who="alice"):
    return app_proxy.issue(gw.app.state.settings.secret.get_secret_value(), sid, app, gw.keys[who].access, 60)


async def test_the_launcher_flow(gw):
    r = await gw.request("GET", "/scaling-groups/debug/wsproxy-version?group=default", "alice")
    assert r.json() == {"wsproxy_version": "v2"}
    assert (await gw.http.get("/")).json()["manager"] == "22.09.0"   # the WebUI asks wsproxy-version from 21.09
    token = _token(gw)
    r = await gw.http.get(f"/v2/proxy/{token}/sid1/add?app=jupyter&protocol=http",
                          headers={"Origin": "http://webui.example"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://webui.example"
    url = r.json()["url"]
    assert urlsplit(url).path == "/proxy/sid1/jupyter/" and parse_qs(urlsplit(url).query)["token"] == [token]
    look = await gw.http.get(urlsplit(url).path + "?" + urlsplit(url).query + "&redirect=/tree",
                             headers={"Accept": "application/json"})
    assert look.status_code == 200 and look.json()["reuse"] is True
    opened = await gw.http.get(urlsplit(url).path + "?" + urlsplit(url).query + "&redirect=/tree")
    assert opened.status_code == 303 and opened.headers["location"] == "/proxy/sid1/jupyter/tree"
    assert app_proxy.COOKIE in opened.headers["set-cookie"]
    for away in ("//evil.example/x", "/../../../session/x", "/tree?x=1", "tree"):   # never out of the app
        got = await gw.http.get(urlsplit(url).path + "?" + urlsplit(url).query + "&" + urlencode({"redirect": away}))
        assert got.headers["location"].startswith("/proxy/sid1/jupyter/"), (away, got.headers["location"])
        assert "evil" not in got.headers["location"].split("/proxy/sid1/jupyter/")[0]


async def test_a_forged_or_foreign_token_gets_nothing(gw):
    r = await gw.http.get("/v2/proxy/forged/sid1/add?app=jupyter")
    assert r.status_code in (401, 403) and "url" not in r.text
    r = await gw.http.get(f"/v2/proxy/{_token(gw)}/sid2/add?app=jupyter")     # another session's
    assert r.status_code in (401, 403)
    r = await gw.http.get(f"/v2/proxy/{_token(gw)}/sid1/add?app=ttyd")        # another app's
    assert r.status_code in (401, 403)


async def test_start_service_takes_the_arguments_the_webui_sends(gw, monkeypatch):
    """The WebUI 23.09's startService() sends `arguments: JSON.stringify(null)`, the string "null", when an app
    has none (every app of the launcher): that is no arguments, not a 400 (its JupyterLab icon did nothing)."""
    from tests.unit.api.test_graphql import add_session

    sid = await add_session(gw, "alice", "lab-args", service_ports=[
        {"name": "jupyterlab", "protocol": "http", "ports": [8090], "container_ports": [8090], "host_ports": [None]}])
    asked: list[tuple[str, dict, dict]] = []

    class Sock:
        def close(self) -> None:
            pass

    async def service_socket(row, app, arguments, envs):
        asked.append((app, arguments, envs))
        return Sock()

    monkeypatch.setattr(gw.app.state.execution, "service_socket", service_socket)
    for arguments in ("null", None, "{}"):
        r = await gw.request("POST", f"/session/{sid}/start-service", "alice",
                             json={"login_session_token": "s", "app": "jupyterlab", "arguments": arguments})
        assert r.status_code == 200 and r.json()["app"] == "jupyterlab", r.text
    assert asked == [("jupyterlab", {}, {})] * 3
    r = await gw.request("POST", f"/session/{sid}/start-service", "alice",
                         json={"app": "jupyterlab", "arguments": "[1]"})
    assert r.status_code == 400 and "JSON object" in r.json()["msg"]
