"""Issue 12: the authorization matrix. Every account (user, another user, a domain admin of the same domain,
one of another domain, the superadmin) tries every session path and every account change against every
other account's objects. Allowed exactly when the rule of domain/auth.py allows it: oneself, or an account
above the target in rank and (below superadmin) in the same domain. A session the caller may not see is
"not found" (ids are not to be probed); one it may see but not touch is "forbidden".

Kernel runners do not exist in-process: an allowed request may still fail behind the check (no kernel, no
such service), but never with the check's own answers (session-not-found, forbidden)."""

from __future__ import annotations

import asyncio

import pytest

from tests.unit.api.conftest import HOST
from tests.unit.api.test_fuzz import AgreeingRunner, QuietSlurm
from tests.unit.api.test_graphql import add_session

ACCOUNTS = {  # who: (role, domain)
    "alice": ("user", "default"), "bob": ("user", "default"), "ladmin": ("admin", "default"),
    "dadmin": ("admin", "other"), "root": ("superadmin", "default"),
}
RANK = {"user": 1, "admin": 2, "superadmin": 3}


def may_act(actor: str, owner: str) -> bool:
    if actor == owner:
        return True
    (a_role, a_dom), (o_role, o_dom) = ACCOUNTS[actor], ACCOUNTS[owner]
    return RANK[a_role] > RANK[o_role] and (a_role == "superadmin" or a_dom == o_dom)


def may_see(actor: str, owner: str) -> bool:
    """Sessions are visible to their owner and the admins of their domain (listing), acted on by may_act."""
    (a_role, a_dom), (_, o_dom) = ACCOUNTS[actor], ACCOUNTS[owner]
    return actor == owner or a_role == "superadmin" or (a_role == "admin" and a_dom == o_dom)


def done(result: dict, mutation: str) -> bool:
    return bool(((result.get("data") or {}).get(mutation) or {}).get("ok"))


SESSION_PATHS = [
    ("GET", "/session/{sid}", None), ("GET", "/session/{sid}/logs", None),
    ("GET", "/session/{sid}/dependency-graph", None), ("GET", "/session/{sid}/files?path=.", None),
    ("GET", "/session/{sid}/download_single?file=x", None), ("POST", "/session/{sid}/rename", {"name": "x-renamed"}),
    ("GET", "/stream/session/{sid}/apps", None), ("GET", "/session/{sid}/tunnels", None),
    ("POST", "/session/{sid}/start-service", {"app": "ttyd"}), ("POST", "/session/{sid}/interrupt", {}),
    ("POST", "/session/{sid}", {"mode": "query", "code": "print(1)", "runId": "m"}),
    ("PATCH", "/session/{sid}", None), ("DELETE", "/session/{sid}", None),
]


@pytest.mark.parametrize("owner", sorted(ACCOUNTS))
async def test_every_session_path_for_every_account_pair(gw, owner):
    gw.app.state.execution.ready_timeout_s = 0.01   # no runner will report: say so at once
    gw.app.state.slurm = gw.app.state.sessions.slurm = QuietSlurm()   # restarts and deletions reach "Slurm"
    gw.app.state.sessions.runner = AgreeingRunner()
    sids = {actor: await add_session(gw, owner, f"mx-{owner}-{actor}") for actor in ACCOUNTS}
    for actor, sid in sids.items():
        for method, template, body in SESSION_PATHS:
            path = template.format(sid=sid)
            r = await gw.request(method, path, actor, json=body)
            where = f"{actor} {method} {path} of {owner}'s session -> {r.status_code} {r.text[:200]}"
            # no kernel in-process: 503 kernel-unavailable is the one 5xx an allowed request may get
            assert r.status_code < 500 or r.json()["type"].endswith("/kernel-unavailable"), where
            kind = r.json().get("type", "") if r.status_code >= 400 else ""
            if may_act(actor, owner):
                assert not kind.endswith(("/session-not-found", "/forbidden")), where
            elif may_see(actor, owner):
                assert r.status_code == 403 and kind.endswith("/forbidden"), where
            else:
                assert r.status_code == 404 and kind.endswith("/session-not-found"), where


@pytest.mark.parametrize("owner", sorted(ACCOUNTS))
async def test_every_account_change_and_secret_for_every_account_pair(gw, owner):
    email = f"{owner}@x.org"
    for actor in ACCOUNTS:
        secret = await gw.gql(actor, 'query($a: String) { keypair(access_key: $a) { secret_key } }',
                              {"a": gw.keys[owner].access})
        shown = (secret.get("data") or {}).get("keypair") or {}
        assert (shown.get("secret_key") == gw.keys[owner].secret) == (actor == owner), (actor, owner, secret)
        if actor == owner:
            continue
        changed = await gw.gql(actor, 'mutation($e: String!) { modify_user(email: $e, props: {description: "m"}) '
                                      '{ ok msg } }', {"e": email})
        # refused either way: `ok: false` with the reason, or (not an admin at all) a GraphQL error
        assert done(changed, "modify_user") == may_act(actor, owner), (actor, owner, changed)
        minted = await gw.gql(actor, 'mutation($e: String!) { create_keypair(user_id: $e, props: {is_active: true, '
                                     'resource_policy: "default", rate_limit: 100}) { ok msg } }', {"e": email})
        assert done(minted, "create_keypair") == may_act(actor, owner), (actor, owner, minted)


