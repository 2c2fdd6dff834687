"""session generation on users; notes rendered once and stored as HTML

Revision ID: 8549fe9390ea
Revises: 94acca81c6f6
Create Date: 2026-12-01 03:51:18.695570

"""
import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision = '8549fe9390ea'
down_revision = '94acca81c6f6'
branch_labels = None
depends_on = None


def upgrade():
    # Existing notes keep note_html NULL: they are rendered on display until next written.
    with op.batch_alter_table('answer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('note_html', sa.Text(), nullable=True))

    with op.batch_alter_table('answer_change', schema=None) as batch_op:
        batch_op.add_column(sa.Column('note_html', sa.Text(), nullable=True))

    # Every existing session and remember cookie carries a bare user id, which no longer
    # matches "id:generation": everyone signs in once more after this upgrade.
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_generation', sa.Integer(), server_default='0', nullable=False))


def downgrade():
    with op.batch_alter_table('user', schema=None) as batch_op:
        batch_op.drop_column('session_generation')

    with op.batch_alter_table('answer_change', schema=None) as batch_op:
        batch_op.drop_column('note_html')

    with op.batch_alter_table('answer', schema=None) as batch_op:
        batch_op.drop_column('note_html')
