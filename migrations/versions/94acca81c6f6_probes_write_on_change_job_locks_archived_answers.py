"""probes write on change, expiring job locks, archived answers

- job_lock: an expiring lock row for the probe sweep and the retention roll-up (Huey's
  lock_task never expired: a worker killed mid-sweep stopped probing for good).
- answer.archived_at: a checklist upgrade archives answers to removed items instead of
  deleting them; one *live* answer per item, so the unique constraint becomes a partial
  unique index.
- probe_run.error: a run that could not finish is closed with the reason.
- answer.probe_result_id and service_check.result_id indexed: the roll-up deletes old
  results, and each deleted row's foreign keys are checked.
- Probe answers no longer copy the probe's explanation into the person's note field: the
  explanation stays on the probe result.

Revision ID: 94acca81c6f6
Revises: 5742a9cac0a0
Create Date: 2026-12-01 03:46:56.345227

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '94acca81c6f6'
down_revision = '5742a9cac0a0'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('job_lock',
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_job_lock'))
    )
    with op.batch_alter_table('answer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('archived_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint(batch_op.f('uq_answer_assessment_id_item_key'), type_='unique')
        batch_op.create_index('uq_answer_live_item', ['assessment_id', 'item_key'], unique=True, sqlite_where=sa.text('archived_at IS NULL'), postgresql_where=sa.text('archived_at IS NULL'))
        batch_op.create_index(batch_op.f('ix_answer_probe_result_id'), ['probe_result_id'], unique=False)

    with op.batch_alter_table('service_check', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_service_check_result_id'), ['result_id'], unique=False)

    with op.batch_alter_table('probe_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('error', sa.String(length=200), nullable=True))

    op.execute("UPDATE answer SET note = '' WHERE source = 'probe'")



def downgrade():
    with op.batch_alter_table('probe_run', schema=None) as batch_op:
        batch_op.drop_column('error')

    with op.batch_alter_table('service_check', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_service_check_result_id'))

    with op.batch_alter_table('answer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_answer_probe_result_id'))
        batch_op.drop_index('uq_answer_live_item', sqlite_where=sa.text('archived_at IS NULL'), postgresql_where=sa.text('archived_at IS NULL'))
        batch_op.create_unique_constraint(batch_op.f('uq_answer_assessment_id_item_key'), ['assessment_id', 'item_key'])
        batch_op.drop_column('archived_at')

    op.drop_table('job_lock')
