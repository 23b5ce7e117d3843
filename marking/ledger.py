"""The score ledger: append-only, hash-chained, with signed checkpoints outside the DB.

R-QC-4 (complete log of every score entry and change: who, when, before, after, why),
R-QC-5 (approvals kept), R-SEC-2 (no application role can alter the audit log).

* Each event's hash is SHA-256 over canonical JSON of the event *including the
  previous hash*, computed in Python so SQLite and PostgreSQL produce the same chain.
* ``seq`` and the previous hash come from the single ``ledger_head`` row. :func:`append`
  checks and queues an event; the queue is written just before the transaction commits
  (``before_commit``), in one of two ways (``MC_LEDGER_CHAINING``):

  - **inline**: chained there and then, under the locked head row, so an event exists in
    the chain if and only if its change committed. The head row serialises every score
    change of the centre from the chain's first statement to the commit — nothing on
    SQLite, where writers are serialised anyway, but the busiest lock on PostgreSQL.
  - **deferred**: inserted into ``ledger_entry`` with the change (no head lock), and
    appended to the chain in batches by :func:`chain_pending` — the chainer thread of
    every web server, and every reader that needs the whole chain (verification,
    checkpoints, backups) first. An entry exists if and only if its change committed;
    triggers keep it from being altered, or removed before an identical event is
    chained. Chain order is the order the chainer found the entries in (by id), which
    keeps the order of changes that touched the same rows: the later one could not
    insert its entries before the earlier one committed.
* Triggers (see marking.migrations) reject UPDATE and DELETE (and TRUNCATE on
  PostgreSQL). Whoever owns the file or the table can still drop them, so:
* signed checkpoints (HMAC-SHA256 with a key kept outside the database) of the chain
  head are appended to a file outside the database. Verification recomputes the
  chain and checks it against every checkpoint, which catches a rewritten or
  truncated chain that is internally consistent.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import event as sa_event
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session

from . import fastsql
from .fastsql import FastStatement
from .models import LedgerEntry, LedgerEvent, LedgerHead

GENESIS_HASH = "0" * 64

# Why a score changed. Drawn from Ofqual's review-of-marking reason list plus the
# centre's own workflow events; a change without a listed reason is refused.
REASON_CODES: dict[str, str] = {
    "input_error": "Score keyed wrongly",
    "totalling_error": "Totalling or composition error",
    "illegible": "Response illegible",
    "work_not_seen": "Work not seen by the marker",
    "unusual_response": "Unusual response",
    "review_decision": "Team leader's decision after re-check",
    "arbitration": "Team leader's arbitration",
    "third_mark": "Decided from a third mark",
    "agreement": "Two marks within the threshold",
    "key_change": "Answer key changed; objective items rescored",
    "id_correction": "Candidate identity corrected",
    "marker_revision": "Marker revised own unresolved mark",
    "suspension_requeue": "Marker suspended; work re-marked",
    "abnormal_decision": "Abnormal script decided by the subject group",
    "authority_approval": "Approved by the exam authority",
    "process_score": "Process score imported or confirmed",
    "review_request": "Candidate's review request (复核)",
    "scheme_change": "Marking scheme changed with approval",
}


class LedgerError(RuntimeError):
    pass


def _check_json_value(value: Any, path: str = "data") -> None:
    """Refuse floats anywhere in ledger data: scores are exact (R-MARK-2)."""
    if isinstance(value, float):
        raise TypeError(f"{path} is a float; write scores as exact strings (e.g. '7/2')")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} has a non-string key {key!r}")
            _check_json_value(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{path}[{index}]")
    elif not (value is None or isinstance(value, (str, int, bool))):
        raise TypeError(f"{path} has a {type(value).__name__}, which has no canonical JSON form")


def canonical_json(value: Any) -> str:
    _check_json_value(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def format_at(moment: dt.datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("ledger timestamps must be timezone-aware")
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def score_text(points: Fraction | None) -> str | None:
    """Exact score text for ledger data: '7/2', '3'."""
    if points is None:
        return None
    points = Fraction(points)
    return str(points.numerator) if points.denominator == 1 else f"{points.numerator}/{points.denominator}"


def compute_hash(*, prev_hash: str, seq: int, at: str, actor_id: int | None, action: str,
                 entity: str, entity_id: str, reason: str | None, data: str) -> str:
    record = {
        "prev": prev_hash, "seq": seq, "at": at, "actor": actor_id, "action": action,
        "entity": entity, "entity_id": entity_id, "reason": reason, "data": data,
    }
    # The fields are flat strings and integers (``data`` is already canonical JSON text), so
    # a type check per field stands in for canonical_json's recursive walk; same bytes out.
    for key, value in record.items():
        if not (value is None or type(value) in (str, int)):
            raise TypeError(f"ledger field {key} is a {type(value).__name__}")
    text_ = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text_.encode("utf-8")).hexdigest()


PENDING_KEY = "ledger_pending"


@dataclass(frozen=True)
class PendingEvent:
    """An event checked and queued by :func:`append`, chained at commit."""

    at: str
    actor_id: int | None
    action: str
    entity: str
    entity_id: str
    reason: str | None
    data: str


def append(
    session: Session,
    *,
    actor_id: int | None,
    action: str,
    entity: str,
    entity_id: int | str,
    data: dict[str, Any],
    reason: str | None = None,
    at: dt.datetime | None = None,
) -> PendingEvent:
    """Queue one event in the caller's transaction; it is chained and written at commit.

    Everything that can be wrong with the event (reason code, floats, timestamps) is
    refused here, at the call, so the caller's transaction fails where the bug is.
    """
    if reason is not None and reason not in REASON_CODES:
        raise LedgerError(f"unknown reason code {reason!r}; known: {', '.join(sorted(REASON_CODES))}")
    event = PendingEvent(at=format_at(at or dt.datetime.now(dt.timezone.utc)), actor_id=actor_id,
                         action=action, entity=entity, entity_id=str(entity_id), reason=reason,
                         data=canonical_json(data))
    session.info.setdefault(PENDING_KEY, []).append(event)
    return event


CHAINING_MODES = ("inline", "deferred")
# Set in a session's ``info`` (by ``Database``'s session factories) when the database
# chains deferred; a session without it chains inline.
DEFERRED_KEY = "mc_ledger_deferred"


def write_pending(session: Session) -> None:
    """Write the queued events (in order): chained now, or as entries for the chainer.

    Runs in ``before_commit`` of every session (``marking.commit_writes``); callers that must read their own
    events back inside the transaction may call it earlier (later events still chain
    after these).
    """
    pending: list[PendingEvent] = session.info.pop(PENDING_KEY, None) or []
    if not pending:
        return
    if session.info.get(DEFERRED_KEY):
        session.connection().execute(_INSERT_ENTRIES, [entry_row(event) for event in pending])
        return
    conn = session.connection()
    head_row = conn.execute(_LOCK_HEAD).first()
    if head_row is None:
        raise LedgerError("ledger head row missing: run `marking-centre db upgrade`")
    session.info["ledger_head"] = _chain(conn, head_row, pending, entry_ids=None)


def entry_row(event: PendingEvent) -> dict[str, Any]:
    return {"at": event.at, "actor_id": event.actor_id, "action": event.action, "entity": event.entity,
            "entity_id": event.entity_id, "reason": event.reason, "data": event.data}


def _chain(conn, head_row, events: list, entry_ids: list[int] | None) -> tuple[int, str]:
    """Append ``events`` after the locked head; returns the new head (seq, hash)."""
    seq, prev = head_row.seq, head_row.hash
    rows = []
    for n, event in enumerate(events):
        seq += 1
        digest = compute_hash(prev_hash=prev, seq=seq, at=event.at, actor_id=event.actor_id,
                              action=event.action, entity=event.entity, entity_id=event.entity_id,
                              reason=event.reason, data=event.data)
        rows.append((seq, event.at, event.actor_id, event.action, event.entity, event.entity_id, event.reason,
                     event.data, prev, digest, entry_ids[n] if entry_ids is not None else None))
        prev = digest
    if conn.dialect.name == "postgresql":
        fastsql.execute(_INSERT_EVENTS_PG, conn, {"events": json.dumps(rows, separators=(",", ":"))})
    else:
        conn.execute(_INSERT_EVENTS, [dict(zip(_EVENT_COLUMNS, row)) for row in rows])
    conn.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev})
    return seq, prev


# Built once: every score change runs them, with the head row locked (issue 8).
_HEAD, _EVENTS, _ENTRIES = LedgerHead.__table__, LedgerEvent.__table__, LedgerEntry.__table__
_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update()
_TRY_LOCK_HEAD = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == 1).with_for_update(skip_locked=True)
_HEAD_EXISTS = select(_HEAD.c.id).where(_HEAD.c.id == 1)
_INSERT_EVENTS = insert(_EVENTS)
_EVENT_COLUMNS = ("seq", "at", "actor_id", "action", "entity", "entity_id", "reason", "data", "prev_hash", "hash",
                  "entry_id")
# PostgreSQL: a batch of events in one statement, executed once (an executemany runs one
# INSERT per event on the server: 8,000 in 20 s under load). The text travels as JSON
# (jsonb: parsed once; see marking.commit_writes) and ``->>`` gives back exactly the
# string that was hashed.
_INSERT_EVENTS_PG = FastStatement(text(f"""
INSERT INTO ledger_event ({", ".join(_EVENT_COLUMNS)})
SELECT CAST(e.v->>0 AS bigint), e.v->>1, CAST(e.v->>2 AS integer), e.v->>3, e.v->>4, e.v->>5, e.v->>6,
       e.v->>7, e.v->>8, e.v->>9, CAST(e.v->>10 AS bigint)
