"""The database adapter's unit of work on SQLite (the embedded default): a read marked for update holds
until the commit, as a row lock does on PostgreSQL (tests/integration/db runs the services on both)."""

from __future__ import annotations

import asyncio

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import Base, SettingRow


async def _database(tmp_path) -> Database:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/lock.db")
    async with db.engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    async with db.unit_of_work() as s:
        s.add(SettingRow(key="k", value={"status": "RUNNING"}))
    return db


async def test_a_read_for_update_is_not_overtaken_by_another_writer(tmp_path):
    """A reads for update, then writes from what it read; B, starting meanwhile, does the same. B must see
    A's write (it waited for A's commit), not the value from before it: else one of the two writes is lost."""
    db = await _database(tmp_path)
    seen: list[tuple[str, str]] = []

    async def step(who: str, delay_s: float, hold_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with db.unit_of_work() as s:
            row = await s.get(SettingRow, "k", with_for_update=True)
            assert row is not None
            seen.append((who, row.value["status"]))
            await asyncio.sleep(hold_s)
            row.value = {"status": f"{row.value['status']}+{who}"}
    try:
        await asyncio.gather(step("a", 0, 0.3), step("b", 0.05, 0))
        async with db.unit_of_work() as s:
            final = (await s.get(SettingRow, "k")).value["status"]   # type: ignore[union-attr]
    finally:
        await db.dispose()
    assert seen == [("a", "RUNNING"), ("b", "RUNNING+a")]
    assert final == "RUNNING+a+b"


async def test_a_read_for_update_after_a_write_in_the_same_unit_of_work(tmp_path):
    db = await _database(tmp_path)
    try:
        async with db.unit_of_work() as s:
            s.add(SettingRow(key="other", value={}))
            await s.flush()                                   # the write lock is held from here
            row = await s.get(SettingRow, "k", with_for_update=True)
            assert row is not None and row.value == {"status": "RUNNING"}
        async with db.unit_of_work() as s:                    # released at the commit: the next one takes it
            assert await s.get(SettingRow, "k", with_for_update=True) is not None
    finally:
        await db.dispose()
