"""Small persistent gateway state (the announcement, the manager status) in the `settings` table."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.tables import SettingRow


async def get(db: AsyncSession, key: str, default: dict[str, Any]) -> dict[str, Any]:
    row = await db.get(SettingRow, key)
    return dict(row.value) if row else dict(default)


async def put(db: AsyncSession, key: str, value: dict[str, Any]) -> None:
    row = await db.get(SettingRow, key)
    if row is None:
        db.add(SettingRow(key=key, value=value))
    else:
        row.value = value
    await db.flush()


MANAGER_STATUS = "manager_status"


async def frozen(db: AsyncSession) -> bool:
    """Has an admin frozen the gateway (`PUT /manager/status`)? Then no new session starts."""
    return (await get(db, MANAGER_STATUS, {"status": "running"})).get("status") == "frozen"
