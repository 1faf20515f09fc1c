import re

import pytest

from bridge.adapters.db import engine
from bridge.errors import InvalidAPIParameters, ObjectNotFound
from bridge.services import accounts


@pytest.fixture
async def db(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/a.db"
    import asyncio

    await asyncio.to_thread(engine.upgrade, url)
    d = engine.Database(url)
    yield d
    await d.dispose()


def test_keypairs_have_backendai_shape_and_are_random():
    keys = {accounts.generate_keypair() for _ in range(50)}
    assert len(keys) == 50
    for access, secret in keys:
        assert re.fullmatch(r"AKIA[A-Z0-9]{16}", access) and len(secret) == 40


def test_passwords_are_hashed_and_verified():
    h = accounts.hash_password("s3cret")
    assert "s3cret" not in h and h.startswith("$argon2")
    assert accounts.verify_password(h, "s3cret") and not accounts.verify_password(h, "wrong")
    assert not accounts.verify_password(None, "x") and not accounts.verify_password("garbage", "x")


async def test_user_project_keypair_flow(db):
    async with db.unit_of_work() as s:
        await accounts.ensure_domain(s, "default")
        await accounts.ensure_policy(s, "default")
        g = await accounts.create_group(s, name="Physics", slurm_account="phys")
        u = await accounts.create_user(s, email="a@x.org", unix_user="alice", password="pw")
        await accounts.add_member(s, g, u)
        await accounts.add_member(s, g, u)  # idempotent
        kp = await accounts.create_keypair(s, u)
    assert kp.user_email == "a@x.org" and g.slurm_account == "phys"
    async with db.unit_of_work() as s:
        assert (await accounts.get_group(s, "Physics")).id == g.id
        assert (await accounts.get_user_by_email(s, "a@x.org")).unix_user == "alice"


async def test_bad_accounts_input_is_refused_and_nothing_is_written(db):
    async with db.unit_of_work() as s:
        await accounts.ensure_domain(s, "default")
    for kwargs in [dict(unix_user="root"), dict(unix_user="Bad Name"), dict(role="god", unix_user="x")]:
        with pytest.raises(InvalidAPIParameters):
            async with db.unit_of_work() as s:
                await accounts.create_user(s, email="b@x.org", **kwargs)
    with pytest.raises(ObjectNotFound):
        async with db.unit_of_work() as s:
            await accounts.create_user(s, email="b@x.org", unix_user="bob", domain="nope")
    async with db.unit_of_work() as s:
        assert await accounts.get_user_by_email(s, "b@x.org") is None
        await accounts.create_user(s, email="b@x.org", unix_user="bob")
    with pytest.raises(InvalidAPIParameters, match="already exists"):
        async with db.unit_of_work() as s:
            await accounts.create_user(s, email="b@x.org", unix_user="bob")
