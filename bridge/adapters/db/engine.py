"""Async engine, sessions and migrations for the configured database URL (SQLite or PostgreSQL)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import ORMExecuteState, Session

from bridge.adapters.db import sealed

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"


def _ensure_sqlite_dir(url: str) -> None:
    """A new SQLite database is the gateway's alone: its folder 0700, its file 0600 (SQLite gives its WAL
    files the file's mode)."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        path = Path(u.database)
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    _ensure_sqlite_dir(url)
    engine = create_async_engine(url, echo=echo, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


class SqliteSession(Session):
    """A session on SQLite, where `SELECT ... FOR UPDATE` does not exist: the first such read of a transaction
    takes the database's write lock instead (`BEGIN IMMEDIATE`), so that what it read stays true until the
    commit, as a row lock keeps it on PostgreSQL: another writer waits (busy_timeout) rather than committing
    between the read and the write. (pysqlite begins a transaction only at the first write, so without this
    a read marked for update could be overtaken.)"""


@event.listens_for(SqliteSession, "do_orm_execute")
def _write_lock_for_update(state: ORMExecuteState) -> None:
    if not state.is_select or getattr(state.statement, "_for_update_arg", None) is None:
        return
    if state.session.info.get("sqlite_write_lock"):
        return
    state.session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    state.session.info["sqlite_write_lock"] = True


@event.listens_for(SqliteSession, "after_flush")
def _written(session: Session, _context: Any) -> None:
    session.info["sqlite_write_lock"] = True   # a write takes the lock too (pysqlite's implicit BEGIN)


@event.listens_for(SqliteSession, "after_transaction_end")
def _released(session: Session, transaction: Any) -> None:
    if transaction.parent is None:   # the outermost transaction: committed or rolled back, the lock is gone
        session.info.pop("sqlite_write_lock", None)


class Database:
    """The engine plus a session factory; `unit_of_work()` commits once or rolls back."""

    def __init__(self, url: str, *, echo: bool = False, secret: str | None = None) -> None:
        """`secret`: the gateway's, from which the key of the sealed credential columns derives."""
        if secret is not None:
            sealed.use_secret(secret)
        self.url = url
        self.engine = create_engine(url, echo=echo)
        sqlite = self.engine.dialect.name == "sqlite"
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False,
                                               sync_session_class=SqliteSession if sqlite else Session)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` (blocking; call from a thread when inside an event loop)."""
    from alembic import command

    _ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The schema's Alembic revision; None for an empty database (a new SQLite file is made 0600 first)."""
    import asyncio

    from alembic.runtime.migration import MigrationContext

    _ensure_sqlite_dir(url)

    async def _rev() -> str | None:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(_rev())
