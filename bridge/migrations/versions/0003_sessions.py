"""compute sessions and their dependencies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 21:02:33.849704
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sessions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('access_key', sa.String(length=20), nullable=False),
    sa.Column('user_uuid', sa.String(length=36), nullable=False),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('group_id', sa.String(length=36), nullable=False),
    sa.Column('unix_user', sa.String(length=64), nullable=False),
    sa.Column('slurm_account', sa.String(length=64), nullable=False),
    sa.Column('partition', sa.String(length=64), nullable=False),
    sa.Column('image', sa.String(length=512), nullable=False),
    sa.Column('image_path', sa.String(length=1024), nullable=False),
    sa.Column('architecture', sa.String(length=32), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('tag', sa.String(length=256), nullable=True),
    sa.Column('startup_command', sa.Text(), nullable=True),
    sa.Column('bootstrap_script', sa.Text(), nullable=True),
    sa.Column('environ', sa.JSON(), nullable=False),
    sa.Column('mounts', sa.JSON(), nullable=False),
    sa.Column('resources', sa.JSON(), nullable=False),
    sa.Column('resource_opts', sa.JSON(), nullable=False),
    sa.Column('cluster_size', sa.Integer(), nullable=False),
    sa.Column('cluster_mode', sa.String(length=16), nullable=False),
    sa.Column('starts_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('batch_timeout', sa.Integer(), nullable=True),
    sa.Column('callback_url', sa.String(length=2048), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_info', sa.String(length=256), nullable=True),
    sa.Column('status_data', sa.JSON(), nullable=False),
    sa.Column('status_changed', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status_history', sa.JSON(), nullable=False),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('termination_requested', sa.Boolean(), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('job_tag', sa.String(length=128), nullable=False),
    sa.Column('work_dir', sa.String(length=1024), nullable=False),
    sa.Column('nodes', sa.JSON(), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('num_queries', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('terminated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['access_key'], ['keypairs.access_key'], name=op.f('fk_sessions_access_key_keypairs')),
    sa.ForeignKeyConstraint(['domain_name'], ['domains.name'], name=op.f('fk_sessions_domain_name_domains')),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_sessions_group_id_groups')),
    sa.ForeignKeyConstraint(['user_uuid'], ['users.uuid'], name=op.f('fk_sessions_user_uuid_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sessions_access_key'), ['access_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_sessions_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sessions_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_sessions_status'), ['status'], unique=False)

    op.create_table('session_dependencies',
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('depends_on', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['depends_on'], ['sessions.id'], name=op.f('fk_session_dependencies_depends_on_sessions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['session_id'], ['sessions.id'], name=op.f('fk_session_dependencies_session_id_sessions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'depends_on', name=op.f('pk_session_dependencies'))
    )


def downgrade() -> None:
    op.drop_table('session_dependencies')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sessions_status'))
        batch_op.drop_index(batch_op.f('ix_sessions_name'))
        batch_op.drop_index(batch_op.f('ix_sessions_job_id'))
        batch_op.drop_index(batch_op.f('ix_sessions_access_key'))

    op.drop_table('sessions')
