"""service pointers to its working and its signed-off assessment, and its score trend (the dashboard's read model)

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
# webapp.dashboard.score_trends with TREND_POINTS = 20.
TRENDS = """
SELECT service_id, score FROM (
  SELECT service_id, score, at, id,
         row_number() OVER (PARTITION BY service_id ORDER BY at DESC, id DESC) AS rank
  FROM score_snapshot) ranked
WHERE rank <= 20 ORDER BY service_id, at, id
"""


def _foreign_keys(on: bool) -> None:
    """SQLite: a batch copy of `service` drops a table every other table references, which
    SQLite refuses once rows exist unless foreign keys are off. Its migrations run outside a
    transaction, where the pragma takes effect."""
    if op.get_bind().dialect.name == 'sqlite':
        op.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")


def upgrade():
    _foreign_keys(False)
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.add_column(sa.Column('working_assessment_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('signed_assessment_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('score_trend', sa.JSON(), server_default='[]', nullable=False))
        batch_op.create_index(batch_op.f('ix_service_working_assessment_id'), ['working_assessment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_service_signed_assessment_id'), ['signed_assessment_id'], unique=False)
        batch_op.create_foreign_key('fk_service_working_assessment_id', 'assessment', ['working_assessment_id'],
                                    ['id'], ondelete='SET NULL')
        batch_op.create_foreign_key('fk_service_signed_assessment_id', 'assessment', ['signed_assessment_id'],
                                    ['id'], ondelete='SET NULL')
    _foreign_keys(True)
    op.execute(BACKFILL)
    connection = op.get_bind()
    trends = {}
    for service_id, score in connection.execute(sa.text(TRENDS)):
        trends.setdefault(service_id, []).append(score)
    if trends:
        service = sa.table('service', sa.column('id', sa.Integer), sa.column('score_trend', sa.JSON))
        connection.execute(service.update().where(service.c.id == sa.bindparam('sid'))
                           .values(score_trend=sa.bindparam('trend', type_=sa.JSON)),
                           [{'sid': sid, 'trend': trend} for sid, trend in trends.items()])


def downgrade():
    _foreign_keys(False)
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.drop_constraint('fk_service_signed_assessment_id', type_='foreignkey')
        batch_op.drop_constraint('fk_service_working_assessment_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_service_signed_assessment_id'))
        batch_op.drop_index(batch_op.f('ix_service_working_assessment_id'))
        batch_op.drop_column('score_trend')
        batch_op.drop_column('signed_assessment_id')
        batch_op.drop_column('working_assessment_id')
    _foreign_keys(True)
