"""Hot statements run on the DBAPI cursor, compiled once per dialect (issue 8).

SQLAlchemy spends about 0.1 ms of Python CPU on each execution of a Core statement
(its cache key, parameter and result set-up), more than psycopg spends on the round
trip itself, and psycopg builds a column description for every result that
SQLAlchemy asks for. The per-request session check pays that on every request a
server answers, and a mark pays it on each of its Core statements (the fenced mark,
the deal, the ledger and outbox write). :class:`FastStatement` keeps SQLAlchemy's
compilation and type handling but does them once per dialect: the SQL text, the bind
processors (``UTCDateTime`` to naive UTC, SQLite's datetime strings) and the result
processors are kept, and each run is a DBAPI ``execute`` (and ``fetchall`` when the
statement returns rows).

Two ways to run one:

* ``Database.read_rows`` — a read on its own pooled connection, outside any transaction;
* :func:`run_in` — inside a session's transaction, on the connection it holds (what it
  writes commits or rolls back with the session).

What is kept from SQLAlchemy's own execution:

* the ``before_cursor_execute`` and ``after_cursor_execute`` events fire (statement
  counters and tracing see these statements; listeners registered with ``retval=True``
  cannot replace the statement here);
* errors are SQLAlchemy's (:meth:`sqlalchemy.exc.DBAPIError.instance`): a UNIQUE
  violation is an ``IntegrityError``, which ``Database.run`` retries, and a dropped
  connection is invalidated, so ``Database.read_rows`` retries on a fresh one.

A statement that reads ORM entities selects their columns through :class:`EntityColumns`,
which turns a row back into the session's object (``EntityColumns.load``) the way a
query would, without SQLAlchemy's ORM execution: the object the session holds already,
or a new persistent, unmodified one (``make_transient_to_detached`` and
``Session.add``, SQLAlchemy's documented way to "manufacture persistent state without
any SQL calls"). Its relationships are not loaded; they load on first access.

Only statements SQLAlchemy compiles to fixed SQL text qualify (no expanding ``IN``,
no ``literal_execute``) and that need no Python-side column default computed per
execution: :class:`FastStatement` refuses the others when it compiles them. Rows are named tuples; a statement without result columns (an ``UPDATE``
without ``RETURNING``, a ``text()`` insert) gives an empty list.
"""
from __future__ import annotations

import threading
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import instance_dict, set_committed_value
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import SelectBase


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...] | None        # parameter order for positional paramstyles
    defaults: dict[str, Any]             # values bound in the statement (LIMIT 1000, …)
    bind: tuple[tuple[str, Callable], ...]
    results: tuple[Callable | None, ...] | None   # None: the statement returns no rows
    row: type | None


def _result_columns(statement):
    """The statement's result columns by key, or None when it returns no rows."""
    if isinstance(statement, SelectBase):
        return statement.selected_columns
    if isinstance(statement, UpdateBase) and len(statement.exported_columns):
        return statement.exported_columns   # RETURNING's columns
    return None                             # no RETURNING, text(), DDL


class FastStatement:
    """A statement compiled once per dialect; run it with ``Database.read_rows`` or :func:`run_in`."""

    def __init__(self, statement, *, autoflush: bool = False):
        """``autoflush``: :func:`run_in` flushes the session's pending changes first, as
        ``Session.execute`` does for an ORM query; set it for a statement whose rows
        become ORM objects (:class:`EntityColumns`), so the row has what the session
        changed and a refreshed object does not lose it."""
        self.statement = statement
        self.autoflush = autoflush
        self._by_dialect: dict[tuple[str, str], _Compiled] = {}
        self._lock = threading.Lock()

    def compiled(self, dialect) -> _Compiled:
        key = (dialect.name, dialect.driver)
        found = self._by_dialect.get(key)
        if found is None:
            with self._lock:
                found = self._by_dialect.get(key) or self._by_dialect.setdefault(key, self._compile(dialect))
        return found

    def _compile(self, dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        if compiled.post_compile_params or compiled.literal_execute_params:
            raise ValueError("FastStatement needs fixed SQL text (no expanding IN, no literal_execute)")
        if compiled.insert_prefetch or compiled.update_prefetch:
            # SQLAlchemy computes Python-side column defaults per execution; run here they
            # would be NULL. Give every column a value (or a bind parameter) instead.
            raise ValueError("FastStatement cannot apply Python-side column defaults: "
                             f"{', '.join(c.name for c in compiled.insert_prefetch + compiled.update_prefetch)}")
        defaults = compiled.construct_params(_check=False)
        bind = []
        for name in defaults:
            processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                bind.append((name, processor))
        names = tuple(compiled.positiontup) if dialect.positional else None
        columns = _result_columns(self.statement)
        if columns is None:
            return _Compiled(str(compiled), names, defaults, tuple(bind), None, None)
        results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns)
        keys = list(columns.keys())
        return _Compiled(str(compiled), names, defaults, tuple(bind), results,
                         namedtuple("FastRow", keys, rename=True))

    def params(self, compiled: _Compiled, given: dict[str, Any] | None):
        values = {**compiled.defaults, **(given or {})}
        for name, processor in compiled.bind:
            values[name] = processor(values[name])
        if compiled.names is not None:
            return tuple(values[name] for name in compiled.names)
        return values


