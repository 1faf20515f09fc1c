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
    assert (await gw.http.get("/")).json()["manager"] == "22.03.0"   # the WebUI asks wsproxy-version from 21.09
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
