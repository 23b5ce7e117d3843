"""The score ledger (R-QC-4, R-QC-5, R-SEC-2): chain, guards, checkpoints, concurrency."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from marking import ledger
from marking.db import Database
from marking.ledger_guards import drop_statements, install_statements

FIXED = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)


def _append(db, n, *, start=0, at=FIXED):
    for i in range(start, start + n):
        with db.write() as s:
            ledger.append(s, actor_id=7, action="mark.submitted", entity="response", entity_id=i,
                          data={"score": "7/2", "i": i}, reason="agreement",
                          at=at + dt.timedelta(seconds=i))


@pytest.fixture
def store(tmp_path):
    key = ledger.load_key(ledger.generate_key_file(tmp_path / "keys" / "k"))
    return ledger.CheckpointStore(tmp_path / "checkpoints", key)


def _without_guards(db, statement, **params):
    """Tamper as the table owner would: drop the triggers, change, put them back."""
    with db.write() as s:
        for stmt in drop_statements(db.dialect):
            s.execute(text(stmt))
        s.execute(text(statement), params)
        for stmt in install_statements(db.dialect):
            s.execute(text(stmt))


def test_intact_chain_verifies(db, store):
    _append(db, 5)
    ledger.checkpoint_now(db, store)
    result = ledger.verify(db, store)
    assert result.ok, result.message
    assert (result.events, result.head_seq, result.checkpoints) == (5, 5, 1)


def test_update_and_delete_are_refused_by_the_database(db):
    _append(db, 3)
    with pytest.raises(DBAPIError, match="append-only"):
        with db.write() as s:
            s.execute(text("UPDATE ledger_event SET reason = 'input_error' WHERE seq = 2"))
    with pytest.raises(DBAPIError, match="append-only"):
        with db.write() as s:
            s.execute(text("DELETE FROM ledger_event WHERE seq = 3"))
    if db.dialect == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            with db.write() as s:
                s.execute(text("TRUNCATE ledger_event"))
    assert ledger.verify(db, None).ok


def test_tampered_middle_row_is_named(db, store):
    _append(db, 9)
    ledger.checkpoint_now(db, store)
    _without_guards(db, "UPDATE ledger_event SET data = :d WHERE seq = 5", d='{"i":4,"score":"10"}')
    result = ledger.verify(db, store)
    assert not result.ok
    assert result.first_bad_seq == 5


def test_rehashed_row_is_caught_at_its_successor(db):
    """An attacker who also recomputes the edited row's hash breaks the next link."""
    _append(db, 6)
    with db.read() as s:
        row = s.execute(text("SELECT * FROM ledger_event WHERE seq = 3")).mappings().one()
    forged = ledger.compute_hash(prev_hash=row["prev_hash"], seq=3, at=row["at"], actor_id=row["actor_id"],
                                 action=row["action"], entity=row["entity"], entity_id=row["entity_id"],
                                 reason=row["reason"], data='{"i":2,"score":"0"}')
    _without_guards(db, "UPDATE ledger_event SET data = :d, hash = :h WHERE seq = 3",
                    d='{"i":2,"score":"0"}', h=forged)
    result = ledger.verify(db, None)
    assert not result.ok and result.first_bad_seq == 4


def test_deleted_tail_detected_against_head_and_checkpoint(db, store):
    _append(db, 8)
    ledger.checkpoint_now(db, store)
    _without_guards(db, "DELETE FROM ledger_event WHERE seq > 6")
    result = ledger.verify(db, store)
    assert not result.ok and result.first_bad_seq == 7


def test_deleted_tail_with_forged_head_is_detected_only_by_the_checkpoint(db, store):
    _append(db, 8)
    ledger.checkpoint_now(db, store)
    with db.read() as s:
        six = s.execute(text("SELECT hash FROM ledger_event WHERE seq = 6")).scalar_one()
    _without_guards(db, "DELETE FROM ledger_event WHERE seq > 6")
    with db.write() as s:
        s.execute(text("UPDATE ledger_head SET seq = 6, hash = :h"), {"h": six})
    assert ledger.verify(db, None).ok, "without a checkpoint a clean truncation is undetectable"
    result = ledger.verify(db, store)
    assert not result.ok and result.first_bad_seq == 7


