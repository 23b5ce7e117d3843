"""Database engine and transactions, identical in behaviour on SQLite and PostgreSQL.

Services own their transactions through :class:`Database`:

* ``db.write()`` — a write transaction. On SQLite it starts with ``BEGIN IMMEDIATE``
  so the write lock is taken up front (a deferred transaction that reads, then
  writes, gets SQLITE_BUSY despite busy_timeout because the lock upgrade cannot
  wait). On PostgreSQL it is an ordinary READ COMMITTED transaction; claims use
  ``FOR UPDATE SKIP LOCKED`` and decisions lock the row they decide on.
* ``db.read()`` — a read-only transaction (deferred on SQLite, so readers never
  block writers under WAL).
* ``db.run(fn)`` — ``fn(session)`` in a write transaction, retried when a
  constraint race (IntegrityError) or a transient lock/serialisation failure is
  the cause. Rules live in UNIQUE/CHECK constraints; a pre-check alone is not
  enough under concurrency, so callers catch the race here and retry.
"""
from __future__ import annotations

import random
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from . import fastsql
from .fastsql import FastStatement

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _install_sqlite_recipe(engine: Engine) -> None:
    """SQLAlchemy's documented recipe for correct SQLite transactions on Python 3.11.

    The sqlite3 driver's legacy transaction handling is switched off
    (``isolation_level = None``) and SQLAlchemy emits BEGIN itself, IMMEDIATE for
    writers (see ``dialects/sqlite/base.py``: "Transactions with SQLite and the
    sqlite3 driver").
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised via engine
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # pragma: no cover - exercised via engine
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return   # ``read_rows``: one statement, its own implicit transaction
        mode = "IMMEDIATE" if options.get("mc_write") else "DEFERRED"
        connection.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str, **kwargs) -> Engine:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ValueError("use a SQLite file: in-memory databases cannot be shared by workers")
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        _install_sqlite_recipe(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_idle_connections(engine)
    return engine


IDLE_PING_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle for a while.

    SQLAlchemy's ``pool_pre_ping`` is a round trip on every checkout — three per mark
    under load. A connection in constant use needs none; one idle for more than a
    second may have been dropped (server restart, idle timeout), so it is pinged, and a
    dead one is replaced before the caller sees it (raising DisconnectionError makes
    the pool retry with a fresh connection). A connection that dies while in use still
    fails its statement; ``Database.run`` and ``read_rows`` retry on a fresh one.
    """

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection, record):
        record.info["mc_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy):
        idle_since = record.info.get("mc_idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()   # hand it over outside any transaction
        except Exception as exc:  # noqa: BLE001 - any failure means "replace it"
            raise DisconnectionError(f"pooled connection dropped while idle: {exc}") from exc


def is_transient(exc: BaseException) -> bool:
    """Lock timeouts, deadlocks, serialisation failures, dropped connections."""
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(getattr(exc, "orig", None), "sqlstate", None)
        return code in ("40001", "40P01", "55P03", "57P01", "08006", "08003")
    return False


def is_read_session(session: Session) -> bool:
    """True for a session made by :meth:`Database.read` (it must not write)."""
    return bool(session.get_bind().get_execution_options().get("mc_read"))


class Database:
    def __init__(self, url: str, *, ledger_chaining: str = "inline", **engine_kwargs):
        """``ledger_chaining``: ``inline`` or ``deferred`` (``marking.ledger``; MC_LEDGER_CHAINING)."""
        from .ledger import CHAINING_MODES, DEFERRED_KEY
        if ledger_chaining not in CHAINING_MODES:
            raise ValueError(f"ledger_chaining must be one of {', '.join(CHAINING_MODES)}, got {ledger_chaining!r}")
        self.url = url
        self.ledger_chaining = ledger_chaining
        self.engine = make_engine(url, **engine_kwargs)
        self._writer = self.engine.execution_options(mc_write=True)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT", mc_read=True)
        info = {DEFERRED_KEY: True} if ledger_chaining == "deferred" else {}
        self._write_sessions = sessionmaker(bind=self._writer, expire_on_commit=False, info=info)
        self._read_sessions = sessionmaker(bind=self.engine.execution_options(mc_read=True),
                                           expire_on_commit=False, info=info)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Session]:
        session = self._write_sessions()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        session = self._read_sessions()
        try:
            with session.begin():
                yield session
        finally:
            session.close()

    def read_rows(self, statement, params: dict | None = None) -> list:
        """One read statement in autocommit mode: a single round trip, no BEGIN/COMMIT.

        For hot reads that are one statement anyway (the per-request session check);
        a statement sees one consistent snapshot by itself. A :class:`marking.fastsql.FastStatement`
        runs on the DBAPI cursor with its SQL compiled once (no SQLAlchemy execution per call).
        """
        for attempt in (1, 2):
            try:
                with self._autocommit.connect() as conn:
                    if isinstance(statement, FastStatement):
                        return fastsql.execute(statement, conn, params)
                    return conn.execute(statement, params or {}).all()
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def run(
        self,
        fn: Callable[[Session], T],
        *,
        attempts: int = 8,
        retry_integrity: bool = True,
    ) -> T:
        """Run ``fn`` in a write transaction, retrying races and transient failures.

        ``fn`` must be safe to re-run from the start (it re-reads what it needs).
        """
        for attempt in range(1, attempts + 1):
            try:
                with self.write() as session:
                    return fn(session)
            except IntegrityError:
                if not retry_integrity or attempt == attempts:
                    raise
            except DBAPIError as exc:
                if not is_transient(exc) or attempt == attempts:
                    raise
            # Jittered back-off so racing workers do not collide again in lockstep.
            time.sleep(min(0.2, 0.002 * (2**attempt)) * random.random())
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()
