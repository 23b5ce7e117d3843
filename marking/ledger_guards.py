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
# chainer run. The event is found by its unique entry_id alone and only then compared
# column by column, and the function allows no plan but a nested loop over that index.
# PL/pgSQL caches a plan per connection; the load benchmark's connections had planned the
# old anti-join (every column a join condition) as a probe by the action index, so every
# removed entry read every event of its action — 40–80 ms a chainer run, growing with
# the chain (issue 8; migration 0011).
ENTRY_CHAINED_CHECK = """EXISTS (SELECT 1 FROM gone g LEFT JOIN ledger_event e ON e.entry_id = g.id
              WHERE e.entry_id IS NULL
                 OR (e.at, e.actor_id, e.action, e.entity, e.entity_id, e.reason, e.data)
                    IS DISTINCT FROM (g.at, g.actor_id, g.action, g.entity, g.entity_id, g.reason, g.data))"""
ENTRY_CHAINED_CHECK_SETTINGS = "SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off"
ENTRY_CHAINED_FUNCTION = f"""CREATE OR REPLACE FUNCTION ledger_entry_removed_when_chained() RETURNS trigger
       LANGUAGE plpgsql {ENTRY_CHAINED_CHECK_SETTINGS} AS $$
       BEGIN
         IF {ENTRY_CHAINED_CHECK} THEN
           RAISE EXCEPTION 'ledger_entry: DELETE refused, an entry is not chained yet'
             USING ERRCODE = 'insufficient_privilege';
         END IF;
         RETURN NULL;
       END $$"""

ENTRY_POSTGRESQL_STATEMENTS = [
    """CREATE OR REPLACE FUNCTION ledger_entry_refuse() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         RAISE EXCEPTION 'ledger_entry: % refused (an entry is removed only once chained)', TG_OP
           USING ERRCODE = 'insufficient_privilege';
       END $$""",
    ENTRY_CHAINED_FUNCTION,
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
