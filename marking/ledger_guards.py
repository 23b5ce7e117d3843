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
