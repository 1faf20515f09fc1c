"""Issue 12.8 (and the WebUI's login): `POST /auth/authorize` unsigned, as the spec has it and the official
webserver sends it, without becoming a password oracle: failed logins make an account wait, an address has
an attempt budget, an unknown account is answered like a wrong password (and costs the same argon2 work),
and hashing runs off the event loop."""

from __future__ import annotations

import threading

from bridge.domain.login_guard import LoginGuard
from bridge.services import accounts


async def login(gw, username: str, password: str, address: str = "10.0.0.1"):
    body = {"type": "keypair", "domain": "default", "username": username, "password": password}
    return await gw.http.post("/auth/authorize", json=body, headers={"X-BackendAI-Version": "v6.20220615"})


async def test_an_unsigned_login_returns_the_users_own_keypair(gw):
    r = await login(gw, "alice@x.org", "alice-pw")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["access_key"] == gw.keys["alice"].access
    assert r.json()["data"]["secret_key"] == gw.keys["alice"].secret


async def test_an_unknown_account_is_answered_like_a_wrong_password_with_the_same_work(gw, monkeypatch):
    checked = []
    real = accounts.verify_password

    def spy(stored, password):
        checked.append((stored, threading.current_thread() is threading.main_thread()))
        return real(stored, password)

    monkeypatch.setattr(accounts, "verify_password", spy)
    wrong = await login(gw, "alice@x.org", "nope")
    unknown = await login(gw, "nobody@x.org", "nope")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert len(checked) == 2 and all(stored.startswith("$argon2") for stored, _ in checked)   # a dummy hash too
    assert not any(on_loop for _, on_loop in checked)   # argon2 off the event loop


async def test_failed_logins_make_the_account_wait_known_or_not(gw):
    for who in ("bob@x.org", "ghost@x.org"):
        for _ in range(5):
            assert (await login(gw, who, "guess")).status_code == 401
        r = await login(gw, who, "bob-pw")
        assert r.status_code == 429 and "try again in" in r.json()["msg"], r.text
    assert (await login(gw, "alice@x.org", "alice-pw")).status_code == 200   # another account is not locked


def test_the_guard_backs_off_and_bounds_each_address():
    now = [0.0]
    guard = LoginGuard(max_failures=2, first_wait_s=10, max_wait_s=40, per_address=3, window_s=60,
                       clock=lambda: now[0])
    assert guard.wait_s("a", "ip1") == 0
    guard.failed("a")
    guard.failed("a")
    assert guard.wait_s("a", "ip2") == 10
    guard.failed("a")
    assert guard.wait_s("a", "ip3") == 20   # twice as long after each further failure
    now[0] = 25
    assert guard.wait_s("a", "ip4") == 0
    guard.succeeded("a")
    for _ in range(3):
        assert guard.wait_s("b", "ip9") == 0
    assert guard.wait_s("c", "ip9") > 0      # the address spent its budget, whatever the account
    now[0] = 100
    assert guard.wait_s("c", "ip9") == 0
