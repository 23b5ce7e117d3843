"""The lease queue: claims respect UNIQUE(card, node), fencing tokens, recycling (R-OMR-3)."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from marking import batches, omr_queue
from marking.models import OmrRead
from omr import batch_adapter as adapter

T0 = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)


def make_cards(db, world, n=3):
    def work(s):
        subject = batches.find_subject(s, world.subject_code)
        batch = batches.create_batch(s, subject, recognition_version=adapter.RECOGNITION_VERSION,
                                     settings_hash=adapter.SETTINGS_HASH, code="Q-1")
        ids = []
        for i in range(n):
            _, card = batches.add_page(s, batch, source_name=f"p{i}.png", source_page=1, sha256=f"{i:064x}")
            ids.append(card.id)
        return batch.id, batch.template_hash, ids
    return db.run(work)


def fake_result(method, template_hash, answers=None):
    return {"method": method, "recognition_version": adapter.RECOGNITION_VERSION.split("+")["ab".index(method)],
            "settings_hash": adapter.SETTINGS_HASH, "template_hash": template_hash, "status": "ok", "flags": [],
            "page": {"code": 1, "used": 1}, "candidate_number": {"value": "450126200001"},
            "subject_code": {"value": "00015"}, "absence": {"absent": False},
            "objective": {"1": {"state": "single", "chosen": list(answers or "A")}}}


def test_a_node_never_reads_both_reads_of_a_card(db, world):
    _, _, cards = make_cards(db, world, 2)
    a = omr_queue.claim(db, "omr-a", limit=10, now=T0)
    assert len(a) == 2 and len({l.card_id for l in a}) == 2       # one read per card
    assert omr_queue.claim(db, "omr-a", limit=10, now=T0) == []   # the other reads wait for another node
    b = omr_queue.claim(db, "omr-b", limit=10, now=T0)
    assert len(b) == 2 and {l.read_no for l in b} == {2}


def test_unique_card_node_is_the_guarantee(db, world):
    """Even bypassing the service, the database refuses one node on both reads of a card."""
    _, _, cards = make_cards(db, world, 1)
    with pytest.raises(IntegrityError):
        with db.write() as s:
            for read in s.execute(select(OmrRead).where(OmrRead.card_id == cards[0])).scalars():
                read.node = "omr-a"
            s.flush()


def test_stale_lease_result_is_discarded(db, world):
    _, thash, _ = make_cards(db, world, 1)
    [lease_a] = omr_queue.claim(db, "omr-a", lease_seconds=30, now=T0)
    # omr-a stalls past its lease; omr-c takes the read over (expired lease recycled)
    later = T0 + dt.timedelta(seconds=31)
    [lease_c] = omr_queue.claim(db, "omr-c", lease_seconds=30, now=later)
    assert lease_c.read_id == lease_a.read_id and lease_c.token != lease_a.token
    assert omr_queue.heartbeat(db, [lease_a], now=later) == set()       # the old holder learns it lost it
    assert omr_queue.complete(db, lease_a, fake_result("a", thash, "B"), now=later) is False   # fenced
    assert omr_queue.complete(db, lease_c, fake_result("a", thash, "A"), now=later) is True
    with db.read() as s:
        row = s.get(OmrRead, lease_a.read_id)
        assert row.node == "omr-c" and row.attempts == 2
        assert json.loads(row.result)["objective"]["1"]["chosen"] == ["A"]
    # completing twice is a no-op too (at-least-once execution, effectively-once results)
    assert omr_queue.complete(db, lease_c, fake_result("a", thash, "C"), now=later) is False


def test_two_reads_settle_the_card(db, world):
    _, thash, [card_id] = make_cards(db, world, 1)
    [la] = omr_queue.claim(db, "omr-a", now=T0)
    [lb] = omr_queue.claim(db, "omr-b", now=T0)
    assert omr_queue.complete(db, la, fake_result("a", thash, "A"), now=T0)
    assert omr_queue.complete(db, lb, fake_result("b", thash, "B"), now=T0)   # disagreement
    [entry] = batches.list_exceptions(db)
    assert entry.card_id == card_id and entry.reason == "read_disagreement"
    assert entry.detail["differences"][0]["item"] == "1"


def test_frozen_batch_refuses_other_template_or_settings(db, world):
    """R-OMR-1: a result made with another template/settings is refused; changes are refused."""
    batch_id, thash, _ = make_cards(db, world, 1)
    [la] = omr_queue.claim(db, "omr-a", now=T0)
    with pytest.raises(omr_queue.FrozenSettingsError):
        omr_queue.complete(db, la, fake_result("a", "f" * 64), now=T0)
    bad = fake_result("a", thash)
    bad["settings_hash"] = "0" * 64
    with pytest.raises(omr_queue.FrozenSettingsError):
        omr_queue.complete(db, la, bad, now=T0)
    with pytest.raises(batches.BatchFrozen):
        batches.change_batch_recognition(db, batch_id, settings_hash="1" * 64)
    from tests.batches.batch_cards import two_page_template
    with pytest.raises(batches.BatchFrozen):
        batches.attach_template(db, world.subject_code, two_page_template())


def test_status_says_when_second_reads_wait_for_a_node(db, world):
    make_cards(db, world, 2)
    omr_queue.touch_node(db, "omr-a", now=T0)
    for lease in omr_queue.claim(db, "omr-a", limit=5, now=T0):
        pass
    status = omr_queue.queue_status(db, now=T0 + dt.timedelta(seconds=1))
    assert status["alive"] == ["omr-a"]
    assert status["waiting_for_second_node"] == 2
    assert "second node" in status["message"]
