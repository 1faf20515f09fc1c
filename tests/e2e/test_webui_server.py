"""The official Backend.AI webserver 23.9.10 (which serves the WebUI) in front of the gateway, as a site runs
it: a user logs in with email and password (the webserver asks the gateway's unsigned /auth/authorize for
the user's keypair and keeps it in its Redis session), and the WebUI's API calls (`/func/...`), signed by
the webserver with that keypair, reach the gateway. A wrong password is refused."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.test_session_rest import Api

pytestmark = pytest.mark.cluster
HEADERS = {"X-BackendAI-Version": "v7.20230615", "Content-Type": "application/json"}   # as the WebUI 23.09 sends


def login(env, username: str, password: str) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=env["BRIDGE_DEV_WEBUI"], timeout=30, headers=HEADERS)
    r = client.post("/server/login", json={"username": username, "password": password})
    return client, r


def test_the_webserver_serves_the_webui(web):
    page = httpx.get(web["BRIDGE_DEV_WEBUI"] + "/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()


def test_a_user_logs_in_through_the_webserver_and_the_webuis_calls_reach_the_gateway(web):
    name = "web-" + uuid.uuid4().hex[:6]
    assert Api(web)("POST", "/folders", {"name": name}).status_code == 201
    client, r = login(web, "alice@example.com", "alice-dev-password")
    try:
        assert r.status_code == 200 and r.json()["authenticated"] is True, r.text
        folders = client.get("/func/folders")
        assert folders.status_code == 200, folders.text
        assert name in [f["name"] for f in folders.json()]
        gql = client.post("/func/admin/gql", json={"query": "{ user { email role } }"})
        assert gql.status_code == 200 and gql.json()["data"]["user"]["email"] == "alice@example.com", gql.text
        assert client.post("/server/logout").status_code in (200, 201, 204)
        assert client.get("/func/folders").status_code in (401, 403)   # the keypair left with the session
    finally:
        client.close()
        Api(web)("DELETE", f"/folders/{name}")


def test_a_wrong_password_is_refused(web):
    client, r = login(web, "bob@example.com", "not-bobs-password")
    try:
        assert r.json().get("authenticated") is not True, r.text
        assert client.get("/func/folders").status_code in (401, 403)
    finally:
        client.close()


def test_ten_wrong_passwords_lock_the_account(web):
    """The webserver blocks an account after 10 failed logins (login_allowed_fail_count), for
    login_block_time: then not even the right password lets it in. A user of its own, so nobody else waits."""
    email = f"lock-{uuid.uuid4().hex[:6]}@example.com"
    made = Api(web, "ADMIN_")("POST", "/admin/gql", {"query": """mutation($e: String!, $p: UserInput!) {
        create_user(email: $e, props: $p) { ok msg } }""", "variables": {"e": email, "p": {
        "username": email.split("@")[0], "password": "right-password-1", "domain_name": "default",
        "need_password_change": False, "role": "user", "status": "active",
        "unix_user": email.split("@")[0].replace("-", "")}}}).json()
    assert made["data"]["create_user"]["ok"], made
    client, r = login(web, email, "right-password-1")
    assert r.json()["authenticated"] is True, r.text
    client.close()
    for i in range(10):
        client, r = login(web, email, f"wrong-{i}")
        client.close()
        assert r.json().get("authenticated") is not True
    client, r = login(web, email, "right-password-1")
    try:
        assert r.json().get("authenticated") is not True, r.text
        assert "too many" in r.text.lower() or "block" in r.text.lower(), r.text
    finally:
        client.close()
