"""Database-side guards of the ledger: UPDATE, DELETE (and TRUNCATE) are refused.

Used by the migrations. On PostgreSQL the application role should in addition get
only SELECT and INSERT on ``ledger_event`` (docs/ledger.md shows the GRANTs), so it
cannot drop these triggers either (R-SEC-2).
"""
from __future__ import annotations

GENESIS_HASH = "0" * 64

SQLITE_STATEMENTS = [
    """CREATE TRIGGER ledger_event_no_update BEFORE UPDATE ON ledger_event
       BEGIN SELECT RAISE(ABORT, 'ledger_event is append-only: UPDATE refused'); END""",
    """CREATE TRIGGER ledger_event_no_delete BEFORE DELETE ON ledger_event
       BEGIN SELECT RAISE(ABORT, 'ledger_event is append-only: DELETE refused'); END""",
]

POSTGRESQL_STATEMENTS = [
    """CREATE OR REPLACE FUNCTION ledger_event_append_only() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'ledger_event is append-only: % refused', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE TRIGGER ledger_event_no_update_delete BEFORE UPDATE OR DELETE ON ledger_event
       FOR EACH ROW EXECUTE FUNCTION ledger_event_append_only()""",
    # Row triggers do not fire on TRUNCATE; a statement trigger does.
    """CREATE TRIGGER ledger_event_no_truncate BEFORE TRUNCATE ON ledger_event
       FOR EACH STATEMENT EXECUTE FUNCTION ledger_event_append_only()""",
]

SQLITE_DROP = ["DROP TRIGGER IF EXISTS ledger_event_no_update",
               "DROP TRIGGER IF EXISTS ledger_event_no_delete"]
POSTGRESQL_DROP = [
    "DROP TRIGGER IF EXISTS ledger_event_no_update_delete ON ledger_event",
    "DROP TRIGGER IF EXISTS ledger_event_no_truncate ON ledger_event",
    "DROP FUNCTION IF EXISTS ledger_event_append_only()",
]


def install_statements(dialect: str) -> list[str]:
    return POSTGRESQL_STATEMENTS if dialect == "postgresql" else SQLITE_STATEMENTS


def drop_statements(dialect: str) -> list[str]:
    return POSTGRESQL_DROP if dialect == "postgresql" else SQLITE_DROP


# ----------------------------------------------------------------- ledger_entry (0008)
# Deferred chaining keeps committed, not yet chained events in ledger_entry. The chainer
# removes an entry once it is chained, so DELETE cannot simply be refused: it is refused
# unless ledger_event already holds an identical event carrying the entry's id. An entry
# can therefore be neither altered nor dropped before its content is in the chain.
_ENTRY_SAME_AS_CHAINED_SQLITE = """EXISTS (SELECT 1 FROM ledger_event e
             WHERE e.entry_id = OLD.id AND e.at = OLD.at AND e.actor_id IS OLD.actor_id
               AND e.action = OLD.action AND e.entity = OLD.entity AND e.entity_id = OLD.entity_id
               AND e.reason IS OLD.reason AND e.data = OLD.data)"""

ENTRY_SQLITE_STATEMENTS = [
    """CREATE TRIGGER ledger_entry_no_update BEFORE UPDATE ON ledger_entry
       BEGIN SELECT RAISE(ABORT, 'ledger_entry is append-only: UPDATE refused'); END""",
    f"""CREATE TRIGGER ledger_entry_delete_when_chained BEFORE DELETE ON ledger_entry
       WHEN NOT {_ENTRY_SAME_AS_CHAINED_SQLITE}
       BEGIN SELECT RAISE(ABORT, 'ledger_entry: DELETE refused, the entry is not chained yet'); END""",
]

# PostgreSQL checks a DELETE once per statement, over its transition table (every removed
# row must have its identical chained event), rather than once per row: one query per
# chainer run. enable_seqscan off: the only sensible plan probes ledger_event's unique
# entry_id index per removed row, but a plan made from statistics taken while the chain
# was a few rows scans the whole chain per row — PL/pgSQL caches plans per connection,
# and pooled connections kept such a plan while the chain grew (40 ms a chainer run in
# the load benchmark).
ENTRY_POSTGRESQL_STATEMENTS = [
    """CREATE OR REPLACE FUNCTION ledger_entry_refuse() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'ledger_entry: % refused (an entry is removed only once chained)', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    """CREATE OR REPLACE FUNCTION ledger_entry_removed_when_chained() RETURNS trigger
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
       END $$""",
    """CREATE TRIGGER ledger_entry_no_update BEFORE UPDATE ON ledger_entry
       FOR EACH ROW EXECUTE FUNCTION ledger_entry_refuse()""",
    """CREATE TRIGGER ledger_entry_delete_when_chained AFTER DELETE ON ledger_entry
       REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_removed_when_chained()""",
    """CREATE TRIGGER ledger_entry_no_truncate BEFORE TRUNCATE ON ledger_entry
       FOR EACH STATEMENT EXECUTE FUNCTION ledger_entry_refuse()""",
]

ENTRY_SQLITE_DROP = ["DROP TRIGGER IF EXISTS ledger_entry_no_update",
                     "DROP TRIGGER IF EXISTS ledger_entry_delete_when_chained"]
ENTRY_POSTGRESQL_DROP = [
    "DROP TRIGGER IF EXISTS ledger_entry_no_update ON ledger_entry",
    "DROP TRIGGER IF EXISTS ledger_entry_delete_when_chained ON ledger_entry",
    "DROP TRIGGER IF EXISTS ledger_entry_no_truncate ON ledger_entry",
    "DROP FUNCTION IF EXISTS ledger_entry_removed_when_chained()",
    "DROP FUNCTION IF EXISTS ledger_entry_refuse()",
]


def entry_install_statements(dialect: str) -> list[str]:
    return ENTRY_POSTGRESQL_STATEMENTS if dialect == "postgresql" else ENTRY_SQLITE_STATEMENTS


def entry_drop_statements(dialect: str) -> list[str]:
    return ENTRY_POSTGRESQL_DROP if dialect == "postgresql" else ENTRY_SQLITE_DROP
