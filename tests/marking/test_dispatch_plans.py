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

import pytest

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
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH", "INSERT",
                                                                          "DELETE")):
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        action()
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    return statements


def _full_scans(db, statements, expect_big=("mark_task", "response")) -> list[str]:
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
        assert set(expect_big) <= set(big), big   # the test filled what it means to probe
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


def test_the_ledger_chainer_never_scans_the_chain(db_url):
    """Deferred chaining runs every half second for the whole exam: its statements must not
    grow with the chain. (Its first DELETE, ``id IN (SELECT entry_id FROM ledger_event
    WHERE seq > $1)``, got a generic plan that scanned all of ledger_event: 50 ms a run
    after a few thousand marks in the load benchmark.)"""
    from marking import ledger
    from marking.db import Database

    deferred = Database(db_url, ledger_chaining="deferred")
    try:
        with deferred.write() as s:
            for n in range(BIG_ROWS + 500):
                ledger.append(s, actor_id=1, action="mark.submitted", entity="response", entity_id=n,
                              data={"n": n}, at=NOW)
        assert ledger.chain_pending(deferred) == BIG_ROWS + 500
        with deferred.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        for n in range(3):
            with deferred.write() as s:
                ledger.append(s, actor_id=1, action="mark.submitted", entity="response", entity_id=n,
                              data={"again": n}, at=NOW)
        statements = _captured(deferred, lambda: ledger.chain_pending(deferred))
        assert any(st.lstrip().upper().startswith("DELETE") for st, _ in statements)
        assert _full_scans(deferred, statements, expect_big=("ledger_event",)) == []
        assert ledger.verify(deferred, None).ok
    finally:
        deferred.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_entry_guard_finds_events_by_index_however_old_its_connection(db_url):
    """The ledger_entry guard (a PL/pgSQL trigger) looks each removed entry up in the chain.
    PL/pgSQL caches that query's plan per connection: planned while the chain was nearly
    empty it was a sequential scan, kept by pooled connections as the chain grew. With
    sequential scans off, the load benchmark's connections then probed the chain by its
    *action* index, reading every chained event of the entry's action (57 ms a chainer
    run); now the guard joins on entry_id alone (migration 0011). The plan choice between
    the two indexes was not reproduced here; what is checked is what the guard reads."""
    from marking import ledger
    from marking.db import Database

    deferred = Database(db_url, ledger_chaining="deferred", pool_size=1, max_overflow=0)   # one connection
    inline = Database(db_url)
    try:
        for n in range(16):   # the guard runs (and its plan is cached) while the chain is tiny ...
            with deferred.write() as s:
                ledger.append(s, actor_id=1, action="t.early", entity="t", entity_id=n, data={}, at=NOW)
            assert ledger.chain_pending(deferred) == 1
            if n == 3:   # ... and analysed so: autovacuum does that early in a new exam database
                with inline.engine.connect() as conn:
                    conn.execute(text("ANALYZE ledger_event"))
                    conn.commit()
        with inline.write() as s:   # the chain grows, most of it one action (as marks are)
            for n in range(3000):
                ledger.append(s, actor_id=1, action="t.bulk", entity="t", entity_id=n, data={"n": n}, at=NOW)
        for n in range(5):
            with deferred.write() as s:
                ledger.append(s, actor_id=1, action="t.bulk", entity="t", entity_id=n, data={"late": n}, at=NOW)
        reads = text("SELECT seq_scan, coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
                     "WHERE relname = 'ledger_event'")
        with deferred.write() as s:   # the same pooled connection chains and removes the entries
            # (this backend's counts not yet flushed, earlier transactions' included: a difference)
            scans_before, fetched_before = s.execute(reads).one()
            assert ledger.chain_batch(s) == 5
            scans_after, fetched_after = s.execute(reads).one()
        assert scans_after - scans_before == 0, "sequential scans of the chain while removing 5 chained entries"
        fetched = fetched_after - fetched_before
        assert fetched <= 5 * 2, f"{fetched} chained events read to remove 5 entries"
    finally:
        deferred.dispose()
        inline.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_hot_statements_fit_psycopgs_parse_cache(db):
    """psycopg converts a query's ``%(name)s`` placeholders once and caches the result — but
    only for queries up to 4 KB and 50 parameters; a longer one is re-parsed on every run
    (3 % of a server's CPU under load for the claim's facts statement at 4.4 KB)."""
    import calibration
    from psycopg import _queries

    from marking import workbench

    calibration.install()   # the claim's facts carry calibration's counts, as on a server
    ids = staffed_subject(db, markers=3)
    item_id = ids["items"][0]
    simulate.create_responses_for_testing(db, ids["subject_code"], 4, seed=3)
    m1, m2, _ = ids["markers"]
    first = dispatch.claim_next(db, m1, item_id, now=NOW)
    statements = _captured(db, lambda: dispatch.claim_next(db, m2, item_id, now=NOW))
    statements += _captured(db, lambda: workbench.submit_and_claim_next(
        db, m1, first.token, "5", request_id="cache-1", item_id=item_id, now=NOW))
    too_long = [(len(st), len(params or {}), " ".join(st.split())[:80]) for st, params in statements
                if len(st) > _queries.MAX_CACHED_STATEMENT_LENGTH
                or len(params or {}) > _queries.MAX_CACHED_STATEMENT_PARAMS]
    assert len(statements) >= 8 and too_long == []


