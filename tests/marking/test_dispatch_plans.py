"""Issue 8: the claim and submit statements find their rows by index on a large item.

The load benchmark once fell from 120 to 60 marks/s because one subquery of the claim's
facts statement became a sequential scan of the item's tasks: psycopg prepares a
statement after five runs and PostgreSQL's *generic* plan (no parameter values) guessed
that a third of the tasks matched ``leased_until < $now``. These tests run the real
statements of a claim and a submit against an item with many tasks and look at the
plans each backend chooses — on PostgreSQL with generic plans forced — for a full scan
of a big table.
"""
from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import event, text

from marking import dispatch, simulate, submission
from marking.models import Item
from tests.marking.factories import NOW, staffed_subject

TABLES = ("mark_task", "response", "mark", "mark_assignment", "resolution", "script", "ledger_event",
          "outbox_event")
BIG_ROWS = 1000
EXTRA_RESPONSES = 6000


def _fill(db, item_id: int, marker_id: int) -> None:
    """Thousands of scripts, responses and open tasks on the item, in three statements."""
    pg = db.dialect == "postgresql"
    series = ("SELECT g AS x FROM generate_series(1, :n) AS g" if pg else
              "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < :n) SELECT x FROM g")
    false = "false" if pg else "0"
    with db.write() as s:
        subject_id = s.get(Item, item_id).subject_id
        conn = s.connection()
        conn.execute(text(f"INSERT INTO script (subject_id, anon_code, status, absent, created_at) "
                          f"SELECT :sid, 'PLAN-' || CAST(x AS TEXT), 'marking', {false}, :ts FROM ({series}) AS s"),
                     {"sid": subject_id, "n": EXTRA_RESPONSES, "ts": NOW.replace(tzinfo=None)})
        conn.execute(text("INSERT INTO response (script_id, item_id, preflags, status, created_at) "
                          "SELECT id, :iid, '[]', 'pending', :ts FROM script WHERE anon_code LIKE 'PLAN-%'"),
                     {"iid": item_id, "ts": NOW.replace(tzinfo=None)})
        conn.execute(text("INSERT INTO mark_task (response_id, item_id, slot, status, created_at) "
                          "SELECT r.id, :iid, sl.slot, 'open', :ts FROM response r "
                          "CROSS JOIN (SELECT 'first' AS slot UNION ALL SELECT 'second') AS sl "
                          "WHERE r.item_id = :iid AND r.id NOT IN (SELECT response_id FROM mark_task)"),
                     {"iid": item_id, "ts": NOW.replace(tzinfo=None)})
        # Statistics as they are mid-exam: most tasks done (their lease times kept, all in
        # the past), so a generic plan cannot tell "leased" rows from the rest.
        conn.execute(text("UPDATE mark_task SET status = 'done', marker_id = :m, leased_until = :past "
                          "WHERE response_id IN (SELECT id FROM response WHERE script_id IN "
                          "(SELECT id FROM script WHERE anon_code LIKE 'PLAN-%')) AND id % 3 <> 0"),
                     {"m": marker_id, "past": (NOW - dt.timedelta(hours=1)).replace(tzinfo=None)})
    with db.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()


def _captured(db, action) -> list[tuple[str, object]]:
    statements: list[tuple[str, object]] = []

    def grab(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH", "INSERT")):
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        action()
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    return statements


def _full_scans(db, statements) -> list[str]:
    """Each statement's plan (generic on PostgreSQL); the lines that scan a big table whole.

    Big: more than BIG_ROWS rows now (a scan of a handful of rows is the right plan).
    """
    found = []
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        big = []
        for table in TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")
            if cursor.fetchone()[0] > BIG_ROWS:
                big.append(table)
        assert "mark_task" in big and "response" in big
        if db.dialect == "postgresql":
            cursor.execute("SET plan_cache_mode = force_generic_plan")
        for statement, parameters in statements:
            if db.dialect == "postgresql":
                plan = _generic_plan(cursor, statement, parameters)
            else:
                cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                plan = [str(row[-1]) for row in cursor.fetchall()]
            for line in plan:
                for table in big:
                    pg_scan = f"Seq Scan on {table} " in line + " "
                    sqlite_scan = line.strip().startswith(f"SCAN {table}") and "USING" not in line
                    if pg_scan or sqlite_scan:
                        found.append(f"{line.strip()}  <-  {' '.join(statement.split())[:120]}")
        raw.rollback()
    finally:
        raw.close()
    return found


def _pg_type(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, dt.date):
        return "date"
    return "varchar"


def _generic_plan(cursor, statement: str, parameters: dict) -> list[str]:
    """PostgreSQL's generic plan for a statement as psycopg sends it (``%(name)s`` → ``$n``):
    PREPARE it and EXPLAIN EXECUTE with ``plan_cache_mode = force_generic_plan``, the plan
    a statement prepared by psycopg gets after its fifth run when PostgreSQL prefers it."""
    names: list[str] = []

    def number(match: re.Match) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    numbered = re.sub(r"%\((\w+)\)s", number, statement)
    types = ", ".join(_pg_type(parameters[name]) for name in names)
    cursor.execute(f"PREPARE plan_probe ({types}) AS {numbered}" if names else f"PREPARE plan_probe AS {numbered}")
    from psycopg import sql
    # EXECUTE's arguments as literals: a utility statement cannot take bound parameters.
    arguments = ", ".join(sql.Literal(parameters[name]).as_string(cursor.connection) for name in names)
    cursor.execute(f"EXPLAIN EXECUTE plan_probe({arguments})" if names else "EXPLAIN EXECUTE plan_probe")
    plan = [str(row[0]) for row in cursor.fetchall()]
    cursor.execute("DEALLOCATE plan_probe")
    return plan


def test_claim_and_submit_never_scan_a_big_table(db):
    from marking import workbench

    ids = staffed_subject(db, markers=3)
    item_id = ids["items"][0]
    simulate.create_responses_for_testing(db, ids["subject_code"], 4, seed=3)
    m1, m2, m3 = ids["markers"]
    _fill(db, item_id, m3)
    first = dispatch.claim_next(db, m1, item_id, now=NOW)
    later = NOW + dt.timedelta(seconds=5)
    statements = _captured(db, lambda: dispatch.claim_next(db, m2, item_id, now=later))
    statements += _captured(db, lambda: workbench.submit_and_claim_next(
        db, m1, first.token, "5", request_id="plan-1", item_id=item_id, now=later))
    statements += _captured(db, lambda: submission.submit_mark(
        db, m2, dispatch.claim_next(db, m2, item_id, now=later).token, "5", request_id="plan-2", now=later))
    assert len(statements) >= 10
    assert _full_scans(db, statements) == []
