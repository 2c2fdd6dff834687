"""Sign-off: conditions, reviewer roles, review rounds, report snapshots, signing credential

Revision ID: b5d3354cde4f
Revises: 06166633fe84
Create Date: 2026-12-01 03:25:56.120251

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b5d3354cde4f'
down_revision = '06166633fe84'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('signing_credential',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('certificate_pem', sa.Text(), nullable=False),
    sa.Column('key_pem', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signing_credential')),
    sa.UniqueConstraint('name', name=op.f('uq_signing_credential_name'))
    )
    op.create_table('condition',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('signoff_id', sa.Integer(), nullable=False),
    sa.Column('assessment_id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('done_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['assessment_id'], ['assessment.id'], name=op.f('fk_condition_assessment_id_assessment')),
    sa.ForeignKeyConstraint(['done_by_id'], ['user.id'], name=op.f('fk_condition_done_by_id_user')),
    sa.ForeignKeyConstraint(['owner_id'], ['user.id'], name=op.f('fk_condition_owner_id_user')),
    sa.ForeignKeyConstraint(['service_id'], ['service.id'], name=op.f('fk_condition_service_id_service')),
    sa.ForeignKeyConstraint(['signoff_id'], ['sign_off.id'], name=op.f('fk_condition_signoff_id_sign_off')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_condition'))
    )
    with op.batch_alter_table('condition', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_condition_assessment_id'), ['assessment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_condition_service_id'), ['service_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_condition_signoff_id'), ['signoff_id'], unique=False)

    with op.batch_alter_table('assessment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submitted_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('review_round', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_foreign_key(batch_op.f('fk_assessment_submitted_by_id_user'), 'user', ['submitted_by_id'], ['id'])

    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.add_column(sa.Column('snapshot', sa.Text(), server_default='', nullable=False))
        batch_op.add_column(sa.Column('snapshot_sha256', sa.String(length=64), server_default='', nullable=False))
        batch_op.create_index(batch_op.f('ix_report_sha256'), ['sha256'], unique=False)

    with op.batch_alter_table('sign_off', schema=None) as batch_op:
        batch_op.add_column(sa.Column('item_comments', sa.JSON(), server_default='{}', nullable=False))
        batch_op.add_column(sa.Column('review_round', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('present', sa.Text(), server_default='', nullable=False))

    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reviewer_roles', sa.JSON(), server_default='[]', nullable=False))



def downgrade():
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('reviewer_roles')

    with op.batch_alter_table('sign_off', schema=None) as batch_op:
        batch_op.drop_column('present')
        batch_op.drop_column('review_round')
        batch_op.drop_column('item_comments')

    with op.batch_alter_table('report', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_report_sha256'))
        batch_op.drop_column('snapshot_sha256')
        batch_op.drop_column('snapshot')

    with op.batch_alter_table('assessment', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_assessment_submitted_by_id_user'), type_='foreignkey')
        batch_op.drop_column('review_round')
        batch_op.drop_column('submitted_by_id')

    with op.batch_alter_table('condition', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_condition_signoff_id'))
        batch_op.drop_index(batch_op.f('ix_condition_service_id'))
        batch_op.drop_index(batch_op.f('ix_condition_assessment_id'))

    op.drop_table('condition')
    op.drop_table('signing_credential')