STREAM_PATHS = ["/stream/session/{sid}/execute", "/stream/session/{sid}/pty",
                "/stream/session/{sid}/tcpproxy?app=ttyd", "/stream/session/{sid}/httpproxy?app=ttyd"]


async def ws_answer(app, path: str, headers: dict[str, str]) -> tuple[str, int | None]:
    """Open a WebSocket on the ASGI app itself and return its first answer: ("websocket.accept", None), or
    ("websocket.close", code) for a refusal before the handshake completes."""
    path_only, _, query = path.partition("?")
    inbox: asyncio.Queue = asyncio.Queue()
    inbox.put_nowait({"type": "websocket.connect"})
    first: asyncio.Future = asyncio.get_running_loop().create_future()

    async def send(message: dict) -> None:
        if not first.done():
            first.set_result(message)

    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "http_version": "1.1",
             "path": path_only, "raw_path": path_only.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", HOST.encode())] + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 40000), "server": (HOST, 80), "subprotocols": []}
    task = asyncio.create_task(app(scope, inbox.get, send))
    try:
        async with asyncio.timeout(20):
            message = await first
    finally:
        inbox.put_nowait({"type": "websocket.disconnect", "code": 1000})
        try:
            async with asyncio.timeout(5):
                await task
        except (TimeoutError, Exception):  # noqa: BLE001 - what follows the first answer is not under test
            task.cancel()
    return message["type"], message.get("code")


async def _sessions_with_apps(gw, owner: str, prefix: str, status: str = "RUNNING") -> dict[str, str]:
    from bridge.adapters.db.tables import SessionRow

    sids = {actor: await add_session(gw, owner, f"{prefix}-{owner}-{actor}") for actor in ACCOUNTS}
    async with gw.app.state.db.unit_of_work() as s:
        for sid in sids.values():
            row = await s.get(SessionRow, sid)
            row.status = status
            row.service_ports = [{"name": "ttyd", "protocol": "http", "container_ports": [7681],
                                  "host_ports": [None], "is_inference": False}]
    return sids


def expected_close(actor: str, owner: str) -> int | None:
    """The close code the check itself answers with, or None where the check lets the caller through."""
    if may_act(actor, owner):
        return None
    return 4403 if may_see(actor, owner) else 4404


@pytest.mark.parametrize("owner", sorted(ACCOUNTS))
async def test_every_stream_for_every_account_pair(gw, owner):
    """WebSockets: code execution, terminals and both byte relays, each signed as every account in turn."""
    gw.app.state.execution.ready_timeout_s = 0.01
    sids = await _sessions_with_apps(gw, owner, "ws")
    for actor, sid in sids.items():
        for template in STREAM_PATHS:
            path = template.format(sid=sid)
            kind, code = await ws_answer(gw.app, path, gw.headers("GET", path, actor))
            where = f"{actor} opens {path} of {owner}'s session -> {kind} {code}"
            refused = expected_close(actor, owner)
            if refused is None:   # through the check: accepted, or closed for want of a kernel, never 4403/4404
                assert code not in (4401, 4403, 4404), where
            else:
                assert (kind, code) == ("websocket.close", refused), where
        kind, code = await ws_answer(gw.app, STREAM_PATHS[0].format(sid=sid), {})   # not signed at all
        assert kind == "websocket.close" and code in (4400, 4401)


@pytest.mark.parametrize("owner", sorted(ACCOUNTS))
async def test_every_event_stream_for_every_account_pair(gw, owner):
    """Events: a session's stream (ended sessions, so that a stream let through ends at once)."""
    sids = await _sessions_with_apps(gw, owner, "ev", status="TERMINATED")
    for actor, sid in sids.items():
        path = f"/events/session?sessionId={sid}"
        r = await gw.request("GET", path, actor)
        where = f"{actor} GET {path} of {owner}'s session -> {r.status_code} {r.text[:200]}"
        refused = expected_close(actor, owner)
        if refused is None:
            assert r.status_code == 200 and "event: session_terminated" in r.text and sid in r.text, where
        else:
            assert r.status_code == refused - 4000 and "session_terminated" not in r.text, where