def execute(fast: FastStatement, connection, params: dict[str, Any] | None) -> list:
    """Run ``fast`` on ``connection`` (a SQLAlchemy Connection, in a transaction or not)."""
    dialect = connection.dialect
    compiled = fast.compiled(dialect)
    values = fast.params(compiled, params)
    dbapi_connection = connection.connection.dbapi_connection
    cursor = None
    try:
        cursor = dbapi_connection.cursor()
        connection.dispatch.before_cursor_execute(connection, cursor, compiled.sql, values, None, False)
        cursor.execute(compiled.sql, values)
        connection.dispatch.after_cursor_execute(connection, cursor, compiled.sql, values, None, False)
        raw = cursor.fetchall() if compiled.results is not None else ()
    except dialect.loaded_dbapi.Error as error:
        invalidated = dialect.is_disconnect(error, dbapi_connection, cursor)
        if invalidated:
            connection.invalidate(error)
        raise sa_exc.DBAPIError.instance(compiled.sql, values, error, dialect.loaded_dbapi.Error,
                                         connection_invalidated=invalidated, dialect=dialect) from error
    finally:
        if cursor is not None:
            try:
                cursor.close()
            except dialect.loaded_dbapi.Error:
                pass
    processors = compiled.results
    if not raw:
        return []
    make = compiled.row._make
    if not any(processors):
        return [make(row) for row in raw]
    return [make(value if p is None else p(value) for p, value in zip(processors, row)) for row in raw]


def run_in(session, fast: FastStatement, params: dict[str, Any] | None = None) -> list:
    """Run ``fast`` inside ``session``'s transaction (begun if it was not)."""
    if fast.autoflush and session.autoflush:   # (``no_autoflush`` turns it off, as for queries)
        session.flush()                        # nothing to write: returns at once
    return execute(fast, session.connection(), params)


def first(rows: list):
    """The first row or None, as ``Result.first()``."""
    return rows[0] if rows else None


def one(rows: list):
    """The only row, as ``Result.one()`` (its errors too)."""
    if not rows:
        raise sa_exc.NoResultFound("No row was found when one was required")
    if len(rows) > 1:
        raise sa_exc.MultipleResultsFound("Multiple rows were found when exactly one was required")
    return rows[0]


class EntityColumns:
    """An ORM entity's mapped columns in a :class:`FastStatement`, labelled ``prefix`` and
    a number (short: psycopg caches the parsing of statements up to 4 KB), and the
    entity's object made from a row of them."""

    def __init__(self, entity, table=None, prefix: str = ""):
        mapper = sa_inspect(entity)
        table = mapper.local_table if table is None else table
        self._mapper = mapper
        self._attributes = tuple((prop.key, f"{prefix}{n}") for n, prop in enumerate(mapper.column_attrs))
        self._labels = dict(self._attributes)
        self.columns = tuple(table.c[prop.columns[0].key].label(label)
                             for prop, (_key, label) in zip(mapper.column_attrs, self._attributes))
        self._identity = tuple(self._labels[mapper.get_property_by_column(column).key]
                               for column in mapper.primary_key)

    def value(self, row, key: str):
        """One attribute's value in ``row`` (without making the object)."""
        return getattr(row, self._labels[key])

    def load(self, session, row, *, refresh: bool = False):
        """The object for ``row`` in ``session`` (None when its key is NULL: an outer join
        found nothing). ``refresh``: an object the session holds already takes the row's
        values (as ``populate_existing``: the row is newer, e.g. read under a lock)."""
        identity = tuple(getattr(row, label) for label in self._identity)
        if None in identity:
            return None
        held = session.identity_map.get(self._mapper.identity_key_from_primary_key(identity))
        if held is not None:
            # As a query does: the row fills what the object lacks (expired, never loaded)
            # and, with ``refresh``, replaces the rest.
            missing = None if refresh else sa_inspect(held).unloaded
            for key, label in self._attributes:
                if missing is None or key in missing:
                    set_committed_value(held, key, getattr(row, label))
            return held
        obj = self._mapper.class_manager.new_instance()
        instance_dict(obj).update((key, getattr(row, label)) for key, label in self._attributes)
        make_transient_to_detached(obj)   # as loaded: no history, the key from the row
        session.add(obj)                  # persistent and clean: nothing to flush
        return obj
