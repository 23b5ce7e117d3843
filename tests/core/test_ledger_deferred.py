"""Deferred ledger chaining (issue 8; R-QC-4, R-SEC-2): entries now, the chain in batches.

A score change records its events in ``ledger_entry`` without locking the head row;
``ledger.chain_pending`` (the chainer thread of every web server) appends them to the
chain. The chain must be the same as inline chaining would make it, complete, gap-free
and free of duplicates however many writers and chainers run at once, and an entry
must be impossible to alter or drop before it is chained.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from marking import events, ledger
from marking.chainer import LedgerChainer
from marking.config import ConfigError, load_settings
from marking.db import Database

from tests.core.test_ledger import EXPECTED_HEAD_AFTER_FOUR, FIXED, _append, write_concurrently


@pytest.fixture
def deferred(db_url):
    database = Database(db_url, ledger_chaining="deferred")
    yield database
    database.dispose()


@pytest.fixture
def store(tmp_path):
    key = ledger.load_key(ledger.generate_key_file(tmp_path / "keys" / "k"))
    return ledger.CheckpointStore(tmp_path / "checkpoints", key)


def _count(db, table: str) -> int:
    with db.read() as s:
        return s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_a_change_commits_its_entry_and_the_chainer_makes_the_same_chain_as_inline(deferred):
    _append(deferred, 4)
    assert (_count(deferred, "ledger_entry"), _count(deferred, "ledger_event")) == (4, 0)
    with deferred.read() as s:
        assert ledger.head(s) == (0, ledger.GENESIS_HASH)   # the head row was not touched

    assert ledger.chain_pending(deferred) == 4
    assert (_count(deferred, "ledger_entry"), _count(deferred, "ledger_event")) == (0, 4)
    with deferred.read() as s:
        seq, head = ledger.head(s)
        entry_ids = [r[0] for r in s.execute(text("SELECT entry_id FROM ledger_event ORDER BY seq"))]
    # Same bytes hashed as inline chaining: the head matches the inline test's constant.
    assert (seq, head) == (4, EXPECTED_HEAD_AFTER_FOUR)
    assert entry_ids == sorted(entry_ids) and len(set(entry_ids)) == 4
    assert ledger.chain_pending(deferred) == 0   # idempotent
    assert ledger.verify(deferred, None).ok


def test_a_rolled_back_change_leaves_no_entry(deferred):
    with pytest.raises(RuntimeError):
        with deferred.write() as s:
            ledger.append(s, actor_id=1, action="a.lost", entity="x", entity_id=1, data={})
            raise RuntimeError("the change fails")
    assert _count(deferred, "ledger_entry") == 0


def test_events_of_one_transaction_chain_in_call_order(deferred):
    with deferred.write() as s:
        for n in range(3):
            ledger.append(s, actor_id=1, action=f"a.{n}", entity="x", entity_id=1, data={"n": n})
    ledger.chain_pending(deferred, batch=2)   # two batches, two transactions
    with deferred.read() as s:
        rows = s.execute(text("SELECT seq, action FROM ledger_event ORDER BY seq")).all()
    assert [tuple(r) for r in rows] == [(1, "a.0"), (2, "a.1"), (3, "a.2")]


def _statements(db) -> list[str]:
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda _c, _cur, sql, *_a: seen.append(" ".join(sql.split())))
    return seen


def test_ledger_entries_and_outbox_events_of_a_commit_are_written_in_queue_order(deferred):
    """marking.commit_writes: on PostgreSQL both queues go in one statement (issue 8);
    on either backend the entries and the events keep their queue order in the ids and
    the values arrive intact, NULLs and non-ASCII text included."""
    seen = _statements(deferred)
    with deferred.write() as s:
        for n in range(3):
            ledger.append(s, actor_id=None if n == 1 else 7, action=f"a.{n}", entity="x", entity_id=n,
                          data={"n": n, "名": "阅卷"}, reason="agreement" if n == 2 else None, at=FIXED)
            events.publish(s, f"item:{n}", f"e.{n}", {"n": n})
    writes = [sql for sql in seen if sql.startswith(("INSERT", "WITH"))]
    if deferred.dialect == "postgresql":
        assert len(writes) == 1 and "ledger_entry" in writes[0] and "outbox_event" in writes[0]
    else:
        assert len(writes) == 2
    with deferred.read() as s:
        entries = s.execute(text("SELECT actor_id, action, entity_id, reason, data FROM ledger_entry ORDER BY id")).all()
        outbox = s.execute(text("SELECT topic, name, payload, created_at FROM outbox_event ORDER BY id")).all()
    assert [tuple(r)[:4] for r in entries] == [(7, "a.0", "0", None), (None, "a.1", "1", None),
                                               (7, "a.2", "2", "agreement")]
    assert entries[0].data == ledger.canonical_json({"n": 0, "名": "阅卷"})   # the exact text, as hashed
    assert [(r.topic, r.name, json.loads(r.payload)) for r in outbox] == [
        ("item:0", "e.0", {"n": 0}), ("item:1", "e.1", {"n": 1}), ("item:2", "e.2", {"n": 2})]
    assert all(r.created_at is not None for r in outbox)
    assert ledger.chain_pending(deferred) == 3 and ledger.verify(deferred, None).ok


def test_queued_text_arrives_exactly_whatever_its_characters(deferred):
    """Quotes, backslashes, control characters, astral-plane and CJK text in every text
    column of both queues arrive byte for byte (on PostgreSQL they travel inside one
    JSON parameter per queue)."""
    awkward = 'say "hi"\\ back\\slash\ttab\nline ☃ 😀 阅卷 \u2028 end'
    with deferred.write() as s:
        event = ledger.append(s, actor_id=3, action="score.changed", entity=awkward[:30], entity_id=awkward[:60],
                              data={"note": awkward, "nested": [awkward, {"k": awkward}]}, at=FIXED)
        events.publish(s, awkward[:60], awkward[:40], {"why": awkward})
        expected_payload = s.info[events.PENDING_KEY][0]["payload"]
    with deferred.read() as s:
        entry = s.execute(text("SELECT entity, entity_id, data FROM ledger_entry")).one()
        outbox = s.execute(text("SELECT topic, name, payload FROM outbox_event")).one()
    assert tuple(entry) == (event.entity, event.entity_id, event.data)
    assert tuple(outbox) == (awkward[:60], awkward[:40], expected_payload)
    assert ledger.chain_pending(deferred) == 1 and ledger.verify(deferred, None).ok


def test_a_rolled_back_change_leaves_neither_entry_nor_outbox_event(deferred):
    with pytest.raises(RuntimeError):
        with deferred.write() as s:
            ledger.append(s, actor_id=1, action="a.lost", entity="x", entity_id=1, data={})
            events.publish(s, "item:1", "lost")
            raise RuntimeError("the change fails")
    with deferred.write() as s:   # the next transaction of the same factory starts with empty queues
        events.publish(s, "item:1", "kept")
    assert (_count(deferred, "ledger_entry"), _count(deferred, "outbox_event")) == (0, 1)


def test_an_entry_cannot_be_altered_or_dropped_before_it_is_chained(deferred):
    _append(deferred, 2)
    with deferred.read() as s:
        first = s.execute(text("SELECT id FROM ledger_entry ORDER BY id LIMIT 1")).scalar_one()
    with pytest.raises(DBAPIError, match="UPDATE refused"):
        with deferred.write() as s:
            s.execute(text("UPDATE ledger_entry SET data = '{}' WHERE id = :id"), {"id": first})
    with pytest.raises(DBAPIError, match="not chained|refused"):
        with deferred.write() as s:
            s.execute(text("DELETE FROM ledger_entry WHERE id = :id"), {"id": first})
    # A forged "chained copy" with other content does not unlock the delete either.
    with pytest.raises(DBAPIError, match="not chained|refused"):
        with deferred.write() as s:
            s.execute(text("INSERT INTO ledger_event (seq, at, actor_id, action, entity, entity_id, reason, data,"
                           " prev_hash, hash, entry_id) SELECT 99, at, actor_id, action, entity, entity_id, reason,"
                           " '{\"score\":\"10\"}', :z, :h, id FROM ledger_entry WHERE id = :id"),
                      {"id": first, "z": "0" * 64, "h": "f" * 64})
            s.execute(text("DELETE FROM ledger_entry WHERE id = :id"), {"id": first})
    if deferred.dialect == "postgresql":
        with pytest.raises(DBAPIError, match="refused"):
            with deferred.write() as s:
                s.execute(text("TRUNCATE ledger_entry"))
    assert _count(deferred, "ledger_entry") == 2
    assert ledger.chain_pending(deferred) == 2
    assert ledger.verify(deferred, None).ok


def test_many_writers_and_three_chainers_make_one_gap_free_chain(db_url, store):
    """Eight writers, three chainer threads (as three web servers run): every entry is
    chained exactly once, in a chain with no gaps and no forks."""
    databases = [Database(db_url, ledger_chaining="deferred") for _ in range(8)]
    chainer_dbs = [Database(db_url, ledger_chaining="deferred") for _ in range(3)]
    ledger.install_auto_checkpoints(chainer_dbs[0], store, every=25)
    chainers = [LedgerChainer(d, interval_s=0.01).start() for d in chainer_dbs]
    try:
        errors = write_concurrently(databases)
        for chainer in chainers:
            chainer.stop()   # stopping chains what is left
        assert not errors
        assert sum(c.chained for c in chainers) == 120
        assert _count(databases[0], "ledger_entry") == 0
        result = ledger.verify(databases[0], store)
        assert result.ok and result.events == 120 and result.unchained == 0, result.message
        with databases[0].read() as s:
            seqs = [r[0] for r in s.execute(text("SELECT seq FROM ledger_event ORDER BY seq"))]
            ids = s.execute(text("SELECT COUNT(DISTINCT entity_id) FROM ledger_event")).scalar_one()
        assert seqs == list(range(1, 121)) and ids == 120
    finally:
        for chainer in chainers:
            chainer.stop()
        for d in databases + chainer_dbs:
            d.dispose()


def test_verify_and_checkpoints_chain_pending_entries_first(deferred, store):
    _append(deferred, 3)
    cp = ledger.checkpoint_now(deferred, store)   # chains first, then signs
    assert cp.seq == 3
    _append(deferred, 2, start=3)
    result = ledger.verify(deferred, store)
    assert result.ok and result.events == 5 and result.unchained == 0


def test_recorded_data_reads_chained_and_pending_events(deferred):
    with deferred.write() as s:
        ledger.append(s, actor_id=1, action="answer_key.locked", entity="answer_key", entity_id=9, data={"v": 1})
    ledger.chain_pending(deferred)
    with deferred.write() as s:
        ledger.append(s, actor_id=1, action="answer_key.locked", entity="answer_key", entity_id=9, data={"v": 2})
    with deferred.read() as s:
        data = ledger.recorded_data(s, action="answer_key.locked", entity="answer_key", entity_id="9")
    assert sorted(data) == ['{"v":1}', '{"v":2}']


def test_inline_and_deferred_mix_into_one_chain(db_url):
    """Switching MC_LEDGER_CHAINING (or a CLI process on inline beside deferred servers)
    never forks the chain: both append under the same head row."""
    inline, deferred = Database(db_url), Database(db_url, ledger_chaining="deferred")
    try:
        _append(deferred, 2)
        _append(inline, 2, start=2)
        assert ledger.chain_pending(deferred) == 2
        result = ledger.verify(inline, None)
        assert result.ok and result.events == 4
    finally:
        inline.dispose()
        deferred.dispose()


def test_chaining_setting(tmp_path):
    pg = {"MC_DATABASE_URL": "postgresql://u@h/d"}
    assert load_settings(tmp_path, env=pg).ledger_chaining == "deferred"
    assert load_settings(tmp_path, env={}).ledger_chaining == "inline"
    assert load_settings(tmp_path, env={**pg, "MC_LEDGER_CHAINING": "inline"}).ledger_chaining == "inline"
    with pytest.raises(ConfigError, match="MC_LEDGER_CHAINING"):
        load_settings(tmp_path, env={"MC_LEDGER_CHAINING": "later"})
    with pytest.raises(ValueError, match="ledger_chaining"):
        Database(f"sqlite:///{tmp_path / 'x.sqlite3'}", ledger_chaining="later")


def test_a_chainer_survives_a_failing_run_and_reports_it(deferred, caplog):
    chainer = LedgerChainer(deferred, interval_s=0.01)
    _append(deferred, 1, at=FIXED + dt.timedelta(days=1))
    with deferred.write() as s:   # the head row gone: every run fails until it is back
        s.execute(text("DELETE FROM ledger_head"))
    assert chainer.run_once() == 0
    assert "ledger chaining failed" in caplog.text
    with deferred.write() as s:
        s.execute(text("INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": ledger.GENESIS_HASH})
    assert chainer.run_once() == 1
    assert "recovered" in caplog.text
