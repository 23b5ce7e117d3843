"""scanner batches: OMR worker nodes and cut item clips

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:14:33.456584
"""
from alembic import op
import sqlalchemy as sa

from marking.models.base import UTCDateTime


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('omr_node',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('state', sa.Enum('running', 'stopped', name='omr_node_state', native_enum=False, create_constraint=True, length=24), nullable=False),
    sa.Column('host', sa.String(length=120), nullable=True),
    sa.Column('pid', sa.Integer(), nullable=True),
    sa.Column('started_at', UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_omr_node'))
    )
    op.create_table('item_clip',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('card_id', sa.Integer(), nullable=False),
    sa.Column('item_code', sa.String(length=20), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('ink_density_pm', sa.Integer(), nullable=False),
    sa.Column('preflags', sa.Text(), nullable=False),
    sa.Column('template_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['card_id'], ['card.id'], name=op.f('fk_item_clip_card_id_card')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_item_clip')),
    sa.UniqueConstraint('card_id', 'item_code', name=op.f('uq_item_clip_card_id_item_code'))
    )


def downgrade() -> None:
    op.drop_table('item_clip')
    op.drop_table('omr_node')
