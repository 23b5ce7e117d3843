"""FastStatement (marking.fastsql): SQLAlchemy's rows, events and errors without its per-call execution."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import bindparam, event, func, insert, select, text, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DBAPIError, IntegrityError, MultipleResultsFound, NoResultFound

from marking import db as dbmod
from marking.fastsql import EntityColumns, FastStatement, first, one, run_in
from marking.models import LoginSession, Script, User, UserRole
from web.auth.sessions import _LOAD

AT = dt.datetime(2026, 5, 2, 8, 30, 15, 123456, tzinfo=dt.timezone.utc)


def _users(db):
    with db.write() as s:
        a = User(username="fa", display_name="Fa", password_hash="x", active=True, locale=None)
        b = User(username="fb", display_name="Fb", password_hash="x", active=False, locale="en")
        a.roles = [UserRole(role="marker"), UserRole(role="team_leader")]
        s.add_all([a, b])
        s.flush()
        s.add(LoginSession(id="s" * 64, user_id=a.id, created_at=AT, last_seen_at=AT,
                           expires_at=AT + dt.timedelta(hours=12), mfa_passed=False))
        return a.id, b.id


def test_rows_are_what_sqlalchemy_returns(db):
    """Types are processed as SQLAlchemy does: aware UTC datetimes, booleans, NULLs, bound LIMITs."""
    _users(db)
    statement = _LOAD.statement
    with db.read() as s:
        expected = s.execute(statement, {"sid": "s" * 64}).all()
    got = db.read_rows(_LOAD, {"sid": "s" * 64})
    assert [tuple(r) for r in got] == [tuple(r) for r in expected] and len(got) == 2
    row = got[0]
    assert row.last_seen_at == AT and row.last_seen_at.tzinfo is not None
    assert row.active is True and row.mfa_passed is False and row.totp_secret is None and row.revoked_at is None
    assert {r.role for r in got} == {"marker", "team_leader"}
    assert db.read_rows(_LOAD, {"sid": "unknown"}) == []

    limited = FastStatement(select(User.username, User.active).where(User.id > bindparam("after"))
                       .order_by(User.id).limit(1))
    assert [tuple(r) for r in db.read_rows(limited, {"after": 0})] == [("fa", True)]


def test_a_datetime_parameter_is_bound_as_utc(db):
    _users(db)
    seen_after = FastStatement(select(LoginSession.id).where(LoginSession.last_seen_at >= bindparam("t")))
    local = AT.astimezone(dt.timezone(dt.timedelta(hours=8)))   # the same instant, Beijing time
    assert [r.id for r in db.read_rows(seen_after, {"t": local})] == ["s" * 64]
    assert db.read_rows(seen_after, {"t": AT + dt.timedelta(microseconds=1)}) == []
    with pytest.raises(ValueError, match="naive"):
        db.read_rows(seen_after, {"t": AT.replace(tzinfo=None)})


def test_statement_events_see_fast_reads(db):
    """Statement counters (the benchmark's, the tests') keep counting them."""
    seen: list[str] = []
    listener = lambda _c, _cur, sql, *_a: seen.append(sql)  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        for _ in range(3):
            db.read_rows(_LOAD, {"sid": "x"})
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert len(seen) == 3 and all("login_session" in sql for sql in seen)


def test_errors_are_sqlalchemys(db):
    broken = FastStatement(select(text("no_such_column")).select_from(text("no_such_table")))
    with pytest.raises(DBAPIError):
        db.read_rows(broken)
    assert db.read_rows(_LOAD, {"sid": "x"}) == []   # the pooled connection is still usable


def test_statements_that_change_text_per_call_are_refused(db):
    with pytest.raises(ValueError, match="fixed SQL text"):
        db.read_rows(FastStatement(select(User.id).where(User.id.in_([1, 2]))))


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_dropped_in_use_is_replaced_and_the_read_retried(db_url, db, pg_server, monkeypatch):
    monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 3600)   # no checkout ping: the read itself meets the drop
    pid_of = FastStatement(select(func.pg_backend_pid().label("pid")))
    pid = db.read_rows(pid_of)[0].pid
    with pg_server["engine"].connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    assert db.read_rows(pid_of)[0].pid != pid


# --- inside a transaction (marking.fastsql.run_in): the hot path's writes --------------------------

_RENAME = FastStatement(update(User).where(User.id == bindparam("uid")).values(display_name=bindparam("name"))
                        .returning(User.id, User.display_name.label("shown")))
_RENAME_QUIETLY = FastStatement(update(User).where(User.id == bindparam("uid"))
                                .values(display_name=bindparam("name")))
_GRANT = FastStatement(insert(UserRole).values(user_id=bindparam("uid"), role=bindparam("role")))


def _display_name(db, uid):
    with db.read() as s:
        return s.get(User, uid).display_name


def test_a_write_returns_its_rows_and_commits_or_rolls_back_with_the_session(db):
    a, _b = _users(db)
    with db.write() as s:
        rows = run_in(s, _RENAME, {"uid": a, "name": "Renamed"})
    assert [tuple(r) for r in rows] == [(a, "Renamed")] and rows[0].shown == "Renamed"
    assert _display_name(db, a) == "Renamed"

    class Undo(Exception):
        pass

    with pytest.raises(Undo):
        with db.write() as s:
            assert first(run_in(s, _RENAME, {"uid": a, "name": "Lost"})).shown == "Lost"
            raise Undo
    assert _display_name(db, a) == "Renamed"   # rolled back with the session
    with db.write() as s:
        assert first(run_in(s, _RENAME, {"uid": 10 ** 9, "name": "x"})) is None


def test_a_statement_without_result_columns_gives_no_rows(db):
    a, _b = _users(db)
    with db.write() as s:
        assert run_in(s, _RENAME_QUIETLY, {"uid": a, "name": "Quiet"}) == []
        assert run_in(s, _GRANT, {"uid": a, "role": "technician"}) == []
        # the session's own reads see the writes: one transaction, one connection
        assert s.execute(select(User.display_name).where(User.id == a)).scalar_one() == "Quiet"
    with db.read() as s:
        assert {r.role for r in s.get(User, a).roles} == {"marker", "team_leader", "technician"}


def test_a_unique_violation_is_sqlalchemys_integrity_error(db):
    """``Database.run`` retries an IntegrityError (a race on a UNIQUE constraint), so it must
    arrive as SQLAlchemy's, as from ``Connection.execute``."""
    a, _b = _users(db)
    calls = []

    def grant_twice(s):
        calls.append(1)
        run_in(s, _GRANT, {"uid": a, "role": "marker"})   # held already

    with pytest.raises(IntegrityError):
        db.run(grant_twice)
    assert len(calls) > 1   # retried, as a race would be
    with db.read() as s:
        assert {r.role for r in s.get(User, a).roles} == {"marker", "team_leader"}


