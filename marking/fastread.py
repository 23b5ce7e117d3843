"""Hot one-statement reads run on the pooled DBAPI connection (issue 8).

SQLAlchemy spends about 0.1 ms of Python CPU on each execution of a Core statement
(its cache key, parameter and result set-up), more than psycopg spends on the round
trip itself. The per-request session check pays that on every request a server
answers. :class:`FastRead` keeps SQLAlchemy's compilation and type handling but does
them once per dialect: the SQL text, the bind processors (``UTCDateTime`` to naive
UTC, SQLite's datetime strings) and the result processors are kept, and each run
is a DBAPI ``execute`` and ``fetchall``.

What is kept from SQLAlchemy's own execution:

* the ``before_cursor_execute`` and ``after_cursor_execute`` events fire (statement
  counters and tracing see these reads; listeners registered with ``retval=True``
  cannot replace the statement here);
* errors are SQLAlchemy's (:meth:`sqlalchemy.exc.DBAPIError.instance`), and a
  dropped connection is invalidated, so ``Database.read_rows`` retries on a fresh one.

Only statements SQLAlchemy compiles to fixed SQL text qualify (no expanding ``IN``,
no ``literal_execute``): :class:`FastRead` refuses the others when it compiles them.
"""
from __future__ import annotations

import threading
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import exc as sa_exc


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...] | None        # parameter order for positional paramstyles
    defaults: dict[str, Any]             # values bound in the statement (LIMIT 1000, …)
    bind: tuple[tuple[str, Callable], ...]
    results: tuple[Callable | None, ...]
    row: type


class FastRead:
    """A read statement compiled once per dialect; run it with ``Database.read_rows``."""

    def __init__(self, statement):
        self.statement = statement
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
            raise ValueError("FastRead needs fixed SQL text (no expanding IN, no literal_execute)")
        defaults = compiled.construct_params(_check=False)
        bind = []
        for name in defaults:
            processor = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                bind.append((name, processor))
        keys = list(self.statement.selected_columns.keys())
        results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                        for column in self.statement.selected_columns)
        names = tuple(compiled.positiontup) if dialect.positional else None
        return _Compiled(str(compiled), names, defaults, tuple(bind), results,
                         namedtuple("FastRow", keys, rename=True))

    def params(self, compiled: _Compiled, given: dict[str, Any] | None):
        values = {**compiled.defaults, **(given or {})}
        for name, processor in compiled.bind:
            values[name] = processor(values[name])
        if compiled.names is not None:
            return tuple(values[name] for name in compiled.names)
        return values


def execute(read: FastRead, connection, params: dict[str, Any] | None) -> list:
    """Run ``read`` on ``connection`` (a SQLAlchemy Connection outside a transaction)."""
    dialect = connection.dialect
    compiled = read.compiled(dialect)
    values = read.params(compiled, params)
    dbapi_connection = connection.connection.dbapi_connection
    cursor = None
    try:
        cursor = dbapi_connection.cursor()
        connection.dispatch.before_cursor_execute(connection, cursor, compiled.sql, values, None, False)
        cursor.execute(compiled.sql, values)
        connection.dispatch.after_cursor_execute(connection, cursor, compiled.sql, values, None, False)
        raw = cursor.fetchall()
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
    make = compiled.row._make
    if not any(processors):
        return [make(row) for row in raw]
    return [make(value if p is None else p(value) for p, value in zip(processors, row)) for row in raw]
