"""Alembic environment: runs migrations over the async engine for the URL in the Alembic config."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from bridge.adapters.db.engine import create_engine
from bridge.adapters.db.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # batch migrations rebuild a table (copy, drop, rename): with foreign keys enforced, dropping a table
        # that other rows refer to (keypairs, from sessions) fails. Off for the migration, as Alembic's batch
        # mode documents; the copy keeps every row, so nothing dangles afterwards.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()   # SQLAlchemy began a transaction for it; the migrations run in their own
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    if sqlite:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


async def _run_async() -> None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
