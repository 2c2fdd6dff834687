"""service pointers to its working and its signed-off assessment (the dashboard's read model)

Revision ID: f4d2b8a61c03
Revises: e3a91c4d7b25
Create Date: 2026-12-01 09:40:00

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'f4d2b8a61c03'
down_revision = 'e3a91c4d7b25'
branch_labels = None
depends_on = None

# The same choice as webapp.dashboard._working_query / _signed_query, in SQL.
BACKFILL = """
UPDATE service SET
  working_assessment_id = (
    SELECT a.id FROM assessment a WHERE a.service_id = service.id AND a.state IN ('draft', 'in_review')
    ORDER BY CASE WHEN a.state = 'in_review' THEN 0 ELSE 1 END, a.created_at DESC, a.id DESC LIMIT 1),
  signed_assessment_id = (
    SELECT a.id FROM assessment a WHERE a.service_id = service.id AND a.state = 'signed_off'
    ORDER BY a.decided_at DESC, a.id DESC LIMIT 1)
"""


def upgrade():
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.add_column(sa.Column('working_assessment_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('signed_assessment_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_service_working_assessment_id'), ['working_assessment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_service_signed_assessment_id'), ['signed_assessment_id'], unique=False)
        batch_op.create_foreign_key('fk_service_working_assessment_id', 'assessment', ['working_assessment_id'],
                                    ['id'], ondelete='SET NULL')
        batch_op.create_foreign_key('fk_service_signed_assessment_id', 'assessment', ['signed_assessment_id'],
                                    ['id'], ondelete='SET NULL')
    op.execute(BACKFILL)


def downgrade():
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.drop_constraint('fk_service_signed_assessment_id', type_='foreignkey')
        batch_op.drop_constraint('fk_service_working_assessment_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_service_signed_assessment_id'))
        batch_op.drop_index(batch_op.f('ix_service_working_assessment_id'))
        batch_op.drop_column('signed_assessment_id')
        batch_op.drop_column('working_assessment_id')
