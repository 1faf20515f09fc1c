"""The WebUI's account self-service: a user changes their own password (proving the old one) and name; an
account whose password must be changed changes it unsigned, with the current one."""

from __future__ import annotations

from bridge.services import accounts


async def _login(gw, username, password):
    return await gw.http.post("/auth/authorize", json={"type": "keypair", "domain": "default",
                                                       "username": username, "password": password})


async def test_a_user_changes_their_password_with_the_old_one(gw):
    body = {"old_password": "wrong-pw", "new_password": "n3w-passw0rd", "new_password2": "n3w-passw0rd"}
    assert (await gw.request("POST", "/auth/update-password", "alice", json=body)).status_code == 401
    body["old_password"] = "alice-pw"
    body["new_password2"] = "other"
    r = await gw.request("POST", "/auth/update-password", "alice", json=body)
    assert r.status_code == 400 and "mismatch" in r.json()["msg"]
    body["new_password2"] = body["new_password"]
    assert (await gw.request("POST", "/auth/update-password", "alice", json=body)).json() == {}
    assert (await _login(gw, "alice@x.org", "alice-pw")).status_code == 401
    assert (await _login(gw, "alice@x.org", "n3w-passw0rd")).status_code == 200
    short = {"old_password": "n3w-passw0rd", "new_password": "x", "new_password2": "x"}
    assert (await gw.request("POST", "/auth/update-password", "alice", json=short)).status_code == 400


async def test_an_expired_password_is_changed_unsigned_and_only_when_expired(gw):
    body = {"domain": "default", "username": "bob@x.org", "current_password": "bob-pw", "new_password": "b0b-n3w-pw"}
    r = await gw.http.post("/auth/update-password-no-auth", json=body)
    assert r.status_code == 403                                   # not expired: log in and change it there
    async with gw.app.state.db.unit_of_work() as s:
        (await accounts.get_user_by_email(s, "bob@x.org")).need_password_change = True
    r = await gw.http.post("/auth/update-password-no-auth", json={**body, "current_password": "nope"})
    assert r.status_code == 401
    r = await gw.http.post("/auth/update-password-no-auth", json=body)
    assert r.status_code == 200 and r.json()["password_changed_at"]
    assert (await _login(gw, "bob@x.org", "b0b-n3w-pw")).status_code == 200


async def test_a_user_changes_only_their_own_name(gw):
    r = await gw.request("POST", "/auth/update-full-name", "alice", json={"email": "bob@x.org", "full_name": "B"})
    assert r.status_code == 403
    r = await gw.request("POST", "/auth/update-full-name", "alice", json={"email": "alice@x.org",
                                                                          "full_name": "Alice A."})
    assert r.status_code == 200
    got = await gw.gql("alice", "query { user { full_name } }")
    assert got["data"]["user"]["full_name"] == "Alice A."


async def test_a_name_with_a_nul_is_refused(gw):
    r = await gw.request("POST", "/auth/update-full-name", "alice", json={"email": "alice@x.org", "full_name": "a\x00"})
    assert r.status_code == 400
