"""resource presets, settings, keypair ssh private key

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 20:42:56.824628
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('resource_presets',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('resource_slots', sa.JSON(), nullable=False),
    sa.Column('shared_memory', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_resource_presets'))
    )
    op.create_table('settings',
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.JSON(), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_settings'))
    )
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ssh_private_key', sa.Text(), nullable=True))
    with op.batch_alter_table('keypair_resource_policies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_concurrent_sftp_sessions', sa.Integer(), nullable=False,
                                      server_default='30'))



def downgrade() -> None:
    with op.batch_alter_table('keypair_resource_policies', schema=None) as batch_op:
        batch_op.drop_column('max_concurrent_sftp_sessions')
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.drop_column('ssh_private_key')

    op.drop_table('settings')
    op.drop_table('resource_presets')
