"""Resolving an access key to an AuthContext, and bookkeeping of its use."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.adapters.db.tables import KeypairRow, UserRow, utcnow
from bridge.domain.auth import AuthContext


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


async def record_use(db: AsyncSession, access_key: str) -> None:
    await db.execute(
        update(KeypairRow).where(KeypairRow.access_key == access_key)
        .values(num_queries=KeypairRow.num_queries + 1, last_used=utcnow())
    )