FROM jsonb_array_elements(CAST(:events AS jsonb)) WITH ORDINALITY AS e(v, n)
ORDER BY e.n"""))
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
# RETURNING makes SQLAlchemy send the rows as one multi-row INSERT (insertmanyvalues).
_INSERT_ENTRIES = insert(_ENTRIES).returning(_ENTRIES.c.id)
_OLDEST_ENTRIES = (select(_ENTRIES.c.id, _ENTRIES.c.at, _ENTRIES.c.actor_id, _ENTRIES.c.action,
                          _ENTRIES.c.entity, _ENTRIES.c.entity_id, _ENTRIES.c.reason, _ENTRIES.c.data)
                   .order_by(_ENTRIES.c.id).limit(bindparam("batch")))
# The entries this run chained, by id: a list of primary keys is found by index in any
# plan. (Written first as ``id IN (SELECT entry_id FROM ledger_event WHERE seq > :old)``
# and then as an id range with ``EXISTS`` in ledger_event, PostgreSQL's generic plan for
# the prepared statement — made while the chain was a few rows — scanned the whole chain
# for every entry: 40–50 ms a run after a few thousand marks, growing with the ledger.
# The guard trigger checks each entry is chained.)
_DROP_CHAINED = delete(_ENTRIES).where(_ENTRIES.c.id.in_(bindparam("ids", expanding=True)))
# PostgreSQL: one array parameter, so one statement text whatever the batch's size (an
# expanded IN list is rendered, converted and prepared anew for every length).
_DROP_CHAINED_PG = FastStatement(text("DELETE FROM ledger_entry WHERE id = ANY(CAST(:ids AS bigint[]))"))

CHAIN_BATCH = 2000


def chain_pending(db, *, wait: bool = True, batch: int = CHAIN_BATCH) -> int:
    """Append every committed ledger entry to the chain; returns how many were chained.

    Each batch is one transaction (:func:`chain_batch`). With ``wait`` false a run that
    finds the head locked (another chainer, or an inline append) stops and returns what
    it chained so far — the chainer threads of several processes never queue behind
    each other. Idempotent and safe to run anywhere, any time.
    """
    chained = 0
    while True:
        with db.write() as session:
            count = chain_batch(session, wait=wait, batch=batch)
        if count is None:
            return chained
        chained += count
        if count < batch:
            return chained


def chain_batch(session: Session, *, wait: bool = True, batch: int = CHAIN_BATCH) -> int | None:
    """In the caller's transaction: lock the head, read the oldest entries, insert their
    events (hashes computed here), delete the entries, move the head. Returns how many
    were chained, or None when ``wait`` is false and the head is locked."""
    conn = session.connection()
    head_row = conn.execute(_LOCK_HEAD if wait else _TRY_LOCK_HEAD).first()
    if head_row is None:
        if not wait and conn.execute(_HEAD_EXISTS).first() is not None:
            return None   # another chainer (or an inline append) holds it
        raise LedgerError("ledger head row missing: run `marking-centre db upgrade`")
    entries = conn.execute(_OLDEST_ENTRIES, {"batch": batch}).all()
    if not entries:
        return 0
    ids = [entry.id for entry in entries]
    new_head = _chain(conn, head_row, entries, entry_ids=ids)
    if conn.dialect.name == "postgresql":
        fastsql.execute(_DROP_CHAINED_PG, conn, {"ids": ids})
    else:
        conn.execute(_DROP_CHAINED, {"ids": ids})
    session.info["ledger_head"] = new_head   # for the auto-checkpoint listener
    return len(entries)


def recorded_data(session: Session, *, action: str, entity: str, entity_id: str) -> list[str]:
    """The data of every recorded event with this action and entity, chained or not yet."""
    chained = select(_EVENTS.c.data).where(_EVENTS.c.action == action, _EVENTS.c.entity == entity,
                                           _EVENTS.c.entity_id == entity_id)
    waiting = select(_ENTRIES.c.data).where(_ENTRIES.c.action == action, _ENTRIES.c.entity == entity,
                                            _ENTRIES.c.entity_id == entity_id)
    return list(session.execute(chained.union_all(waiting)).scalars())


def discard_pending(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


# --------------------------------------------------------------------------- checkpoints

def generate_key_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path


def load_key(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except FileNotFoundError as exc:
        raise LedgerError(
            f"ledger checkpoint key {path} not found; create one with `marking-centre audit keygen` "
            "and keep it outside the database host's reach (MC_LEDGER_KEY_FILE)"
        ) from exc
    if len(text) < 32:
        raise LedgerError(f"ledger checkpoint key {path} is too short")
    return text.encode("ascii")


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    at: str
    sig: str

    def message(self) -> bytes:
        return f"{self.seq}:{self.hash}:{self.at}".encode("ascii")


class CheckpointStore:
    """Signed chain heads appended to a JSON-lines file outside the database."""

    FILE_NAME = "ledger-checkpoints.jsonl"

    def __init__(self, directory: Path, key: bytes):
        self.directory = Path(directory)
        self.path = self.directory / self.FILE_NAME
        self._key = key

    def sign(self, seq: int, head_hash: str, at: str) -> str:
        return hmac.new(self._key, f"{seq}:{head_hash}:{at}".encode("ascii"), hashlib.sha256).hexdigest()

    def write(self, seq: int, head_hash: str) -> Checkpoint:
        self.directory.mkdir(parents=True, exist_ok=True)
        at = format_at(dt.datetime.now(dt.timezone.utc))
        cp = Checkpoint(seq=seq, hash=head_hash, at=at, sig=self.sign(seq, head_hash, at))
        line = json.dumps(cp.__dict__, sort_keys=True) + "\n"
        # O_APPEND keeps concurrent writers' lines whole; fsync so a crash keeps it.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return cp

    def read_all(self) -> list[Checkpoint]:
        if not self.path.exists():
            return []
        result = []
        for number, line in enumerate(self.path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                result.append(Checkpoint(seq=int(raw["seq"]), hash=str(raw["hash"]),
                                         at=str(raw["at"]), sig=str(raw["sig"])))
            except (ValueError, KeyError, TypeError) as exc:
                raise LedgerError(f"{self.path}:{number}: unreadable checkpoint line") from exc
        return result

    def is_authentic(self, cp: Checkpoint) -> bool:
        return hmac.compare_digest(cp.sig, self.sign(cp.seq, cp.hash, cp.at))

    def last_seq(self) -> int:
        cps = self.read_all()
        return max((c.seq for c in cps), default=0)


def head(session: Session) -> tuple[int, str]:
    write_pending(session)   # the head includes this transaction's own events
    row = session.get(LedgerHead, 1, populate_existing=True)
    if row is None:
        raise LedgerError("ledger head row missing: run `marking-centre db upgrade`")
    return row.seq, row.hash


def checkpoint_now(db, store: CheckpointStore) -> Checkpoint:
    chain_pending(db)   # deferred chaining: sign the head with everything committed so far
    with db.read() as session:
        seq, digest = head(session)
    return store.write(seq, digest)


def install_auto_checkpoints(db, store: CheckpointStore, every: int) -> None:
    """After a commit that appended events, checkpoint when ``every`` events have passed."""
    state = {"last": store.last_seq()}

    def _after_commit(session: Session) -> None:
        appended = session.info.pop("ledger_head", None)
        if appended and appended[0] - state["last"] >= every:
            store.write(*appended)
            state["last"] = appended[0]

    for maker in (db._write_sessions,):
        sa_event.listen(maker, "after_commit", _after_commit)

    def _after_rollback(session: Session) -> None:
        session.info.pop("ledger_head", None)

    sa_event.listen(db._write_sessions, "after_soft_rollback", lambda s, _t: _after_rollback(s))


# --------------------------------------------------------------------------- verification

@dataclass
class VerifyResult:
    ok: bool
    events: int
    head_seq: int
    checkpoints: int
    first_bad_seq: int | None = None
    message: str = "intact"
    # Entries committed after this verification chained the pending ones (deferred
    # chaining): they are protected by triggers and chained by the next run.
    unchained: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _iter_events(session: Session, batch: int = 2000) -> Iterable[LedgerEvent]:
    last = 0
    while True:
        rows = session.execute(
            select(LedgerEvent).where(LedgerEvent.seq > last).order_by(LedgerEvent.seq).limit(batch)
        ).scalars().all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def verify(db, store: CheckpointStore | None) -> VerifyResult:
    """Recompute the chain; check head and checkpoints. Names the first bad sequence number.

    Pending entries are chained first; the chain and the head are then read in one
    snapshot, so a chainer or an inline append running meanwhile cannot look like a gap.
    """
    chain_pending(db)
    with db.read() as session:
        if session.get_bind().dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        unchained = int(session.execute(select(func.count()).select_from(_ENTRIES)).scalar() or 0)
        expected_seq = 1
        running = GENESIS_HASH
        hashes: dict[int, str] = {}
        checkpoints = store.read_all() if store else []
        wanted = {cp.seq for cp in checkpoints}
        count = 0
        for row in _iter_events(session):
            if row.seq != expected_seq:
                return VerifyResult(False, count, expected_seq - 1, len(checkpoints), expected_seq,
                                    f"sequence gap: event {expected_seq} is missing (next is {row.seq})")
            recomputed = compute_hash(prev_hash=running, seq=row.seq, at=row.at, actor_id=row.actor_id,
                                      action=row.action, entity=row.entity, entity_id=row.entity_id,
                                      reason=row.reason, data=row.data)
            if row.prev_hash != running or row.hash != recomputed:
                return VerifyResult(False, count, row.seq - 1, len(checkpoints), row.seq,
                                    f"event {row.seq} does not match its hash: it was altered")
            if row.seq in wanted:
                hashes[row.seq] = row.hash
            running = row.hash
            expected_seq += 1
            count += 1
        last_seq = expected_seq - 1
        head_row = session.get(LedgerHead, 1)
        if head_row is None:
            return VerifyResult(False, count, last_seq, len(checkpoints), last_seq + 1, "ledger head row missing")
        if head_row.seq != last_seq or head_row.hash != running:
            first_bad = min(head_row.seq, last_seq) + 1
            return VerifyResult(False, count, last_seq, len(checkpoints), first_bad,
                                f"chain ends at {last_seq} but the head says {head_row.seq}: "
                                f"events from {first_bad} were removed or the head was altered")
    for cp in sorted(checkpoints, key=lambda c: c.seq):
        if store is not None and not store.is_authentic(cp):
            return VerifyResult(False, count, last_seq, len(checkpoints), cp.seq,
                                f"checkpoint at {cp.seq} has a bad signature (wrong key or forged)")
        if cp.seq > last_seq:
            return VerifyResult(False, count, last_seq, len(checkpoints), last_seq + 1,
                                f"checkpoint at {cp.seq} is beyond the end of the chain ({last_seq}): "
                                f"events from {last_seq + 1} were deleted")
        if cp.seq > 0 and hashes.get(cp.seq) != cp.hash:
            return VerifyResult(False, count, last_seq, len(checkpoints), cp.seq,
                                f"event {cp.seq} differs from the signed checkpoint: "
                                f"the chain was rewritten at or before {cp.seq}")
    return VerifyResult(True, count, last_seq, len(checkpoints), unchained=unchained)


# The before_commit listener that writes this module's queue (with the outbox's).
from . import commit_writes  # noqa: E402,F401
