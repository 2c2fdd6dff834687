"""index for each service's open and signed-off assessment (the dashboard's lookups)

Revision ID: 5b1f0c7d2e91
Revises: 5742a9cac0a0
Create Date: 2026-12-01 04:06:00

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '5b1f0c7d2e91'
down_revision = '5742a9cac0a0'
branch_labels = None
depends_on = None


def upgrade():
    # Covers the per-service "open assessment, in review first, newest" and "latest
    # signed-off" lookups, so a list of 1,000 services reads index pages, not rows.
    with op.batch_alter_table('assessment', schema=None) as batch_op:
        batch_op.create_index('ix_assessment_service_id_state',
                              ['service_id', 'state', 'created_at', 'decided_at'], unique=False)
    # Deleting probe results (retention) checks these foreign keys row by row: unindexed,
    # PostgreSQL scans answer and service_check once per deleted result.
    with op.batch_alter_table('answer', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_answer_probe_result_id'), ['probe_result_id'], unique=False)
    with op.batch_alter_table('service_check', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_check_result_id'), ['result_id'], unique=False)


def downgrade():
    with op.batch_alter_table('service_check', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_check_result_id'))
    with op.batch_alter_table('answer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_answer_probe_result_id'))
    with op.batch_alter_table('assessment', schema=None) as batch_op:
        batch_op.drop_index('ix_assessment_service_id_state')
