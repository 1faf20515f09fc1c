"""one unfinished session per name and keypair, as a partial unique index

Until now only the gateway's own check (in the transaction that adds the row, under a per-process lock)
kept two unfinished sessions of one keypair from sharing a name; two gateway processes could both pass it.
A database that already holds such a pair keeps every row: the later ones are renamed `<name>-<id[:8]>`
(and the upgrade says so) before the index is made.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 13:20:00
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None
log = logging.getLogger('alembic.runtime.migration')

# the statuses that end a session, as they were at this revision (bridge.domain.session.TERMINAL_STATUSES)
ACTIVE = "status NOT IN ('TERMINATED', 'CANCELLED', 'ERROR')"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":   # no session admitted between the renaming and the index
        op.execute("LOCK TABLE sessions IN SHARE ROW EXCLUSIVE MODE")
    rows = bind.execute(sa.text(
        f"SELECT id, access_key, name FROM sessions WHERE {ACTIVE} ORDER BY access_key, name, created_at, id"
    )).all()
    seen: set[tuple[str, str]] = set()
    for session_id, access_key, name in rows:
        if (access_key, name) not in seen:
            seen.add((access_key, name))
            continue
        new_name = f"{name[:55]}-{session_id[:8]}"
        log.warning("session %s of %s renamed from %r to %r: an earlier unfinished session holds that name",
                    session_id, access_key, name, new_name)
        bind.execute(sa.text("UPDATE sessions SET name = :n WHERE id = :i"), {"n": new_name, "i": session_id})
    op.create_index('uq_sessions_active_name', 'sessions', ['access_key', 'name'], unique=True,
                    sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))


def downgrade() -> None:
    op.drop_index('uq_sessions_active_name', table_name='sessions')
