"""ledger entries: deferred chaining of the score ledger (issue 8)

Every score change used to lock the single ledger head row from its first ledger
statement to its commit, so all score changes of the centre queued behind one another
(6–8 of 16 server threads waiting for it under load). With deferred chaining a change
records its events in ``ledger_entry`` and a chainer appends them to the chain in
batches. ``ledger_event.entry_id`` names the entry an event was chained from (unique:
once); triggers let an entry be deleted only after an identical event is chained.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22 14:00:00
"""
import sqlalchemy as sa
from alembic import op

from marking.ledger_guards import entry_drop_statements, entry_install_statements

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        'ledger_entry',
        sa.Column('id', BIG_ID, nullable=False),
        sa.Column('at', sa.String(length=32), nullable=False),
        sa.Column('actor_id', sa.Integer(), nullable=True),
        sa.Column('action', sa.String(length=48), nullable=False),
        sa.Column('entity', sa.String(length=32), nullable=False),
        sa.Column('entity_id', sa.String(length=64), nullable=False),
        sa.Column('reason', sa.String(length=40), nullable=True),
        sa.Column('data', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_entry')),
        # Never reuse an id (chained entries are deleted; ledger_event.entry_id is unique).
        sqlite_autoincrement=True,
    )
    # A plain ADD COLUMN (no table rebuild: that would drop ledger_event's guard triggers
    # on SQLite); uniqueness comes from the index.
    op.add_column('ledger_event', sa.Column('entry_id', BIG_ID, nullable=True))
    op.create_index('uq_ledger_event_entry_id', 'ledger_event', ['entry_id'], unique=True)
    for statement in entry_install_statements(op.get_bind().dialect.name):
        op.execute(statement)


def downgrade() -> None:
    for statement in entry_drop_statements(op.get_bind().dialect.name):
        op.execute(statement)
    op.drop_index('uq_ledger_event_entry_id', table_name='ledger_event')
    # SQLite cannot drop a column without rebuilding the table (and its guard triggers):
    # the column stays there, unused, which an older revision's code ignores.
    if op.get_bind().dialect.name != "sqlite":
        op.drop_column('ledger_event', 'entry_id')
    op.drop_table('ledger_entry')
