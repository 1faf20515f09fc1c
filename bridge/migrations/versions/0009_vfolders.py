"""virtual folders

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 19:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('vfolders',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=128), nullable=False),
    sa.Column('user_uuid', sa.String(length=36), nullable=False),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('unix_user', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('creator', sa.String(length=256), nullable=False),
    sa.Column('usage_mode', sa.String(length=16), nullable=False),
    sa.Column('permission', sa.String(length=4), nullable=False),
    sa.Column('cloneable', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['domain_name'], ['domains.name'], name=op.f('fk_vfolders_domain_name_domains')),
    sa.ForeignKeyConstraint(['user_uuid'], ['users.uuid'], name=op.f('fk_vfolders_user_uuid_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vfolders')),
    sa.UniqueConstraint('user_uuid', 'name', name='uq_vfolders_user_uuid_name')
    )
    with op.batch_alter_table('vfolders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vfolders_user_uuid'), ['user_uuid'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('vfolders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vfolders_user_uuid'))
    op.drop_table('vfolders')