@pytest.mark.parametrize("owner", sorted(ACCOUNTS))
async def test_every_browser_proxy_token_for_every_account_pair(gw, owner):
    """The browser proxy, over HTTP and WebSocket: an app token names the key pair it was issued to, and the
    proxy lets it through only while that key pair may act on the session. A token for another session or
    app, or none, never passes."""
    from bridge.services import app_proxy

    gw.app.state.execution.ready_timeout_s = 0.01
    secret = gw.app.state.settings.secret.get_secret_value()
    sids = await _sessions_with_apps(gw, owner, "px")
    for actor, sid in sids.items():
        own = await add_session(gw, actor, f"px-own-{owner}-{actor}")
        tokens = {
            "issued": app_proxy.issue(secret, sid, "ttyd", gw.keys[actor].access, 600),
            "other session": app_proxy.issue(secret, own, "ttyd", gw.keys[actor].access, 600),
            "other app": app_proxy.issue(secret, sid, "jupyter", gw.keys[actor].access, 600),
            "forged": app_proxy.issue("not-the-secret", sid, "ttyd", gw.keys[owner].access, 600),
        }
        for name, token in tokens.items():
            cookie = f"{app_proxy.COOKIE}={token}"
            r = await gw.http.get(f"/proxy/{sid}/ttyd/", headers={"Cookie": cookie})
            kind, code = await ws_answer(gw.app, f"/proxy/{sid}/ttyd/ws", {"Cookie": cookie})
            where = f"{actor}'s {name} token at {owner}'s app -> HTTP {r.status_code} {r.text[:150]}, WS {code}"
            refused = expected_close(actor, owner) if name == "issued" else 4401
            if refused is None:
                assert r.status_code not in (401, 403, 404) and code not in (4401, 4403, 4404), where
            else:
                assert r.status_code == refused - 4000 and code == refused, where
        bare = await gw.http.get(f"/proxy/{sid}/ttyd/")
        assert bare.status_code == 401


ACCOUNTS_UNIX = {"root": "sysadm"}   # the seeded superadmin's Unix account
FOLDER_PATHS = [("GET", "/folders/{fid}", None), ("GET", "/folders/{fid}/files?path=.", None),
                ("POST", "/folders/{fid}/mkdir", {"path": "m", "exist_ok": True}),
                ("POST", "/folders/{fid}/request-download", {"path": "f.txt"}),
                ("POST", "/folders/{fid}/request-upload", {"path": "u.txt", "size": 1}),
                ("POST", "/folders/{fid}/rename-file", {"target_path": "f.txt", "new_name": "f.txt"}),
                ("DELETE", "/folders/{fid}/delete-files", {"files": ["nothing"]}),
                ("GET", "/folders/_/usage?folder_host=local&id={fid}", None),
                ("GET", "/folders/_/quota?folder_host=local&id={fid}", None),
                ("GET", "/folders/_/shared?vfolder_id={fid}", None),
                ("POST", "/folders/{fid}/move-file", {"src": "f.txt", "dst": "f.txt"}),
                ("POST", "/folders/{fid}/update-options", {"cloneable": False}),
                ("POST", "/folders/{fid}/invite", {"perm": "ro", "user_ids": ["bob@x.org"]}),
                ("POST", "/folders/{fid}/share", {"permission": "ro", "emails": ["bob@x.org"]}),
                ("DELETE", "/folders/{fid}/unshare", {"emails": ["bob@x.org"]}),
                ("POST", "/folders/{fid}/leave", None),
                ("POST", "/folders/{fid}/rename", {"new_name": "renamed"}),
                ("DELETE", "/folders/{fid}", None)]


@pytest.mark.parametrize("owner", sorted(ACCOUNTS))
async def test_every_folder_path_for_every_account_pair(gw, tmp_path, owner):
    """Folders: a folder is the owner's, and an account above them in their domain may act on it; to anyone
    else it does not exist (404 vfolder-not-found, never 403: ids are not to be probed)."""
    from tests.unit.api.test_folders import AsOwner

    svc = gw.app.state.folders
    svc.runner = AsOwner()
    svc.config.hosts = {"local": str(tmp_path / "vf")}
    (tmp_path / "vf").mkdir(mode=0o777)
    for actor in ACCOUNTS:
        r = await gw.request("POST", "/folders", owner, json={"name": f"mx-{actor}"})
        assert r.status_code == 201, r.text
        fid = r.json()["id"]
        (tmp_path / "vf" / ACCOUNTS_UNIX.get(owner, owner) / fid / "f.txt").write_text("x")
        for method, template, body in FOLDER_PATHS:
            path = template.format(fid=fid)
            r = await gw.request(method, path, actor, json=body)
            where = f"{actor} {method} {path} of {owner}'s folder -> {r.status_code} {r.text[:200]}"
            assert r.status_code < 500, where
            if may_act(actor, owner):
                assert r.status_code != 404 or not r.json()["type"].endswith("/vfolder-not-found"), where
            else:
                assert r.status_code == 404 and r.json()["type"].endswith("/vfolder-not-found"), where

