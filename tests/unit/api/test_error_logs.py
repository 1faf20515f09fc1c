"""`/logs/error`: a client's error reports, seen by their user and the admins above them, and cleared."""

from __future__ import annotations


async def _report(gw, who, message, **extra):
    r = await gw.request("POST", "/logs/error", who, json={"severity": "error", "source": "webui",
                                                            "message": message, "context_lang": "js",
                                                            "context_env": {"page": "summary"}, **extra})
    assert r.status_code == 200 and r.json() == {"success": True}, r.text


async def test_reports_are_listed_for_their_user_and_admins_and_cleared(gw):
    await _report(gw, "alice", "alice broke it", request_url="/func/x", request_status=404)
    await _report(gw, "bob", "bob broke it")
    mine = (await gw.request("GET", "/logs/error", "alice")).json()
    assert mine["count"] == 1 and mine["logs"][0]["message"] == "alice broke it"
    assert mine["logs"][0]["request_status"] == 404 and mine["logs"][0]["is_read"] is False
    assert (await gw.request("GET", "/logs/error", "ladmin")).json()["count"] == 2   # the domain's admin
    assert (await gw.request("GET", "/logs/error", "dadmin")).json()["count"] == 0   # another domain's
    read = (await gw.request("GET", "/logs/error?mark_read=true", "alice")).json()
    assert (await gw.request("GET", "/logs/error", "alice")).json()["logs"][0]["is_read"] is True
    log_id = read["logs"][0]["log_id"]
    assert (await gw.request("POST", f"/logs/error/{log_id}/clear", "bob")).status_code == 404
    assert (await gw.request("POST", f"/logs/error/{log_id}/clear", "alice")).json() == {"success": True}
    assert (await gw.request("GET", "/logs/error", "alice")).json()["count"] == 0


async def test_an_admin_never_reads_the_reports_of_an_account_at_or_above_them(gw):
    await _report(gw, "root", "root's page", request_url="/proxy/s/jupyter/?token=secret")
    await _report(gw, "alice", "alice's page")
    seen = [e["message"] for e in (await gw.request("GET", "/logs/error", "ladmin")).json()["logs"]]
    assert seen == ["alice's page"]
    roots = (await gw.request("GET", "/logs/error", "root")).json()["logs"]
    root_log = next(e["log_id"] for e in roots if e["message"] == "root's page")
    assert (await gw.request("POST", f"/logs/error/{root_log}/clear", "ladmin")).status_code == 404


async def test_odd_values_are_kept_safely(gw):
    await _report(gw, "alice", "nul\x00inside", request_status=99999999999999999999999, context_env="text")
    log = (await gw.request("GET", "/logs/error", "alice")).json()["logs"][0]
    assert log["message"] == "nulinside" and log["request_status"] is None and log["context_env"] == {"text": "text"}
    r = await gw.request("GET", "/logs/error?page_no=9223372036854775807", "alice")
    assert r.status_code in (400, 422)


async def test_a_bad_report_is_refused(gw):
    r = await gw.request("POST", "/logs/error", "alice", json={"severity": "fatal!", "message": "x"})
    assert r.status_code == 400 and "severity" in r.json()["msg"]
    r = await gw.request("GET", "/logs/error?page_size=1000", "alice")
    assert r.status_code in (400, 422) and r.json()["title"]