def test_hot_statements_render_no_lists_per_run(db):
    """``column.in_(constants)`` makes SQLAlchemy re-render the SQL text with the list on
    every execution; the claim and submit statements write their constant slots, duties
    and statuses in once (``marking.statements.one_of``), so none of their statements
    carries an expanding parameter."""
    import calibration

    from marking import workbench

    calibration.install()   # calibration's seed counts join the claim's facts, as on a server
    ids = staffed_subject(db, markers=3)
    item_id = ids["items"][0]
    simulate.create_responses_for_testing(db, ids["subject_code"], 4, seed=3)
    m1, m2, _ = ids["markers"]
    expanding: list[str] = []
    executed = [0]

    def grab(_conn, _cursor, statement, _parameters, context, _executemany):
        executed[0] += 1
        compiled = getattr(context, "compiled", None)
        if compiled is not None and compiled.post_compile_params:
            expanding.append(" ".join(statement.split())[:100])

    first = dispatch.claim_next(db, m1, item_id, now=NOW)
    event.listen(db.engine, "before_cursor_execute", grab)
    try:
        dispatch.claim_next(db, m2, item_id, now=NOW)
        workbench.submit_and_claim_next(db, m1, first.token, "5", request_id="lists-1", item_id=item_id, now=NOW)
    finally:
        event.remove(db.engine, "before_cursor_execute", grab)
    assert executed[0] >= 6 and expanding == []


def _total_cost(plan: list[str]) -> float:
    return float(re.search(r"cost=[\d.]+\.\.([\d.]+)", plan[0]).group(1))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_the_deals_generic_plan_costs_what_a_custom_plan_does(db_url):
    """psycopg prepares the deal after five runs; PostgreSQL then keeps a generic plan only
    if it costs about what the custom plans did. With its LIMIT and constants bound, the
    generic plan was costed blind (a tenth of the open tasks per probe) and looked 75
    times dearer on a 1,000,000-response item, so every claim re-planned it: 0.4 ms, the
    whole of the dispatch benchmark's 1M / 10k gap (docs/benchmarks.md, round seven)."""
    from marking.db import Database

    db = Database(db_url)
    try:
        ids = staffed_subject(db, markers=3)
        item_id = ids["items"][0]
        simulate.create_responses_for_testing(db, ids["subject_code"], 4, seed=3)
        _fill(db, item_id, ids["markers"][2])
        deals = [(st, p) for st, p in _captured(db, lambda: dispatch.claim_next(db, ids["markers"][0], item_id,
                                                                                  now=NOW))
                 if st.lstrip().startswith("WITH pair")]
        assert len(deals) == 1
        statement, parameters = deals[0]
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            plans = {}
            for mode in ("force_generic_plan", "force_custom_plan"):
                cursor.execute(f"SET plan_cache_mode = {mode}")
                plans[mode] = _generic_plan(cursor, statement, parameters)
            raw.rollback()
        finally:
            raw.close()
        # Every probe's LIMIT is known to the generic plan (a bound one is costed as a tenth
        # of the rows; on this item that is a few rows, at 1,000,000 responses 500) …
        limits = [line.strip() for line in plans["force_generic_plan"] if line.strip().startswith("->  Limit")]
        assert limits and all(" rows=1 " in line for line in limits), limits
        # … so the generic plan costs what a custom one does, and PostgreSQL keeps it.
        costs = {mode: _total_cost(plan) for mode, plan in plans.items()}
        assert costs["force_generic_plan"] <= 1.05 * costs["force_custom_plan"], costs
    finally:
        db.dispose()
