"""shared and project folders: invitations, shares, and folders owned by a project

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 21:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('vfolder_invitations',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('vfolder_id', sa.String(length=36), nullable=False),
    sa.Column('inviter_uuid', sa.String(length=36), nullable=False),
    sa.Column('invitee_uuid', sa.String(length=36), nullable=False),
    sa.Column('permission', sa.String(length=4), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('modified_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['invitee_uuid'], ['users.uuid'], name=op.f('fk_vfolder_invitations_invitee_uuid_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['inviter_uuid'], ['users.uuid'], name=op.f('fk_vfolder_invitations_inviter_uuid_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vfolder_id'], ['vfolders.id'], name=op.f('fk_vfolder_invitations_vfolder_id_vfolders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_vfolder_invitations'))
    )
    with op.batch_alter_table('vfolder_invitations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vfolder_invitations_invitee_uuid'), ['invitee_uuid'], unique=False)
        batch_op.create_index(batch_op.f('ix_vfolder_invitations_vfolder_id'), ['vfolder_id'], unique=False)

    op.create_table('vfolder_shares',
    sa.Column('vfolder_id', sa.String(length=36), nullable=False),
    sa.Column('user_uuid', sa.String(length=36), nullable=False),
    sa.Column('permission', sa.String(length=4), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_uuid'], ['users.uuid'], name=op.f('fk_vfolder_shares_user_uuid_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vfolder_id'], ['vfolders.id'], name=op.f('fk_vfolder_shares_vfolder_id_vfolders'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vfolder_id', 'user_uuid', name=op.f('pk_vfolder_shares'))
    )
    with op.batch_alter_table('vfolders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_id', sa.String(length=36), nullable=True))
        batch_op.alter_column('user_uuid',
               existing_type=sa.VARCHAR(length=36),
               nullable=True)
        batch_op.create_index(batch_op.f('ix_vfolders_group_id'), ['group_id'], unique=False)
        batch_op.create_unique_constraint('uq_vfolders_group_id_name', ['group_id', 'name'])
        batch_op.create_foreign_key(batch_op.f('fk_vfolders_group_id_groups'), 'groups', ['group_id'], ['id'])



def downgrade() -> None:
    # project folders (no user) must be deleted first: user_uuid becomes required again
    with op.batch_alter_table('vfolders', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_vfolders_group_id_groups'), type_='foreignkey')
        batch_op.drop_constraint('uq_vfolders_group_id_name', type_='unique')
        batch_op.drop_index(batch_op.f('ix_vfolders_group_id'))
        batch_op.alter_column('user_uuid',
               existing_type=sa.VARCHAR(length=36),
               nullable=False)
        batch_op.drop_column('group_id')

    op.drop_table('vfolder_shares')
    with op.batch_alter_table('vfolder_invitations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vfolder_invitations_vfolder_id'))
        batch_op.drop_index(batch_op.f('ix_vfolder_invitations_invitee_uuid'))

    op.drop_table('vfolder_invitations')
