"""The OMR read queue: fenced leases on ``omr_read`` rows (architecture.md §2, R-OMR-3).

* Every card gets two reads: read 1 (method "a") and read 2 (method "b", a diverse
  method, omr.md §6.7). UNIQUE(card, read_no) makes exactly two.
* A node claims a pending read, or a ``leased`` read whose lease expired (recycled),
  that is not of a card it already read: ``NOT EXISTS`` is the fast path,
  UNIQUE(card, node) the guarantee (a race fails the constraint; ``db.run`` retries).
  PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: the claim runs in ``BEGIN IMMEDIATE``.
* A claim sets a fresh uuid4 ``lease_token`` (the fencing token). ``heartbeat`` extends
  leases still held; ``complete`` writes the result only ``WHERE lease_token = :tok AND
  status = 'leased'`` — rowcount 0 means the lease was lost (expired and re-claimed) and
  the result is discarded. At-least-once execution, effectively-once results.
* ``node`` is a stable configured name (``omr-a``), not a process id: a restarted
  process is the same machine. When one node is down, second reads wait for another
  node rather than silently reusing the first: :func:`queue_status` says so.
* The completion that brings a card's second result settles the card (comparison of
  the two reads, :mod:`marking.omr_compare`) in the same transaction, with the card
  row locked, so two concurrent completions cannot both miss it.
* R-OMR-1: a result is refused unless it was made with the batch's frozen template
  hash, settings hash and recognition version.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from . import events
from .models import Card, OmrRead, PageImage, ScanBatch, Subject
from .models.scanning import ItemClip, OmrNode

DEFAULT_LEASE_SECONDS = 60
MAX_ATTEMPTS = 5
METHODS = {1: "a", 2: "b"}
NODE_STALE_SECONDS = 30


class FrozenSettingsError(RuntimeError):
    """A result made with another template/settings/recognition version (R-OMR-1)."""


@dataclass(frozen=True)
class Lease:
    read_id: int
    card_id: int
    batch_id: int
    read_no: int
    method: str
    node: str
    token: str
    leased_until: dt.datetime
    page_sha256: str
    page_code: int | None


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.timezone.utc)


def batch_topic(batch_id: int) -> str:
    return f"batch:{batch_id}"


# --------------------------------------------------------------------------- enqueue

def enqueue_reads(session: Session, card: Card) -> list[OmrRead]:
    """Two reads for a new card, in the caller's (ingest) transaction."""
    reads = [OmrRead(card_id=card.id, read_no=n, method=m, status="pending", attempts=0)
             for n, m in METHODS.items()]
    session.add_all(reads)
    return reads


# --------------------------------------------------------------------------- nodes

def touch_node(db, node: str, *, state: str = "running", now: dt.datetime | None = None,
               started: bool = False) -> None:
    """Upsert the node's row (the technicians' "last seen")."""
    now = _now(now)

    def work(session: Session) -> None:
        row = session.get(OmrNode, node)
        if row is None:
            session.add(OmrNode(name=node, state=state, host=socket.gethostname()[:120], pid=os.getpid(),
                                started_at=now, last_seen_at=now))
        else:
            row.state = state
            row.last_seen_at = now
            row.pid = os.getpid()
            row.host = socket.gethostname()[:120]
            if started:
                row.started_at = now

    db.run(work)


# --------------------------------------------------------------------------- claim