def test_python_side_column_defaults_are_refused(db):
    """SQLAlchemy computes ``default=`` values per execution; run on the cursor they would be NULL."""
    no_created_at = FastStatement(insert(User).values(username=bindparam("u"), display_name="x", password_hash="x"))
    with db.write() as s:
        with pytest.raises(ValueError, match="Python-side column defaults: .*created_at"):
            run_in(s, no_created_at, {"u": "fc"})
    # ... and where every column is given, nothing is refused
    everything = FastStatement(update(Script).where(Script.id == bindparam("sid"))
                               .values(total_num=bindparam("n")))
    with db.write() as s:
        assert run_in(s, everything, {"sid": 10 ** 9, "n": 1}) == []


# --- ORM objects from rows read on the cursor (marking.fastsql.EntityColumns) ----------------------

_USER = EntityColumns(User, prefix="u")
_USER_BY_ID = FastStatement(select(*_USER.columns).where(User.id == bindparam("uid")))


def _counting(db):
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: seen.append(sql))
    return seen


def test_an_entity_read_on_the_cursor_is_a_persistent_clean_object_of_the_session(db):
    a, _b = _users(db)
    with db.read() as s:
        loaded = s.get(User, a)
        expected = {prop.key: getattr(loaded, prop.key) for prop in sa_inspect(User).column_attrs}
    with db.write() as s:
        user = _USER.load(s, first(run_in(s, _USER_BY_ID, {"uid": a})))
        assert {prop.key: getattr(user, prop.key) for prop in sa_inspect(User).column_attrs} == expected
        assert user.created_at.tzinfo is not None          # the columns' result processing
        seen = _counting(db)
        assert s.get(User, a) is user and user in s and not s.dirty and not s.is_modified(user)
        assert seen == []                                  # in the identity map: no SQL
        assert {r.role for r in user.roles} == {"marker", "team_leader"}   # relationships load on access
        user.display_name = "Changed"                      # persistent: a change is flushed
    assert _display_name(db, a) == "Changed"


def test_an_object_the_session_holds_is_returned_and_refreshed_only_when_asked(db):
    a, _b = _users(db)
    with db.write() as s:
        held = s.get(User, a)
        behind = update(User.__table__).where(User.__table__.c.id == a)   # Core: the object is not told
        s.connection().execute(behind.values(display_name="Newer"))
        row = first(run_in(s, _USER_BY_ID, {"uid": a}))
        assert _USER.load(s, row) is held and held.display_name == "Fa"   # as a query without populate_existing
        s.expire(held, ["display_name"])
        seen = _counting(db)
        assert _USER.load(s, row) is held and held.display_name == "Newer" and seen == []   # filled from the row
        s.connection().execute(behind.values(display_name="Newest"))
        row = first(run_in(s, _USER_BY_ID, {"uid": a}))
        assert _USER.load(s, row, refresh=True) is held and held.display_name == "Newest"
        assert not s.is_modified(held)


def test_an_outer_join_that_found_nothing_gives_no_object(db):
    a, _b = _users(db)
    item = EntityColumns(Script, prefix="s")
    statement = FastStatement(select(User.id, *item.columns).select_from(User)
                              .outerjoin(Script, Script.id == bindparam("sid")).where(User.id == bindparam("uid")))
    with db.write() as s:
        row = first(run_in(s, statement, {"uid": a, "sid": 10 ** 9}))
        assert row.id == a and item.load(s, row) is None and item.value(row, "id") is None


def test_one_is_result_ones_contract(db):
    with pytest.raises(NoResultFound):
        one([])
    with pytest.raises(MultipleResultsFound):
        one([1, 2])
    assert one([7]) == 7


def test_a_statement_whose_rows_become_objects_sees_the_sessions_pending_changes(db):
    """As ``Session.execute`` autoflushes before an ORM query: an object changed in the
    session and then read again under a lock (refreshed from the row) keeps the change."""
    a, _b = _users(db)
    flushing = FastStatement(_USER_BY_ID.statement, autoflush=True)
    with db.write() as s:
        user = s.get(User, a)
        user.display_name = "Pending"
        assert _USER.load(s, first(run_in(s, flushing, {"uid": a})), refresh=True).display_name == "Pending"
        user.display_name = "Not flushed"
        with s.no_autoflush:   # honoured, as for a query
            row = first(run_in(s, flushing, {"uid": a}))
        assert _USER.value(row, "display_name") == "Pending"
    assert _display_name(db, a) == "Not flushed"
