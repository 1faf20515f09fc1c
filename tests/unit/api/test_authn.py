"""The authentication middleware: every route but GET / is signed, and every refusal is a problem body."""

from datetime import UTC, datetime, timedelta

import pytest


def is_problem(r, status, slug):
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/" + slug) and body["title"] and body["msg"]
    return body


async def test_a_signed_request_passes_with_rate_limit_headers(gw):
    r = await gw.request("GET", "/auth/test", "alice", content_type="text/plain")
    assert r.status_code == 200 and r.json()["authorized"] == "yes"
    assert r.headers["x-ratelimit-limit"] == "30000" and r.headers["x-ratelimit-window"] == "900"
    assert int(r.headers["x-ratelimit-remaining"]) == 29999


async def test_json_bodies_are_read_on_get(gw):
    r = await gw.request("GET", "/auth/test", "alice", json={"echo": "hi"})
    assert r.json()["echo"] == "hi"


async def test_unsigned_requests_are_refused(gw):
    is_problem(await gw.http.get("/auth/test", headers={"X-BackendAI-Version": "v6.20220615"}), 401, "unauthorized")


async def test_wrong_signature(gw):
    h = gw.headers("GET", "/auth/test", "alice", secret="not-the-secret")
    assert "mismatch" in is_problem(await gw.http.get("/auth/test", headers=h), 401, "unauthorized")["msg"]


async def test_signature_of_another_path_is_refused(gw):
    h = gw.headers("GET", "/auth/test", "alice")
    is_problem(await gw.http.get("/auth/role", headers=h), 401, "unauthorized")


@pytest.mark.parametrize("delta", [timedelta(minutes=16), timedelta(minutes=-16), timedelta(days=2)])
async def test_stale_or_future_dates(gw, delta):
    h = gw.headers("GET", "/auth/test", "alice", date=datetime.now(UTC) + delta)
    body = is_problem(await gw.http.get("/auth/test", headers=h), 401, "unauthorized")
    assert "away from the server time" in body["msg"]


async def test_dates_inside_the_window_pass(gw):
    h = gw.headers("GET", "/auth/test", "alice", date=datetime.now(UTC) - timedelta(minutes=14))
    assert (await gw.http.get("/auth/test", headers=h)).status_code == 200


async def test_unknown_access_key(gw):
    h = gw.headers("GET", "/auth/test", "alice", access="AKIANOSUCHKEY0000000")
    assert "unknown" in is_problem(await gw.http.get("/auth/test", headers=h), 401, "unauthorized")["msg"]


@pytest.mark.parametrize(("version", "status"), [("v6.20220315", 200), ("v4.20190315", 200), ("v8.20240915", 200),
                                                 ("v9.20250722", 400), ("v6.garbage", 400), ("v3.20170615", 400)])
async def test_version_header_rules(gw, version, status):
    r = await gw.request("GET", "/auth/test", "alice", version=version)
    assert r.status_code == status
    if status == 400:
        is_problem(r, 400, "invalid-api-params")


async def test_missing_version_header(gw):
    h = gw.headers("GET", "/auth/test", "alice")
    del h["X-BackendAI-Version"]
    is_problem(await gw.http.get("/auth/test", headers=h), 400, "invalid-api-params")


async def test_method_override(gw):
    # a client that cannot send PATCH posts with X-Method-Override, signed as PATCH; the route sees PATCH
    h = gw.headers("PATCH", "/auth/ssh-keypair", "alice")
    r = await gw.http.post("/auth/ssh-keypair", headers={**h, "X-Method-Override": "PATCH"})
    assert r.status_code == 200 and r.json()["ssh_public_key"].startswith("ssh-ed25519 ")
    assert "OPENSSH PRIVATE KEY" in r.json()["ssh_private_key"]
    got = await gw.request("GET", "/auth/ssh-keypair", "alice")
    assert got.json()["ssh_public_key"] == r.json()["ssh_public_key"]


async def test_rate_limit_answers_429_and_counts_refused_requests(gw):
    from bridge.adapters.db.tables import KeypairRow

    async with gw.app.state.db.unit_of_work() as s:
        (await s.get(KeypairRow, gw.keys["bob"].access)).rate_limit = 2
    assert (await gw.request("GET", "/auth/test", "bob")).status_code == 200
    assert (await gw.request("GET", "/auth/test", "bob")).status_code == 200
    r = await gw.request("GET", "/auth/test", "bob")
    is_problem(r, 429, "too-many-requests")
    assert r.headers["x-ratelimit-remaining"] == "0"
    assert (await gw.request("GET", "/auth/test", "alice")).status_code == 200  # per key


async def test_inactive_keypair_is_refused(gw):
    from bridge.adapters.db.tables import KeypairRow

    async with gw.app.state.db.unit_of_work() as s:
        (await s.get(KeypairRow, gw.keys["bob"].access)).is_active = False
    is_problem(await gw.request("GET", "/auth/test", "bob"), 401, "unauthorized")


async def test_secret_keys_never_reach_the_log(gw, caplog):
    caplog.set_level("DEBUG")
    await gw.request("GET", "/auth/test", "alice", secret="wrong")
    await gw.request("GET", "/auth/test", "alice")
    for key in gw.keys.values():
        assert key.secret not in caplog.text


