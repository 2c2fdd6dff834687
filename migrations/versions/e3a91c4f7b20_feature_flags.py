"""feature flags: run-time kill switches for risky features (webapp/flags.py)

Revision ID: e3a91c4f7b20
Revises: 5b1f0c7d2e91
Create Date: 2026-12-01 08:40:00

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'e3a91c4f7b20'
down_revision = '5b1f0c7d2e91'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'feature_flag',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=40), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('note', sa.String(length=200), nullable=False),
        sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('changed_by_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['changed_by_id'], ['user.id'], name=op.f('fk_feature_flag_changed_by_id_user'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_feature_flag')),
        sa.UniqueConstraint('key', name=op.f('uq_feature_flag_key')),
    )


def downgrade():
    op.drop_table('feature_flag')