def claim(db, node: str, *, limit: int = 1, lease_seconds: int = DEFAULT_LEASE_SECONDS,
          now: dt.datetime | None = None, batch_id: int | None = None) -> list[Lease]:
    """Claim up to ``limit`` reads for ``node`` (pending first, then expired leases)."""
    if not node or len(node) > 40:
        raise ValueError("a node name is 1-40 characters (a stable configured name, e.g. omr-a)")
    now = _now(now)
    until = now + dt.timedelta(seconds=lease_seconds)

    def work(session: Session) -> list[Lease]:
        r = OmrRead.__table__
        mine = aliased(OmrRead)
        claimable = or_(r.c.status == "pending",
                        and_(r.c.status == "leased", r.c.leased_until < now))
        already = exists().where(mine.card_id == r.c.card_id, mine.node == node, mine.id != r.c.id)
        query = (select(r.c.id, r.c.card_id, r.c.read_no, r.c.method, Card.batch_id, Card.page_code,
                        PageImage.sha256)
                 .join(Card, Card.id == r.c.card_id).join(PageImage, PageImage.id == Card.page_image_id)
                 .where(claimable, ~already)
                 .order_by(r.c.card_id, r.c.read_no).limit(limit * 2))
        if batch_id is not None:
            query = query.where(Card.batch_id == batch_id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=r)
        leases: list[Lease] = []
        cards: set[int] = set()
        for row in session.execute(query).all():
            if row.card_id in cards:   # never both reads of one card to one node
                continue
            cards.add(row.card_id)
            token = str(uuid.uuid4())
            session.execute(
                update(OmrRead).where(OmrRead.id == row.id)
                .values(status="leased", node=node, lease_token=token, leased_until=until,
                        heartbeat_at=now, attempts=OmrRead.attempts + 1)
                .execution_options(synchronize_session=False))
            leases.append(Lease(row.id, row.card_id, row.batch_id, row.read_no, row.method, node, token,
                                until, row.sha256, row.page_code))
            if len(leases) == limit:
                break
        # UNIQUE(card_id, node) is checked here: a racing claim by the same node of the
        # other read of a card fails and db.run retries with a fresh snapshot.
        session.flush()
        return leases

    return db.run(work)


def heartbeat(db, leases: list[Lease], *, lease_seconds: int = DEFAULT_LEASE_SECONDS,
              now: dt.datetime | None = None) -> set[str]:
    """Extend the leases still held; return the tokens that are still ours."""
    if not leases:
        return set()
    now = _now(now)
    until = now + dt.timedelta(seconds=lease_seconds)

    def work(session: Session) -> set[str]:
        held = set()
        for lease in leases:
            result = session.execute(
                update(OmrRead).where(OmrRead.id == lease.read_id, OmrRead.lease_token == lease.token,
                                      OmrRead.status == "leased")
                .values(leased_until=until, heartbeat_at=now).execution_options(synchronize_session=False))
            if result.rowcount == 1:
                held.add(lease.token)
        return held

    return db.run(work)


def _check_frozen(batch: ScanBatch, result: dict[str, Any]) -> None:
    if result.get("status") == "error" and result.get("template_hash") is None:
        return
    problems = []
    if result.get("template_hash") != batch.template_hash:
        problems.append(f"template {result.get('template_hash')} != frozen {batch.template_hash}")
    if result.get("settings_hash") != batch.settings_hash:
        problems.append(f"settings {result.get('settings_hash')} != frozen {batch.settings_hash}")
    version = result.get("recognition_version")
    if version not in batch.recognition_version.split("+"):
        problems.append(f"recognition version {version} not in frozen {batch.recognition_version}")
    if problems:
        raise FrozenSettingsError("R-OMR-1: batch " + batch.code + " is frozen: " + "; ".join(problems))


def complete(db, lease: Lease, result: dict[str, Any] | str, *, now: dt.datetime | None = None,
             clips: list[dict[str, Any]] | None = None, after_settle=None) -> bool:
    """Store the read's result if the lease is still ours. False = lease lost, discarded.

    ``clips``: item images cut from this page by the worker (R-SEC-1), each
    ``{"item_code", "sha256", "ink_density_pm", "preflags": [...], "template_hash"}``;
    stored only with an accepted result (same transaction, same fencing).
    ``after_settle(session, card, outcome)`` runs in the same transaction when this
    completion settled the card (both reads in).
    """
    return complete_many(db, [(lease, result, clips)], now=now, after_settle=after_settle)[0]


