"""Alembic migrations and the accounts repository on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import inspect, text

from bridge.adapters.db import engine
from bridge.adapters.db.tables import Base
from bridge.errors import InvalidAPIParameters
from bridge.services import accounts


async def tables(url: str) -> set[str]:
    e = engine.create_engine(url)
    try:
        async with e.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await e.dispose()


async def test_upgrade_creates_every_table_and_downgrade_removes_them(db_url):
    await asyncio.to_thread(engine.upgrade, db_url)
    assert set(Base.metadata.tables) <= await tables(db_url)
    await asyncio.to_thread(engine.downgrade, db_url, "base")
    assert not (set(Base.metadata.tables) & await tables(db_url))
    await asyncio.to_thread(engine.upgrade, db_url)  # and back again
    assert set(Base.metadata.tables) <= await tables(db_url)


async def test_schema_matches_the_models(db_url):
    """No model change without a migration: autogenerate finds nothing to do after upgrade."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    await asyncio.to_thread(engine.upgrade, db_url)
    e = engine.create_engine(db_url)
    try:
        async with e.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), Base.metadata))
    finally:
        await e.dispose()
    assert diff == []


async def test_accounts_and_constraints(db_url):
    await asyncio.to_thread(engine.upgrade, db_url)
    db = engine.Database(db_url)
    try:
        async with db.unit_of_work() as s:
            await accounts.ensure_domain(s, "default")
            await accounts.ensure_policy(s, "default")
            g = await accounts.create_group(s, name="chem", slurm_account="chem")
            u = await accounts.create_user(s, email="c@x.org", unix_user="carol")
            await accounts.add_member(s, g, u)
            kp = await accounts.create_keypair(s, u)
        with pytest.raises(InvalidAPIParameters):
            async with db.unit_of_work() as s:
                await accounts.create_group(s, name="chem")
        async with db.unit_of_work() as s:
            row = (await s.execute(text("SELECT user_id, is_admin FROM keypairs WHERE access_key = :k"),
                                   {"k": kp.access_key})).one()
            assert row.user_id == "c@x.org" and not row.is_admin
            n = (await s.execute(text("SELECT count(*) FROM association_groups_users"))).scalar_one()
            assert n == 1
    finally:
        await db.dispose()
