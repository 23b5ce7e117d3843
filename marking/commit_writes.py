"""What a transaction queues for its commit: ledger events and outbox events.

One ``before_commit`` listener writes both queues (``marking.ledger.append`` and
``marking.events.publish`` only queue), so a rollback drops both and a commit writes
both with the change they describe (R-QC-4; the outbox's live updates).

On PostgreSQL with deferred ledger chaining, a transaction that queued both kinds —
every mark does — writes them in **one** statement (issue 8 counts round trips per
mark)::

    WITH entries AS (INSERT INTO ledger_entry … SELECT … FROM jsonb_array_elements(…) WITH ORDINALITY ORDER BY n)
    INSERT INTO outbox_event … SELECT … FROM jsonb_array_elements(…) WITH ORDINALITY ORDER BY n

Each queue is one JSON parameter (an array of rows, each an array of column values), so
the statement's text is the same whatever the counts (one prepared statement). JSON
rather than one array parameter per column: psycopg escapes text arrays element by
element in Python (a regular expression per value), which cost a server 4 % of its CPU
under load; ``json.dumps`` is C, and ``->>`` gives back each string exactly. ``jsonb``, as
it is parsed once, where ``->>`` on ``json`` parses the element's text again for every
column (the chainer's eleven-column insert cost PostgreSQL a third more CPU so). ``ORDER BY``
the ordinality keeps the queue's order in the ids, as the separate inserts did: the
chainer chains entries by id and readers drain the outbox by id. Otherwise each module
writes its own queue (inline chaining needs the head row; SQLite's round trips cost next
to nothing).
"""
from __future__ import annotations

import json

from sqlalchemy import bindparam, text
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from . import events, ledger
from .fastsql import FastStatement, run_in
from .models.base import UTCDateTime, utcnow

_BOTH = FastStatement(text("""
WITH entries AS (
  INSERT INTO ledger_entry (at, actor_id, action, entity, entity_id, reason, data)
  SELECT e.v->>0, CAST(e.v->>1 AS integer), e.v->>2, e.v->>3, e.v->>4, e.v->>5, e.v->>6
  FROM jsonb_array_elements(CAST(:entries AS jsonb)) WITH ORDINALITY AS e(v, n)
  ORDER BY e.n
)
INSERT INTO outbox_event (topic, name, payload, created_at)
SELECT o.v->>0, o.v->>1, o.v->>2, :o_created_at
FROM jsonb_array_elements(CAST(:events AS jsonb)) WITH ORDINALITY AS o(v, n)
ORDER BY o.n
""").bindparams(bindparam("o_created_at", type_=UTCDateTime())))   # every mark: on the cursor

_ENTRY_COLUMNS = ("at", "actor_id", "action", "entity", "entity_id", "reason", "data")
_OUTBOX_COLUMNS = ("topic", "name", "payload")


def _rows_json(rows: list[dict], columns: tuple[str, ...]) -> str:
    return json.dumps([[row[column] for column in columns] for row in rows], separators=(",", ":"))


def _writes_both_at_once(session: Session) -> bool:
    return bool(session.info.get(ledger.DEFERRED_KEY) and session.info.get(ledger.PENDING_KEY)
                and session.info.get(events.PENDING_KEY)
                and session.connection().dialect.name == "postgresql")


def write_queued(session: Session) -> None:
    """Write the transaction's queued ledger and outbox events (``before_commit``)."""
    if not _writes_both_at_once(session):
        ledger.write_pending(session)
        events.write_pending(session)
        return
    entries = [ledger.entry_row(event) for event in session.info.pop(ledger.PENDING_KEY)]
    queued = session.info.pop(events.PENDING_KEY)
    run_in(session, _BOTH, {"entries": _rows_json(entries, _ENTRY_COLUMNS),
                            "events": _rows_json(queued, _OUTBOX_COLUMNS), "o_created_at": utcnow()})


def discard_queued(session: Session) -> None:
    ledger.discard_pending(session)
    events.discard_pending(session)


# Every session, whatever made it: queued events are written by the commit that makes
# their change durable, and dropped with a rollback.
sa_event.listen(Session, "before_commit", write_queued)
sa_event.listen(Session, "after_rollback", discard_queued)
