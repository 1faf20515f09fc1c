"""Issue 12: the authorization matrix. Every account (user, another user, a domain admin of the same domain,
one of another domain, the superadmin) tries every session path and every account change against every
other account's objects. Allowed exactly when the rule of domain/auth.py allows it: oneself, or an account
above the target in rank and (below superadmin) in the same domain. A session the caller may not see is
"not found" (ids are not to be probed); one it may see but not touch is "forbidden".

Kernel runners do not exist in-process: an allowed request may still fail behind the check (no kernel, no
such service), but never with the check's own answers (session-not-found, forbidden)."""

from __future__ import annotations

import pytest

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
