"""Issue 12.1: nobody reads the secrets of, changes, or acts for an account whose role is at or above their
own (superadmin > admin > user/monitor); a secret key or SSH private key is shown to its owner alone.

`ladmin` is a domain admin of `default`, the superadmin's own domain: before the rule, it could read the
superadmin's secret key, mint a key for them, reset their password, demote them, or run jobs as them."""

from __future__ import annotations

from tests.unit.api.test_graphql import add_session

KEYS = "query { keypairs(is_active: true) { user_id access_key secret_key ssh_private_key } }"
KEY_LIST = ("query { keypair_list(limit: 50, offset: 0) { items { user_id access_key secret_key } total_count } }")


async def test_secret_keys_are_shown_to_their_owner_alone(gw):
    for who in ("ladmin", "root"):
        for query in (KEYS, KEY_LIST):
            res = await gw.gql(who, query)
            data = res["data"]["keypairs"] if "keypairs" in res["data"] else res["data"]["keypair_list"]["items"]
            seen = {k["user_id"]: k["secret_key"] for k in data}
            assert seen["root@x.org"] is None or who == "root"
            assert seen["alice@x.org"] is None   # not even a superadmin reads another's secret
            assert seen[f"{who}@x.org"] == gw.keys[who].secret   # one's own: yes
    one = await gw.gql("ladmin", 'query($a: String) { keypair(access_key: $a) { secret_key } }',
                       {"a": gw.keys["root"].access})
    assert "errors" in one or one["data"]["keypair"]["secret_key"] is None


async def test_a_domain_admin_cannot_mint_keys_for_change_or_remove_a_superadmin(gw):
    mint = 'mutation { create_keypair(user_id: "root@x.org", props: {is_active: true, resource_policy: "default", ' \
           'rate_limit: 1000}) { ok msg keypair { secret_key } } }'
    r = (await gw.gql("ladmin", mint))["data"]["create_keypair"]
    assert r["ok"] is False and "not below you in rank" in r["msg"] and r["keypair"] is None
    for props in ('{password: "pwned"}', '{role: "user"}', '{status: "inactive"}', '{username: "x"}'):
        r = (await gw.gql("ladmin", f'mutation {{ modify_user(email: "root@x.org", props: {props}) {{ ok msg }} }}'))
        assert r["data"]["modify_user"]["ok"] is False, props
    for m in ('delete_user(email: "root@x.org")', 'purge_user(email: "root@x.org", props: {})'):
        assert (await gw.gql("ladmin", f"mutation {{ {m} {{ ok msg }} }}"))["data"][m.split("(")[0]]["ok"] is False
    r = await gw.gql("ladmin", 'mutation($a: String!) { modify_keypair(access_key: $a, props: {is_active: false}) '
                     '{ ok msg } }', {"a": gw.keys["root"].access})
    assert r["data"]["modify_keypair"]["ok"] is False
    r = await gw.gql("ladmin", 'mutation($a: String!) { delete_keypair(access_key: $a) { ok msg } }',
                     {"a": gw.keys["root"].access})
    assert r["data"]["delete_keypair"]["ok"] is False
    # the superadmin's password still works, and it is still a superadmin
    me = await gw.gql("root", 'query { user(email: "root@x.org") { role status } }')
    assert me["data"]["user"] == {"role": "superadmin", "status": "active"}


async def test_a_domain_admin_manages_users_below_it_and_sees_a_new_secret_once(gw):
    mint = 'mutation { create_keypair(user_id: "alice@x.org", props: {is_active: true, resource_policy: "default", ' \
           'rate_limit: 1000}) { ok msg keypair { access_key secret_key } } }'
    r = (await gw.gql("ladmin", mint))["data"]["create_keypair"]
    assert r["ok"] is True and len(r["keypair"]["secret_key"]) == 40   # issued: shown to the issuer once
    later = await gw.gql("ladmin", 'query($a: String) { keypair(access_key: $a) { secret_key } }',
                         {"a": r["keypair"]["access_key"]})
    assert later["data"]["keypair"]["secret_key"] is None
    r = await gw.gql("ladmin", 'mutation { modify_user(email: "alice@x.org", props: {full_name: "A"}) { ok msg } }')
    assert r["data"]["modify_user"]["ok"] is True


async def test_a_domain_admin_cannot_make_peers_promote_or_raise_its_own_limits(gw):
    create = """mutation($r: String!) { create_user(email: "peer@x.org", props: {username: "peer", password: "pw",
                need_password_change: false, domain_name: "default", role: $r}) { ok msg } }"""
    for role in ("admin", "superadmin"):
        r = (await gw.gql("ladmin", create, {"r": role}))["data"]["create_user"]
        assert r["ok"] is False and "not below yours" in r["msg"], role
    r = await gw.gql("ladmin", 'mutation { modify_user(email: "alice@x.org", props: {role: "admin"}) { ok msg } }')
    assert r["data"]["modify_user"]["ok"] is False
    r = await gw.gql("ladmin", 'mutation($a: String!) { modify_keypair(access_key: $a, props: {rate_limit: 99999}) '
                     '{ ok msg } }', {"a": gw.keys["ladmin"].access})
    assert r["data"]["modify_keypair"]["ok"] is False
    r = await gw.gql("root", 'mutation { modify_user(email: "alice@x.org", props: {role: "admin"}) { ok msg } }')
    assert r["data"]["modify_user"]["ok"] is True   # a superadmin may


async def test_a_domain_admin_cannot_act_for_a_superadmin_or_touch_its_sessions(gw):
    sid = await add_session(gw, "root", "rootjob")
    for path in (f"/session/{sid}", f"/session/{sid}/logs"):
        r = await gw.request("GET", path, "ladmin")
        assert r.status_code == 403 and r.json()["type"].endswith("/forbidden"), (path, r.text)
    r = await gw.request("DELETE", f"/session/{sid}", "ladmin")
    assert r.status_code == 403
    r = await gw.request("GET", f"/session/rootjob?owner_access_key={gw.keys['root'].access}", "ladmin")
    assert r.status_code == 403
    mine = await add_session(gw, "alice", "alicejob")
    assert (await gw.request("GET", f"/session/{mine}", "ladmin")).status_code == 200   # below it: yes
    assert (await gw.request("GET", f"/session/{sid}", "root")).status_code == 200
