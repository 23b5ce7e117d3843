"""ledger entry guard: find each removed entry's event by its entry_id (issue 8)

The statement trigger that lets the chainer delete an entry only once an identical
event is chained compared every column inside an anti-join. PL/pgSQL keeps one plan
per connection; the load benchmark's connections had planned it as a probe of
``ledger_event`` by its action index, so each removed entry read every chained event of
its action (40–80 ms a chainer run, growing with the chain). The check now joins on
``entry_id`` alone, compares the columns afterwards, and allows only a nested loop
over the unique index. SQLite's row trigger already looks up one entry_id per row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 12:00:00
"""
from alembic import op

from marking.ledger_guards import ENTRY_CHAINED_FUNCTION

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

# The function as revision 0008 made it (what a downgrade restores).
_0008_FUNCTION = """CREATE OR REPLACE FUNCTION ledger_entry_removed_when_chained() RETURNS trigger
       LANGUAGE plpgsql SET enable_seqscan = off AS $$
       BEGIN
         IF EXISTS (SELECT 1 FROM gone g WHERE NOT EXISTS (
              SELECT 1 FROM ledger_event e
              WHERE e.entry_id = g.id AND e.at = g.at AND e.actor_id IS NOT DISTINCT FROM g.actor_id
                AND e.action = g.action AND e.entity = g.entity AND e.entity_id = g.entity_id
                AND e.reason IS NOT DISTINCT FROM g.reason AND e.data = g.data)) THEN
           RAISE EXCEPTION 'ledger_entry: DELETE refused, an entry is not chained yet'
             USING ERRCODE = 'insufficient_privilege';
         END IF;
         RETURN NULL;
       END $$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ENTRY_CHAINED_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_0008_FUNCTION)
