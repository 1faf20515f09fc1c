"""Resolving an access key to an AuthContext, and bookkeeping of its use."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.engine import Database
from bridge.adapters.db.tables import KeypairRow, UserRow, utcnow
from bridge.domain.auth import AuthContext

logger = logging.getLogger(__name__)


async def load_keypair(db: AsyncSession, access_key: str) -> tuple[AuthContext, str] | None:
    """(context, secret key) of an active keypair whose user is active; None otherwise."""
    row = (
        await db.execute(
            select(KeypairRow, UserRow).join(UserRow, UserRow.uuid == KeypairRow.user)
            .where(KeypairRow.access_key == access_key)
        )
    ).first()
    if row is None:
        return None
    kp, user = row
    if not kp.is_active or user.status != "active":
        return None
    ctx = AuthContext(
        access_key=kp.access_key, user_uuid=user.uuid, email=user.email, username=user.username,
        role=user.role, domain_name=user.domain_name, unix_user=user.unix_user, is_admin_key=kp.is_admin,
        resource_policy=kp.resource_policy, rate_limit=kp.rate_limit,
    )
    return ctx, kp.secret_key


class KeyUsage:
    """Each key's use (`num_queries`, `last_used`), counted in memory and written in one transaction at most
    every `every_s` seconds, and at shutdown. A write per request made every signed request wait for a
    commit of its own (on SQLite, a file lock and a sync each): 220 requests a second at most."""

    def __init__(self, db: Database, every_s: float = 1.0) -> None:
        self.db, self.every_s = db, every_s
        self._pending: dict[str, tuple[int, datetime]] = {}
        self._writer: asyncio.Task[None] | None = None

    def hit(self, access_key: str) -> None:
        count, _ = self._pending.get(access_key, (0, None))
        self._pending[access_key] = (count + 1, utcnow())
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_later())

    async def _write_later(self) -> None:
        while self._pending:   # uses counted while a write ran go in the next one
            await asyncio.sleep(self.every_s)
            await self.flush()

    async def flush(self) -> None:
        """Write what was counted since the last write (put back if this write is cancelled)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            async with self.db.unit_of_work() as s:
                for key, (count, last) in sorted(pending.items()):
                    await s.execute(update(KeypairRow).where(KeypairRow.access_key == key)
                                    .values(num_queries=KeypairRow.num_queries + count, last_used=last))
        except asyncio.CancelledError:
            for key, (count, last) in pending.items():
                newer, newer_last = self._pending.get(key, (0, last))
                self._pending[key] = (count + newer, max(last, newer_last))
            raise
        except Exception as e:  # bookkeeping must never fail a request; the counts of this round are lost
            logger.warning("could not record the use of %d keys: %s", len(pending), e)

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self.flush()
