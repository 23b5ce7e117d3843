"""dispatch indexes: held lease by holder, lease expiry per item, reserved tasks per person

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 09:00:00
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_mark_task_holder', 'mark_task', ['marker_id', 'status', 'item_id'])
    op.create_index('ix_mark_task_lease_expiry', 'mark_task', ['item_id', 'status', 'leased_until'])
    op.create_index('ix_mark_task_reserved', 'mark_task', ['reserved_for', 'item_id', 'slot'])


def downgrade() -> None:
    op.drop_index('ix_mark_task_reserved', table_name='mark_task')
    op.drop_index('ix_mark_task_lease_expiry', table_name='mark_task')
    op.drop_index('ix_mark_task_holder', table_name='mark_task')
