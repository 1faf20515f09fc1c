"""kernel runner address and secret

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 21:36:07.345211
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kernel_secret', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('kernel_host', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('kernel_port', sa.Integer(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_column('kernel_port')
        batch_op.drop_column('kernel_host')
        batch_op.drop_column('kernel_secret')

