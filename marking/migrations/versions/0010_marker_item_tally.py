"""marker item tallies: a claim's counts read from one row, not counted (issue 8)

Every claim counted the marker's assignments on the item (daily cap, seed and
self-check schedules), which grew with the marker's history. ``marker_item_tally``
holds those counts, kept by a trigger on ``mark_assignment`` inserts
(``marking.tally_triggers``); the tallies of assignments made before this revision are
counted once here.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23 03:40:00
"""
import sqlalchemy as sa
from alembic import op

from marking.tally_triggers import BACKFILL, drop_statements, install_statements

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'marker_item_tally',
        sa.Column('marker_id', sa.Integer(), nullable=False),
        sa.Column('item_id', sa.Integer(), nullable=False),
        sa.Column('live_total', sa.Integer(), nullable=False),
        sa.Column('day', sa.Date(), nullable=True),
        sa.Column('live_on_day', sa.Integer(), nullable=False),
        sa.Column('live_since_seed', sa.Integer(), nullable=False),
        sa.CheckConstraint('live_total >= 0 AND live_on_day >= 0 AND live_since_seed >= 0',
                           name=op.f('ck_marker_item_tally_counts_non_negative')),
        sa.ForeignKeyConstraint(['marker_id'], ['app_user.id'], name=op.f('fk_marker_item_tally_marker_id_app_user')),
        sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_marker_item_tally_item_id_item')),
        sa.PrimaryKeyConstraint('marker_id', 'item_id', name=op.f('pk_marker_item_tally')),
    )
    op.execute(BACKFILL)
    for statement in install_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in drop_statements(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_table('marker_item_tally')
