"""checklist refusals shared by every process

Refused checklist files were a per-process list, so each gunicorn worker (and
/healthz/deep) saw its own. A row per refused file makes the database the only truth.

Revision ID: 06166633fe84
Revises: 009de8684d5f
Create Date: 2026-12-01 03:29:39.873961

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '06166633fe84'
down_revision = '009de8684d5f'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('checklist_refusal',
    sa.Column('path', sa.String(length=1000), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('problems', sa.JSON(), nullable=False),
    sa.Column('refused_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('path', name=op.f('pk_checklist_refusal'))
    )


def downgrade():
    op.drop_table('checklist_refusal')
