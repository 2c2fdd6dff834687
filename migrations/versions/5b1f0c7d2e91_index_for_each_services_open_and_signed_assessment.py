"""index for each service's open and signed-off assessment (the dashboard's lookups)

Revision ID: 5b1f0c7d2e91
Revises: 8549fe9390ea
Create Date: 2026-12-01 04:06:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '5b1f0c7d2e91'
down_revision = '8549fe9390ea'
branch_labels = None
depends_on = None


def upgrade():
    # Covers the per-service "open assessment, in review first, newest" and "latest
    # signed-off" lookups, so a list of 1,000 services reads index pages, not rows.
    with op.batch_alter_table('assessment', schema=None) as batch_op:
        batch_op.create_index('ix_assessment_service_id_state',
                              ['service_id', 'state', 'created_at', 'decided_at'], unique=False)
    # (The indexes on answer.probe_result_id and service_check.result_id that retention
    # needs come with migration 94acca81c6f6.)


def downgrade():
    with op.batch_alter_table('assessment', schema=None) as batch_op:
        batch_op.drop_index('ix_assessment_service_id_state')
