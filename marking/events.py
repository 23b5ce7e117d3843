"""Outbox events: every state change the web shows is published in the same transaction.

Topics: ``item:<id>`` (queue and progress for an item's markers), ``leader:<item_id>``
(arbitration, problems, disputes for the item's team leader), ``subject:<id>``
(totals), ``authority`` (changes awaiting approval). The web issue drains the table
by increasing id. Payloads never carry candidate identity or a marker's score to a
topic markers can read (R-SEC-1).
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from .models import OutboxEvent

_INSERT = insert(OutboxEvent.__table__)


def publish(session: Session, topic: str, name: str, payload: dict[str, Any] | None = None) -> None:
    # A plain INSERT on the transaction's connection: no unit-of-work bookkeeping on the
    # hot paths (claim, submit), and it commits or rolls back with the change.
    session.connection().execute(_INSERT, {"topic": topic, "name": name,
                                           "payload": json.dumps(payload or {}, sort_keys=True, separators=(",", ":"))})


def item_topic(item_id: int) -> str:
    return f"item:{item_id}"


def leader_topic(item_id: int) -> str:
    return f"leader:{item_id}"
