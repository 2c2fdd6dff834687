"""runbooks: external link, who reviewed

Revision ID: 009de8684d5f
Revises: c6c42399e2ba
Create Date: 2026-12-01 03:29:25.263126

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '009de8684d5f'
down_revision = 'c6c42399e2ba'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('runbook_revision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reviewed_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('body_html', sa.Text(), nullable=False, server_default=''))
        batch_op.create_foreign_key(batch_op.f('fk_runbook_revision_reviewed_by_id_user'), 'user', ['reviewed_by_id'], ['id'])

    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.add_column(sa.Column('runbook_url', sa.String(length=2048), nullable=True))



def downgrade():
    with op.batch_alter_table('service', schema=None) as batch_op:
        batch_op.drop_column('runbook_url')

    with op.batch_alter_table('runbook_revision', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_runbook_revision_reviewed_by_id_user'), type_='foreignkey')
        batch_op.drop_column('reviewed_by_id')
        batch_op.drop_column('body_html')