def complete_many(db, done: list[tuple[Lease, dict[str, Any] | str, list[dict[str, Any]] | None]], *,
                  now: dt.datetime | None = None, after_settle=None) -> list[bool]:
    """Complete several reads in one transaction (each fenced by its own token)."""
    now = _now(now)
    prepared = []
    for lease, result, clips in done:
        text = result if isinstance(result, str) else json.dumps(result, sort_keys=True, separators=(",", ":"),
                                                                 ensure_ascii=False)
        parsed = json.loads(text) if isinstance(result, str) else result
        if parsed.get("method") not in (None, lease.method):
            raise ValueError(f"read {lease.read_no} must use method {lease.method}, result says {parsed.get('method')}")
        prepared.append((lease, text, parsed, hashlib.sha256(text.encode("utf-8")).hexdigest(), clips))
    order = sorted(range(len(prepared)), key=lambda i: prepared[i][0].card_id)   # lock order: no deadlocks

    def work(session: Session) -> list[bool]:
        outcome = [False] * len(prepared)
        batches: dict[int, ScanBatch] = {}
        for i in order:
            lease, text, parsed, digest, clips = prepared[i]
            # Lock the card first: the completion that brings the second result must see
            # the first (PostgreSQL READ COMMITTED re-reads after the lock).
            card = session.execute(select(Card).where(Card.id == lease.card_id).with_for_update()
                                   .execution_options(populate_existing=True)).scalar_one()
            batch = batches.get(card.batch_id) or batches.setdefault(card.batch_id, session.get(ScanBatch, card.batch_id))
            _check_frozen(batch, parsed)
            updated = session.execute(
                update(OmrRead).where(OmrRead.id == lease.read_id, OmrRead.lease_token == lease.token,
                                      OmrRead.status == "leased")
                .values(status="done", result=text, result_sha256=digest, completed_at=now, error=None,
                        leased_until=None, heartbeat_at=now)
                .execution_options(synchronize_session=False))
            if updated.rowcount != 1:
                continue  # fencing: the lease expired and someone else holds (or did) this read
            outcome[i] = True
            for clip in clips or ():
                session.add(ItemClip(card_id=card.id, item_code=clip["item_code"], sha256=clip["sha256"],
                                     ink_density_pm=int(clip["ink_density_pm"]),
                                     preflags=json.dumps(sorted(clip.get("preflags", []))),
                                     template_hash=clip["template_hash"]))
            reads = session.execute(select(OmrRead).where(OmrRead.card_id == card.id)
                                    .execution_options(populate_existing=True)).scalars().all()
            if len(reads) == 2 and all(r.status == "done" for r in reads) and card.status == "reading":
                from .omr_compare import settle_card
                settled = settle_card(session, card, reads, now=now)
                if after_settle is not None:
                    after_settle(session, card, settled)
            events.publish(session, batch_topic(card.batch_id), "read.done",
                           {"card_id": card.id, "read_no": lease.read_no, "node": lease.node})
        return outcome

    return db.run(work)


def fail(db, lease: Lease, error: str, *, now: dt.datetime | None = None, retry: bool = True) -> bool:
    """Give the read back after a worker-side failure (not a bad image: that is a result).

    After MAX_ATTEMPTS the read is marked failed and the card goes to the exception list.
    """
    now = _now(now)

    def work(session: Session) -> bool:
        row = session.execute(select(OmrRead).where(OmrRead.id == lease.read_id, OmrRead.lease_token == lease.token,
                                                    OmrRead.status == "leased").with_for_update()).scalar_one_or_none()
        if row is None:
            return False
        row.error = error[:400]
        row.lease_token = None
        row.leased_until = None
        if retry and row.attempts < MAX_ATTEMPTS:
            row.status = "pending"
            row.node = None
        else:
            row.status = "failed"
            from .omr_compare import raise_exception
            card = session.get(Card, row.card_id)
            raise_exception(session, card, "read_failed", {"read_no": row.read_no, "error": row.error})
        return True

    return db.run(work)


def release(db, leases: list[Lease]) -> int:
    """Hand unstarted leases back (graceful stop)."""
    if not leases:
        return 0

    def work(session: Session) -> int:
        n = 0
        for lease in leases:
            res = session.execute(
                update(OmrRead).where(OmrRead.id == lease.read_id, OmrRead.lease_token == lease.token,
                                      OmrRead.status == "leased")
                .values(status="pending", node=None, lease_token=None, leased_until=None,
                        attempts=OmrRead.attempts - 1)
                .execution_options(synchronize_session=False))
            n += res.rowcount or 0
        return n

    return db.run(work)


