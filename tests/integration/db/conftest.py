"""Database URLs to run the same tests on: SQLite always, PostgreSQL when BRIDGE_TEST_POSTGRES_DSN is set.

Each PostgreSQL test gets a database of its own, created and dropped around it.
"""

from __future__ import annotations

import os
import uuid

import asyncpg
import pytest

PG_DSN = os.environ.get("BRIDGE_TEST_POSTGRES_DSN")


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/bridge.sqlite3"
        return
    if not PG_DSN:
        if os.environ.get("BRIDGE_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("BRIDGE_TEST_POSTGRES_DSN is not set (scripts/postgres.sh prints one)")
        pytest.skip("no PostgreSQL (set BRIDGE_TEST_POSTGRES_DSN)")
    name = "bridge_t" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(_plain(PG_DSN))
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_DSN.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
