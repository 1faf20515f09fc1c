"""Issue 12.6: credentials at rest. Secret keys, SSH private keys and kernel secrets were stored in the clear,
so any copy of the database handed out every user's credentials."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bridge.adapters.db import sealed
from tests.unit.api.test_graphql import add_session


async def raw(gw, sql: str, **params):
    async with gw.app.state.db.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).all()


async def test_credentials_are_sealed_in_the_database_and_work(gw):
    assert (await gw.request("GET", "/auth/test", "alice")).status_code == 200   # seeded in the clear, sealed
    keys = await gw.request("PATCH", "/auth/ssh-keypair", "alice")           # at start-up, still working
    private = keys.json()["ssh_private_key"]
    (secret, ssh), = await raw(gw, "SELECT secret_key, ssh_private_key FROM keypairs WHERE access_key = :a",
                               a=gw.keys["alice"].access)
    assert secret.startswith(sealed.PREFIX) and gw.keys["alice"].secret not in secret
    assert ssh.startswith(sealed.PREFIX) and "PRIVATE KEY" not in ssh
    async with gw.app.state.db.unit_of_work() as s:
        from bridge.adapters.db.tables import KeypairRow

        assert (await s.get(KeypairRow, gw.keys["alice"].access)).ssh_private_key == private   # opened again
    sid = await add_session(gw, "alice", "sealedjob")
    async with gw.app.state.db.unit_of_work() as s:
        from bridge.adapters.db.tables import SessionRow

        (await s.get(SessionRow, sid)).kernel_secret = "kernel-secret-value"
    (stored,), = await raw(gw, "SELECT kernel_secret FROM sessions WHERE id = :i", i=sid)
    assert stored.startswith(sealed.PREFIX) and "kernel-secret-value" not in stored


async def test_a_credential_stored_in_the_clear_is_sealed_at_start_up(gw):
    await raw(gw, "SELECT 1")
    async with gw.app.state.db.engine.begin() as conn:
        await conn.execute(text("UPDATE keypairs SET secret_key = :s WHERE access_key = :a"),
                           {"s": gw.keys["bob"].secret, "a": gw.keys["bob"].access})
    assert await sealed.seal_plaintext(gw.app.state.db.engine) == 1
    (secret,), = await raw(gw, "SELECT secret_key FROM keypairs WHERE access_key = :a", a=gw.keys["bob"].access)
    assert secret.startswith(sealed.PREFIX)
    assert (await gw.request("GET", "/auth/test", "bob")).status_code == 200


def test_another_secret_cannot_open_a_sealed_value():
    sealed.use_secret("one-secret")
    box = sealed.seal("credential")
    assert sealed.unseal(box) == "credential"
    sealed.use_secret("another-secret")
    try:
        with pytest.raises(sealed.SealError, match="not the one it was sealed with"):
            sealed.unseal(box)
    finally:
        sealed.use_secret(sealed.DEFAULT_SECRET)