def test_checkpoint_with_wrong_key_fails(db, store, tmp_path):
    _append(db, 2)
    ledger.checkpoint_now(db, store)
    other = ledger.CheckpointStore(store.directory, b"x" * 64)
    result = ledger.verify(db, other)
    assert not result.ok and "signature" in result.message


def test_auto_checkpoints_every_n_events(db, store):
    ledger.install_auto_checkpoints(db, store, every=3)
    _append(db, 7)
    assert [c.seq for c in store.read_all()] == [3, 6]


def write_concurrently(databases: list[Database], per_writer: int = 15) -> list[Exception]:
    """One thread per database, each appending ``per_writer`` events; the errors raised."""
    errors: list[Exception] = []

    def writer(index: int, database: Database) -> None:
        try:
            for j in range(per_writer):
                database.run(lambda s: ledger.append(s, actor_id=index, action="concurrent", entity="t",
                                                     entity_id=f"{index}-{j}", data={"j": j}))
        except Exception as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i, d)) for i, d in enumerate(databases)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writers_make_a_gap_free_chain(db_url):
    """Eight writers at once: no gaps, no forks (the head row is the lock)."""
    databases = [Database(db_url) for _ in range(8)]
    assert write_concurrently(databases) == []
    result = ledger.verify(databases[0], None)
    assert result.ok and result.events == 120
    with databases[0].read() as s:
        seqs = [r[0] for r in s.execute(text("SELECT seq FROM ledger_event ORDER BY seq"))]
        prevs = s.execute(text("SELECT COUNT(DISTINCT prev_hash) FROM ledger_event")).scalar_one()
    assert seqs == list(range(1, 121))
    assert prevs == 120  # every event has its own predecessor: no forks
    for d in databases:
        d.dispose()


def test_same_events_give_the_same_head_on_both_databases(db):
    """Hashes are computed in Python over canonical JSON: SQLite and PostgreSQL agree."""
    _append(db, 4)
    with db.read() as s:
        seq, head = ledger.head(s)
    assert seq == 4
    assert head == EXPECTED_HEAD_AFTER_FOUR


def test_floats_are_refused_in_ledger_data(db):
    with pytest.raises(TypeError, match="float"):
        with db.write() as s:
            ledger.append(s, actor_id=1, action="x", entity="y", entity_id=1, data={"score": 3.5})


def test_unknown_reason_code_is_refused(db):
    with pytest.raises(ledger.LedgerError, match="unknown reason"):
        with db.write() as s:
            ledger.append(s, actor_id=1, action="x", entity="y", entity_id=1, data={}, reason="because")


# Computed once from the canonical-JSON definition; a change here breaks every stored ledger.
EXPECTED_HEAD_AFTER_FOUR = "3c212be5398fd6419489093e69575b6ecb24b46e0e5656a4278991d3a7355fee"


def test_events_are_chained_at_commit_in_order_and_dropped_on_rollback(db, store):
    """The head row is locked only at commit; several events of one transaction chain in call order."""
    with db.write() as s:
        ledger.append(s, actor_id=1, action="a.first", entity="x", entity_id=1, data={"n": 1})
        ledger.append(s, actor_id=1, action="a.second", entity="x", entity_id=1, data={"n": 2})
        assert s.execute(text("SELECT count(*) FROM ledger_event")).scalar_one() == 0   # queued, not written
        seq, _hash = ledger.head(s)   # reading the head writes this transaction's own events first
        assert seq == 2
        ledger.append(s, actor_id=1, action="a.third", entity="x", entity_id=1, data={"n": 3})
    with pytest.raises(RuntimeError):
        with db.write() as s:
            ledger.append(s, actor_id=1, action="a.lost", entity="x", entity_id=1, data={})
            raise RuntimeError("the change fails")
    with db.read() as s:
        rows = s.execute(text("SELECT seq, action FROM ledger_event ORDER BY seq")).all()
    assert [tuple(r) for r in rows] == [(1, "a.first"), (2, "a.second"), (3, "a.third")]
    assert ledger.verify(db, store).ok
