"""credentials sealed at rest: their columns become text (a sealed value is longer than the clear one)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 16:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # an earlier attempt of this migration, which failed on SQLite with sessions present (foreign keys
        # were enforced while it rebuilt `keypairs`), left its copies behind; they would stop this one
        for table in ('keypairs', 'sessions'):
            op.execute(f'DROP TABLE IF EXISTS _alembic_tmp_{table}')
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.alter_column('secret_key', existing_type=sa.String(length=40), type_=sa.Text(),
                              existing_nullable=False)
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.alter_column('kernel_secret', existing_type=sa.String(length=64), type_=sa.Text(),
                              existing_nullable=True)


def downgrade() -> None:
    # sealed values do not fit the old columns: a downgrade needs a database whose credentials are in the clear
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.alter_column('kernel_secret', existing_type=sa.Text(), type_=sa.String(length=64),
                              existing_nullable=True)
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.alter_column('secret_key', existing_type=sa.Text(), type_=sa.String(length=40),
                              existing_nullable=False)
