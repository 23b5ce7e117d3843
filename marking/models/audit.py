"""The score ledger (append-only, hash-chained) and the event outbox."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime, sha256_column, utcnow


class LedgerEvent(Base):
    """R-QC-4, R-QC-5, R-SEC-2. Never updated or deleted: triggers refuse both.

    ``seq`` is assigned from the locked head row, never from a database sequence
    (sequences leave gaps and are not transactional). ``at`` is stored as the exact
    text that was hashed, so SQLite and PostgreSQL hash identical bytes.
    """

    __tablename__ = "ledger_event"
    __table_args__ = (CheckConstraint("seq >= 1", name="seq_positive"),
                      Index("uq_ledger_event_entry_id", "entry_id", unique=True))

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"),
                                     primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(48), index=True)
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[str] = mapped_column(Text)  # canonical JSON; scores as exact strings
    prev_hash: Mapped[str] = mapped_column(sha256_column())
    hash: Mapped[str] = mapped_column(sha256_column(), unique=True)
    # The deferred-chaining entry this event was chained from (NULL when the change's own
    # transaction chained it). Unique (index above): an entry is chained once.
    entry_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))


class LedgerEntry(Base):
    """An event committed with its change but not yet chained (deferred chaining).

    With ``MC_LEDGER_CHAINING=deferred`` a transaction records its events here, without
    touching the head row; the chainer (``marking.ledger.chain_pending``) appends them to
    ``ledger_event`` in one batch and removes them. Triggers refuse UPDATE and TRUNCATE,
    and refuse DELETE unless an identical event carrying this ``entry_id`` is already in
    the chain, so an entry can be neither altered nor dropped before it is chained.
    """

    __tablename__ = "ledger_entry"
    # Ids are never reused (chained entries are deleted, and ``ledger_event.entry_id`` is
    # unique): SQLite would otherwise restart at max(id) + 1 once the table is empty.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(48))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[str] = mapped_column(Text)


class LedgerHead(Base):
    """The single chain-head row, locked by every append (no forks, no gaps)."""

    __tablename__ = "ledger_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), default=0)
    hash: Mapped[str] = mapped_column(sha256_column())


class OutboxEvent(Base):
    """Cross-process live events; the web process drains them by increasing id."""

    __tablename__ = "outbox_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    topic: Mapped[str] = mapped_column(String(60), index=True)
    name: Mapped[str] = mapped_column(String(60))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
