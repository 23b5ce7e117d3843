"""Outbox events: every state change the web shows is published in the same transaction.

Topics: ``item:<id>`` (queue and progress for an item's markers), ``leader:<item_id>``
(arbitration, problems, disputes for the item's team leader), ``subject:<id>``
(totals), ``authority`` (changes awaiting approval). The web issue drains the table
by increasing id. Payloads never carry candidate identity or a marker's score to a
topic markers can read (R-SEC-1).
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from .models import OutboxEvent

PENDING_KEY = "outbox_pending"
# Executed as one multi-row INSERT by SQLAlchemy's "insertmanyvalues" (it batches an
# executemany that has RETURNING): one statement at commit for all of a transaction's
# events, cheaper on both sides than one INSERT per event or a hand-built VALUES list.
_INSERT = insert(OutboxEvent.__table__).returning(OutboxEvent.__table__.c.id)


def publish(session: Session, topic: str, name: str, payload: dict[str, Any] | None = None) -> None:
    """Queue an event in the caller's transaction; it is inserted by the commit that makes
    the change durable (``before_commit``) and dropped with a rollback.

    Queued rather than inserted at once: a mark publishes up to four events (issue 8's
    load target counts statements).
    """
    session.info.setdefault(PENDING_KEY, []).append(
        {"topic": topic, "name": name, "payload": json.dumps(payload or {}, sort_keys=True, separators=(",", ":"))})


def write_pending(session: Session) -> None:
    """Insert the queued events, in publish order (readers drain by increasing id)."""
    queued = session.info.pop(PENDING_KEY, None)
    if queued:
        session.connection().execute(_INSERT, queued)


def discard_pending(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


def item_topic(item_id: int) -> str:
    return f"item:{item_id}"


def leader_topic(item_id: int) -> str:
    return f"leader:{item_id}"


PRUNE_BATCH = 5000


def prune(db, *, keep: dt.timedelta, now: dt.datetime | None = None) -> int:
    """Delete outbox rows older than ``keep``; returns how many.

    Events are hints (pages re-fetch their numbers over HTTP; the marks and the ledger
    are the record), and at ~4 events a mark the table would otherwise grow by millions
    of rows an exam. A client away for longer than ``keep`` simply refreshes. Ids grow
    with time, so the old rows are the lowest ids: each batch is a primary-key range,
    and the oldest row is looked at first so that nothing is scanned when none is old.
    """
    cutoff = (now or dt.datetime.now(dt.timezone.utc)) - keep
    t = OutboxEvent.__table__
    removed = 0
    while True:
        with db.write() as session:
            oldest = session.execute(select(t.c.created_at).order_by(t.c.id).limit(1)).scalar()
            if oldest is None or oldest >= cutoff:
                return removed
            batch = select(t.c.id).where(t.c.created_at < cutoff).order_by(t.c.id).limit(PRUNE_BATCH).subquery()
            upto = session.execute(select(func.max(batch.c.id))).scalar()
            count = session.execute(delete(t).where(t.c.id <= upto, t.c.created_at < cutoff)).rowcount or 0
        removed += count
        if count < PRUNE_BATCH:
            return removed


# The before_commit listener that writes this module's queue (with the ledger's).
from . import commit_writes  # noqa: E402,F401
