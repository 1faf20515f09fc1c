"""Issue 12 (low): app tokens in the access log. The start-service link is `/proxy/<session>/<app>/?token=...`;
uvicorn logged it whole, and a reader of the log could open the app as its owner."""

from __future__ import annotations

import logging

from bridge.api.access_log import RedactTokens


def test_the_access_log_keeps_the_path_and_drops_the_token():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/proxy/abc/jupyter/?token=eyJhbGciOi.secret&x=1",
                                "1.1", 303), None)
    assert RedactTokens().filter(record)
    line = record.getMessage()
    assert "secret" not in line and "eyJ" not in line
    assert "/proxy/abc/jupyter/?token=[redacted]&x=1" in line


async def test_the_app_cookie_is_secure_when_the_public_url_is_https(gw):
    """Issue 12 (low): behind a TLS proxy uvicorn sees plain http, and the app cookie went out without Secure."""
    from bridge.services import app_proxy

    settings = gw.app.state.settings
    token = app_proxy.issue(settings.secret.get_secret_value(), "sid1", "jupyter", gw.keys["alice"].access, 60)
    r = await gw.http.get(f"/proxy/sid1/jupyter/?token={token}")
    assert r.status_code == 303 and "secure" not in r.headers["set-cookie"].lower()
    settings.server.public_url = "https://gw.site"
    r = await gw.http.get(f"/proxy/sid1/jupyter/?token={token}")
    assert r.status_code == 303 and "; secure" in r.headers["set-cookie"].lower()


async def test_with_an_apps_domain_each_app_has_its_own_origin(gw):
    """Issue 12.7: in path mode every app shares the gateway's origin, and one user's notebook JavaScript can
    drive another user's app open in the same browser. With server.apps_domain an app answers only on its
    own host, <session>-<app>.<apps domain>, and its cookie belongs to that host alone."""
    from bridge.services import app_proxy

    settings = gw.app.state.settings
    settings.server.apps_domain = "apps.gw.test"
    token = app_proxy.issue(settings.secret.get_secret_value(), "sid1", "jupyter", gw.keys["alice"].access, 60)
    own = {"Host": "sid1-jupyter.apps.gw.test"}
    r = await gw.http.get(f"/proxy/sid1/jupyter/?token={token}", headers=own)
    assert r.status_code == 303 and "domain=" not in r.headers["set-cookie"].lower()   # a host-only cookie
    cookie = r.headers["set-cookie"].split(";")[0]
    for host in ("gw.test", "sid2-jupyter.apps.gw.test", "sid1-ttyd.apps.gw.test"):
        r = await gw.http.get("/proxy/sid1/jupyter/", headers={"Host": host, "Cookie": cookie})
        assert r.status_code == 404 and "own host: sid1-jupyter.apps.gw.test" in r.json()["msg"], (host, r.text)
