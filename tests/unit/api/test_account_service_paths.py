"""The account rules have one home (bridge/services/accounts.py: AccountService): the GraphQL mutations and
`bai-bridge admin` both call it, so one request is refused the same way through either.

The rule here: a Unix user is the identity of one gateway user only. (The role rank rules refuse a GraphQL
caller below the target's rank, tests/unit/api/test_role_rank.py; the admin CLI acts as the site operator,
whom nobody outranks, so they never refuse it.)"""

from __future__ import annotations

import asyncio

from click.testing import CliRunner

from bridge.cli import main
from bridge.services.accounts import AccountService

REFUSAL = "unix_user alice is already the Unix identity of alice@x.org"


async def test_a_taken_unix_identity_is_refused_by_graphql_and_the_admin_cli_in_one_place(gw, tmp_path, monkeypatch):
    calls: list[str] = []
    original = AccountService.create_user

    async def spy(self, db, actor, **kw):   # the one service function both paths go through
        calls.append("operator" if actor is None else actor.email)
        return await original(self, db, actor, **kw)

    monkeypatch.setattr(AccountService, "create_user", spy)

    r = await gw.gql("root", """mutation { create_user(email: "copycat@x.org", props: {username: "copycat",
        password: "copycat-pw", need_password_change: false, domain_name: "default", unix_user: "alice"})
        { ok msg user { email } } }""")
    assert r["data"]["create_user"] == {"ok": False, "msg": REFUSAL, "user": None}

    monkeypatch.setenv("BRIDGE_DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path}/gw.db")   # the gateway's own
    out = await asyncio.to_thread(CliRunner().invoke, main,
                                  ["admin", "user", "create", "copycat@x.org", "--unix-user", "alice"])
    assert out.exit_code == 1 and REFUSAL in out.output, out.output

    assert calls == ["root@x.org", "operator"]
    listed = await gw.gql("root", 'query { user(email: "copycat@x.org") { email } }')
    assert listed.get("data", {}).get("user") is None   # written by neither
