"""What a transaction queues for its commit: ledger events and outbox events.

One ``before_commit`` listener writes both queues (``marking.ledger.append`` and
``marking.events.publish`` only queue), so a rollback drops both and a commit writes
both with the change they describe (R-QC-4; the outbox's live updates).

On PostgreSQL with deferred ledger chaining, a transaction that queued both kinds —
every mark does — writes them in **one** statement (issue 8 counts round trips per
mark)::

    WITH entries AS (INSERT INTO ledger_entry … SELECT … FROM unnest(…) WITH ORDINALITY ORDER BY n)
    INSERT INTO outbox_event … SELECT … FROM unnest(…) WITH ORDINALITY ORDER BY n

Each list is one array parameter per column, so the statement's text is the same
whatever the counts (one prepared statement). ``ORDER BY`` the ordinality keeps the
queue's order in the ids, as the separate inserts did: the chainer chains entries by
id and readers drain the outbox by id. Otherwise each module writes its own queue
(inline chaining needs the head row; SQLite's round trips cost next to nothing).
"""
from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from . import events, ledger
from .models.base import UTCDateTime, utcnow

_BOTH = text("""
WITH entries AS (
  INSERT INTO ledger_entry (at, actor_id, action, entity, entity_id, reason, data)
  SELECT e.at, e.actor_id, e.action, e.entity, e.entity_id, e.reason, e.data
  FROM unnest(CAST(:e_at AS varchar[]), CAST(:e_actor_id AS integer[]), CAST(:e_action AS varchar[]),
              CAST(:e_entity AS varchar[]), CAST(:e_entity_id AS varchar[]), CAST(:e_reason AS varchar[]),
              CAST(:e_data AS text[]))
       WITH ORDINALITY AS e(at, actor_id, action, entity, entity_id, reason, data, n)
  ORDER BY e.n
)
INSERT INTO outbox_event (topic, name, payload, created_at)
SELECT o.topic, o.name, o.payload, :o_created_at
FROM unnest(CAST(:o_topic AS varchar[]), CAST(:o_name AS varchar[]), CAST(:o_payload AS text[]))
     WITH ORDINALITY AS o(topic, name, payload, n)
ORDER BY o.n
""").bindparams(bindparam("o_created_at", type_=UTCDateTime()))

_ENTRY_COLUMNS = ("at", "actor_id", "action", "entity", "entity_id", "reason", "data")
_OUTBOX_COLUMNS = ("topic", "name", "payload")


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
    params = {f"e_{column}": [row[column] for row in entries] for column in _ENTRY_COLUMNS}
    params.update({f"o_{column}": [row[column] for row in queued] for column in _OUTBOX_COLUMNS})
    params["o_created_at"] = utcnow()
    session.connection().execute(_BOTH, params)


def discard_queued(session: Session) -> None:
    ledger.discard_pending(session)
    events.discard_pending(session)


# Every session, whatever made it: queued events are written by the commit that makes
# their change durable, and dropped with a rollback.
sa_event.listen(Session, "before_commit", write_queued)
sa_event.listen(Session, "after_rollback", discard_queued)