def reap_expired(db, *, now: dt.datetime | None = None) -> int:
    """Return expired leases to pending (claims also take expired leases directly)."""
    now = _now(now)

    def work(session: Session) -> int:
        res = session.execute(
            update(OmrRead).where(OmrRead.status == "leased", OmrRead.leased_until < now)
            .values(status="pending", node=None, lease_token=None, leased_until=None)
            .execution_options(synchronize_session=False))
        return res.rowcount or 0

    return db.run(work)


def open_work_for(db, node: str) -> int:
    """Reads this node could still get: claimable now, or leased (a lease may expire)."""
    with db.read() as session:
        mine = aliased(OmrRead)
        already = exists().where(mine.card_id == OmrRead.card_id, mine.node == node, mine.id != OmrRead.id)
        return session.scalar(select(func.count()).select_from(OmrRead).where(
            or_(OmrRead.status == "leased", and_(OmrRead.status == "pending", ~already)))) or 0


# --------------------------------------------------------------------------- status

def queue_status(db, *, batch_id: int | None = None, now: dt.datetime | None = None,
                 stale_seconds: int = NODE_STALE_SECONDS) -> dict[str, Any]:
    """The technicians' view: nodes (last seen, alive), reads by state, reads waiting.

    ``waiting_for_second_node`` counts pending reads whose card's other read is done or
    running on the only live node: they wait until another node is up (R-OMR-3).
    """
    now = _now(now)
    with db.read() as session:
        nodes = []
        alive = set()
        for row in session.execute(select(OmrNode).order_by(OmrNode.name)).scalars():
            age = (now - row.last_seen_at).total_seconds()
            is_alive = row.state == "running" and age <= stale_seconds
            if is_alive:
                alive.add(row.name)
            nodes.append({"node": row.name, "state": row.state if is_alive or row.state == "stopped" else "silent",
                          "last_seen_at": row.last_seen_at.isoformat(), "seconds_since_seen": int(age),
                          "host": row.host, "pid": row.pid})
        base = select(OmrRead.status, func.count()).group_by(OmrRead.status)
        if batch_id is not None:
            base = base.join(Card, Card.id == OmrRead.card_id).where(Card.batch_id == batch_id)
        counts = {s: n for s, n in session.execute(base).all()}
        expired_q = select(func.count()).select_from(OmrRead).where(OmrRead.status == "leased",
                                                                     OmrRead.leased_until < now)
        if batch_id is not None:
            expired_q = expired_q.where(OmrRead.card_id.in_(select(Card.id).where(Card.batch_id == batch_id)))
        expired = session.scalar(expired_q)
        # pending reads whose sibling was read (or is being read) by some node
        other = aliased(OmrRead)
        q = (select(OmrRead.id, other.node).join(other, and_(other.card_id == OmrRead.card_id, other.id != OmrRead.id))
             .where(OmrRead.status == "pending", other.node.is_not(None)))
        if batch_id is not None:
            q = q.where(OmrRead.card_id.in_(select(Card.id).where(Card.batch_id == batch_id)))
        sibling_nodes = session.execute(q).all()
        waiting = sum(1 for _rid, n in sibling_nodes if not (alive - {n}))
        by_node = {n: c for n, c in session.execute(
            select(OmrRead.node, func.count()).where(OmrRead.status == "done").group_by(OmrRead.node)).all()}
    for entry in nodes:
        entry["reads_done"] = by_node.get(entry["node"], 0)
    message = None
    if waiting:
        message = (f"{waiting} read(s) wait for a second node: only {', '.join(sorted(alive)) or 'no node'} "
                   "is up; start another node (omr-worker --node NAME) — the same node never reads a card twice")
    elif counts.get("pending") and not alive:
        message = "no OMR node is running; start two (omr-worker --node omr-a / --node omr-b)"
    return {"nodes": nodes, "alive": sorted(alive), "reads": {s: counts.get(s, 0) for s in
                                                             ("pending", "leased", "done", "failed")},
            "expired_leases": expired or 0, "waiting_for_second_node": waiting, "message": message}


def subject_of_batch(session: Session, batch_id: int) -> Subject:
    batch = session.get(ScanBatch, batch_id)
    return session.get(Subject, batch.subject_id)
