"""lease token index: partial (tokens only), so planner statistics see what it holds

A task holds a lease token only while it is leased, so nearly every row's token is
NULL. SQLite's ANALYZE counts those NULLs as one value shared by nearly every row and
then prefers a full scan of mark_task to the unique index when a submit looks up its
token. The partial index holds only real tokens; uniqueness is unchanged (NULLs were
never compared), and ``lease_token = ?`` implies the index's condition on both backends.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 12:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

HOLDS_TOKEN = sa.text("lease_token IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table('mark_task') as batch_op:
        batch_op.drop_index('uq_mark_task_lease_token')
    op.create_index('uq_mark_task_lease_token', 'mark_task', ['lease_token'], unique=True,
                    sqlite_where=HOLDS_TOKEN, postgresql_where=HOLDS_TOKEN)


def downgrade() -> None:
    op.drop_index('uq_mark_task_lease_token', table_name='mark_task')
    with op.batch_alter_table('mark_task') as batch_op:
        batch_op.create_index('uq_mark_task_lease_token', ['lease_token'], unique=True)
