"""resource groups and their associations

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 00:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scaling_groups',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('wsproxy_addr', sa.String(length=1024), nullable=True),
    sa.Column('scheduler_opts', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scaling_groups'))
    )
    op.create_table('sgroups_for_domains',
    sa.Column('scaling_group', sa.String(length=64), nullable=False),
    sa.Column('domain', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['domain'], ['domains.name'], name=op.f('fk_sgroups_for_domains_domain_domains'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['scaling_group'], ['scaling_groups.name'], name=op.f('fk_sgroups_for_domains_scaling_group_scaling_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scaling_group', 'domain', name=op.f('pk_sgroups_for_domains'))
    )
    op.create_table('sgroups_for_groups',
    sa.Column('scaling_group', sa.String(length=64), nullable=False),
    sa.Column('group', sa.String(length=36), nullable=False),
    sa.ForeignKeyConstraint(['group'], ['groups.id'], name=op.f('fk_sgroups_for_groups_group_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['scaling_group'], ['scaling_groups.name'], name=op.f('fk_sgroups_for_groups_scaling_group_scaling_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scaling_group', 'group', name=op.f('pk_sgroups_for_groups'))
    )
    op.create_table('sgroups_for_keypairs',
    sa.Column('scaling_group', sa.String(length=64), nullable=False),
    sa.Column('access_key', sa.String(length=20), nullable=False),
    sa.ForeignKeyConstraint(['access_key'], ['keypairs.access_key'], name=op.f('fk_sgroups_for_keypairs_access_key_keypairs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['scaling_group'], ['scaling_groups.name'], name=op.f('fk_sgroups_for_keypairs_scaling_group_scaling_groups'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('scaling_group', 'access_key', name=op.f('pk_sgroups_for_keypairs'))
    )


def downgrade() -> None:
    op.drop_table('sgroups_for_keypairs')
    op.drop_table('sgroups_for_groups')
    op.drop_table('sgroups_for_domains')
    op.drop_table('scaling_groups')
