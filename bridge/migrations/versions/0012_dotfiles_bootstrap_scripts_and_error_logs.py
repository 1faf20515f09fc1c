"""dotfiles (user, project, domain), the keypair's bootstrap script, and clients' error logs

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 01:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('error_logs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=256), nullable=False),
    sa.Column('user_uuid', sa.String(length=36), nullable=True),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('is_read', sa.Boolean(), nullable=False),
    sa.Column('is_cleared', sa.Boolean(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('context_lang', sa.String(length=32), nullable=False),
    sa.Column('context_env', sa.JSON(), nullable=False),
    sa.Column('request_url', sa.String(length=2048), nullable=True),
    sa.Column('request_status', sa.Integer(), nullable=True),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['user_uuid'], ['users.uuid'], name=op.f('fk_error_logs_user_uuid_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_error_logs'))
    )
    with op.batch_alter_table('error_logs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_error_logs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_error_logs_user_uuid'), ['user_uuid'], unique=False)

    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dotfiles', sa.JSON(), nullable=False, server_default='[]'))

    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dotfiles', sa.JSON(), nullable=False, server_default='[]'))

    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dotfiles', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('bootstrap_script', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.drop_column('bootstrap_script')
        batch_op.drop_column('dotfiles')

    with op.batch_alter_table('groups', schema=None) as batch_op:
        batch_op.drop_column('dotfiles')

    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.drop_column('dotfiles')

    with op.batch_alter_table('error_logs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_error_logs_user_uuid'))
        batch_op.drop_index(batch_op.f('ix_error_logs_created_at'))

    op.drop_table('error_logs')