async def test_role_authorize_and_announcement(gw):
    assert (await gw.request("GET", "/auth/role", "alice")).json() == {"global_role": "user", "domain_role": "user"}
    assert (await gw.request("GET", "/auth/role", "root")).json()["global_role"] == "superadmin"
    r = await gw.request("POST", "/auth/authorize", "root",
                         json={"type": "keypair", "domain": "default", "username": "bob@x.org", "password": "bob-pw"})
    assert r.json()["data"]["access_key"] == gw.keys["bob"].access
    r = await gw.request("POST", "/auth/authorize", "root",
                         json={"type": "keypair", "domain": "default", "username": "bob", "password": "nope"})
    is_problem(r, 401, "unauthorized")
    assert (await gw.request("GET", "/manager/announcement", "alice")).json() == {"enabled": False, "message": ""}
    is_problem(await gw.request("POST", "/manager/announcement", "alice", json={"enabled": True, "message": "x"}),
               403, "forbidden")
    r = await gw.request("POST", "/manager/announcement", "root", json={"enabled": True, "message": "maintenance"})
    assert r.status_code == 204
    assert (await gw.request("GET", "/manager/announcement", "bob")).json()["message"] == "maintenance"
    assert (await gw.request("GET", "/config/resource-slots", "bob")).json()["cuda.device"] == "count"
    assert (await gw.request("GET", "/config/docker-registries", "bob")).json() == {"local": "file:///srv/images"}
    status = (await gw.request("GET", "/manager/status", "bob")).json()
    assert status["status"] == "running" and status["nodes"] == 1


async def test_uploading_an_ssh_keypair_checks_it(gw):
    from bridge.services.ssh_keys import generate

    public, private = generate()
    r = await gw.request("POST", "/auth/ssh-keypair", "alice", json={"pubkey": public, "privkey": private})
    assert r.status_code == 200 and r.json()["ssh_public_key"] == public
    other_public, _ = generate()
    r = await gw.request("POST", "/auth/ssh-keypair", "alice", json={"pubkey": other_public, "privkey": private})
    assert r.status_code == 400 and "does not match" in r.json()["msg"]
    r = await gw.request("POST", "/auth/ssh-keypair", "alice", json={"pubkey": "garbage", "privkey": "garbage"})
    assert r.status_code == 400 and r.json()["type"].endswith("/invalid-api-params")


async def test_an_override_must_be_signed_as_the_method_it_takes_effect_as(gw):
    """Issue 12.10: a signed POST resent with X-Method-Override: DELETE was accepted (the signature was
    checked against either method)."""
    h = gw.headers("POST", "/auth/ssh-keypair", "alice")
    r = await gw.http.post("/auth/ssh-keypair", headers={**h, "X-Method-Override": "PATCH"})
    is_problem(r, 401, "unauthorized")
    h = gw.headers("GET", "/auth/test", "alice")
    r = await gw.http.get("/auth/test", headers={**h, "X-Method-Override": "DELETE"})   # only on POST
    is_problem(r, 400, "invalid-api-params")
    h = gw.headers("TRACE", "/auth/test", "alice")
    r = await gw.http.post("/auth/test", headers={**h, "X-Method-Override": "TRACE"})
    is_problem(r, 400, "invalid-api-params")


async def test_a_signed_request_cannot_be_replayed(gw):
    """Issue 12.10: the same signed request was accepted again for as long as its Date passed the skew check."""
    h = gw.headers("GET", "/auth/test", "alice")
    assert (await gw.http.get("/auth/test", headers=h)).status_code == 200
    r = await gw.http.get("/auth/test", headers=h)
    is_problem(r, 401, "unauthorized")
    assert "already used" in r.json()["msg"]
    assert (await gw.request("GET", "/auth/test", "alice")).status_code == 200   # signed anew: fine


def test_the_replay_guard_forgets_after_its_window():
    from bridge.domain.replay import ReplayGuard

    now = [0.0]
    guard = ReplayGuard(ttl_s=10, max_entries=3, clock=lambda: now[0])
    assert guard.first_use("k", "s1") and not guard.first_use("k", "s1")
    assert guard.first_use("other", "s1")   # per key
    now[0] = 11
    assert guard.first_use("k", "s1")       # its Date would be refused by the skew check by now anyway
    for sig in ("a", "b", "c", "d"):
        assert guard.first_use("k", sig)
    assert len(guard._seen) == 3            # bounded


async def test_each_keys_use_is_counted_and_written_in_one_transaction_a_second(gw):
    """num_queries and last_used (what admins see of a key) count every signed request; they reach the
    database together, not with a commit per request."""
    from bridge.adapters.db.tables import KeypairRow

    async def stored() -> KeypairRow:
        async with gw.app.state.db.unit_of_work() as s:
            return await s.get(KeypairRow, gw.keys["alice"].access)

    before = await stored()
    for _ in range(5):
        assert (await gw.request("GET", "/auth/test", "alice", content_type="text/plain")).status_code == 200
    assert (await stored()).num_queries == before.num_queries   # not yet: counted in memory
    await gw.app.state.key_usage.flush()
    after = await stored()
    assert after.num_queries == before.num_queries + 5 and after.last_used is not None
    assert (await gw.request("GET", "/auth/test", "alice", content_type="text/plain")).status_code == 200
    await gw.app.state.key_usage.aclose()   # shutdown writes what is left
    assert (await stored()).num_queries == before.num_queries + 6
