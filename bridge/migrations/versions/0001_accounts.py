"""accounts: domains, users, groups, keypairs, resource policies

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 20:33:54.511976
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('domains',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('total_resource_slots', sa.JSON(), nullable=False),
    sa.Column('allowed_vfolder_hosts', sa.JSON(), nullable=False),
    sa.Column('allowed_docker_registries', sa.JSON(), nullable=False),
    sa.Column('integration_id', sa.String(length=512), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_domains'))
    )
    op.create_table('keypair_resource_policies',
    sa.Column('name', sa.String(length=256), nullable=False),
    sa.Column('default_for_unspecified', sa.String(length=16), nullable=False),
    sa.Column('total_resource_slots', sa.JSON(), nullable=False),
    sa.Column('max_session_lifetime', sa.Integer(), nullable=False),
    sa.Column('max_concurrent_sessions', sa.Integer(), nullable=False),
    sa.Column('max_containers_per_session', sa.Integer(), nullable=False),
    sa.Column('max_vfolder_count', sa.Integer(), nullable=False),
    sa.Column('max_vfolder_size', sa.BigInteger(), nullable=False),
    sa.Column('idle_timeout', sa.Integer(), nullable=False),
    sa.Column('allowed_vfolder_hosts', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_keypair_resource_policies'))
    )
    op.create_table('groups',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('total_resource_slots', sa.JSON(), nullable=False),
    sa.Column('allowed_vfolder_hosts', sa.JSON(), nullable=False),
    sa.Column('integration_id', sa.String(length=512), nullable=True),
    sa.Column('slurm_account', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['domain_name'], ['domains.name'], name=op.f('fk_groups_domain_name_domains')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups')),
    sa.UniqueConstraint('domain_name', 'name', name='uq_groups_domain_name_name')
    )
    op.create_table('users',
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('email', sa.String(length=64), nullable=False),
    sa.Column('password', sa.String(length=256), nullable=True),
    sa.Column('need_password_change', sa.Boolean(), nullable=False),
    sa.Column('full_name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_info', sa.String(length=64), nullable=True),
    sa.Column('domain_name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('unix_user', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['domain_name'], ['domains.name'], name=op.f('fk_users_domain_name_domains')),
    sa.PrimaryKeyConstraint('uuid', name=op.f('pk_users')),
    sa.UniqueConstraint('email', name=op.f('uq_users_email')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('association_groups_users',
    sa.Column('group_id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_association_groups_users_group_id_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.uuid'], name=op.f('fk_association_groups_users_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'user_id', name=op.f('pk_association_groups_users'))
    )
    op.create_table('keypairs',
    sa.Column('access_key', sa.String(length=20), nullable=False),
    sa.Column('secret_key', sa.String(length=40), nullable=False),
    sa.Column('user_id', sa.String(length=256), nullable=False),
    sa.Column('user', sa.String(length=36), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('resource_policy', sa.String(length=256), nullable=False),
    sa.Column('rate_limit', sa.Integer(), nullable=False),
    sa.Column('num_queries', sa.Integer(), nullable=False),
    sa.Column('ssh_public_key', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['resource_policy'], ['keypair_resource_policies.name'], name=op.f('fk_keypairs_resource_policy_keypair_resource_policies')),
    sa.ForeignKeyConstraint(['user'], ['users.uuid'], name=op.f('fk_keypairs_user_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('access_key', name=op.f('pk_keypairs'))
    )
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_keypairs_user'), ['user'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('keypairs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_keypairs_user'))

    op.drop_table('keypairs')
    op.drop_table('association_groups_users')
    op.drop_table('users')
    op.drop_table('groups')
    op.drop_table('keypair_resource_policies')
    op.drop_table('domains')
