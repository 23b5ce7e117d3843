"""Two-person rules (R-OMR-2, R-OMR-7), key tampering, key change and rescoring, exceptions."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from marking import answer_keys, batches
from marking.access import NotAllowed
from marking.models import (AnswerKey, Candidate, Card, LedgerEvent, OmrRead, RegisterEntry,
                            Script)
from omr.ingest import ingest_path
from omr.synthetic import Special
from omr.template import load_template

from tests.batches.batch_cards import scan, small_template
from tests.batches.batch_helpers import ANSWERS, KEY, run_nodes_inline, sign_and_lock, write_cards


# --------------------------------------------------------------------------- answer key

def test_key_entry_and_signoff_are_two_person(db, world):
    u = world.users
    key = answer_keys.enter_key(db, world.subject_code, u["keyofficer"], KEY)
    with pytest.raises(NotAllowed):                       # only a key officer enters a key
        answer_keys.enter_key(db, world.subject_code, u["tech1"], KEY)
    with pytest.raises(batches.TwoPersonError):           # the enterer cannot sign it off
        answer_keys.sign_key(db, key.id, u["keyofficer"], "reviewer")
    with pytest.raises(NotAllowed):                       # an authority sign-off needs that role
        answer_keys.sign_key(db, key.id, u["reviewer"], "authority_officer")
    answer_keys.sign_key(db, key.id, u["reviewer"], "reviewer")
    with pytest.raises(NotAllowed):                       # one other signature is not enough
        answer_keys.lock_key(db, key.id, u["keyofficer"])
    with pytest.raises(answer_keys.KeyError_):            # and the same person cannot sign twice
        answer_keys.sign_key(db, key.id, u["reviewer"], "reviewer")
    answer_keys.sign_key(db, key.id, u["authority"], "authority_officer")
    info = answer_keys.lock_key(db, key.id, u["keyofficer"])
    assert info["version"] == 1 and info["locked_hash"]
    shown = answer_keys.show_keys(db, world.subject_code)
    assert shown[0]["status"] == "locked" and shown[0]["intact"]


def test_key_validation_errors(db, world):
    bad = dict(KEY, **{"1": "AB", "9": "AZ"})
    bad.pop("10")
    with pytest.raises(answer_keys.KeyError_) as err:
        answer_keys.enter_key(db, world.subject_code, world.users["keyofficer"], bad)
    message = str(err.value)
    assert "item 1" in message and "item 9" in message and "item 10" in message


def _scored_batch(db, settings, world, store, tmp_path, n=3):
    write_cards(tmp_path / "scans", world.roll, n)
    report = ingest_path(db, settings, tmp_path / "scans", world.subject_code, store=store)
    run_nodes_inline(db, store)
    batches.settle_batch(db, report.batch_id)
    sign_and_lock(db, world)
    answer_keys.score_subject(db, world.subject_code)
    return report


def test_tampered_locked_key_is_detected_before_scoring(db, settings, world, store, tmp_path):
    _scored_batch(db, settings, world, store, tmp_path, n=2)
    with db.read() as s:
        key = s.execute(select(AnswerKey)).scalar_one()
        before = {sc.id: sc.objective_cp for sc in s.execute(select(Script)).scalars()}
    body = json.loads(key.body)
    body["items"]["1"]["answer"] = "B"
    forged = json.dumps(body, sort_keys=True, separators=(",", ":"))
    # 1. the body alone is edited in the database
    with db.write() as s:
        s.execute(text("UPDATE answer_key SET body = :b WHERE id = :i"), {"b": forged, "i": key.id})
    with pytest.raises(answer_keys.KeyIntegrityError, match="content hash"):
        answer_keys.score_subject(db, world.subject_code)
    # 2. body and both hashes are rewritten consistently: the ledger's record of the lock still catches it
    import hashlib
    content = hashlib.sha256(forged.encode()).hexdigest()
    with db.write() as s:
        row = s.get(AnswerKey, key.id)
        row.body, row.content_hash = forged, content
        signoffs = answer_keys._signoffs(s, key.id)
        row.locked_hash = answer_keys._locked_hash(row, signoffs)
    with pytest.raises(answer_keys.KeyIntegrityError, match="ledger"):
        answer_keys.score_subject(db, world.subject_code)
    with db.read() as s:   # nothing was scored with the forged key
        assert {sc.id: sc.objective_cp for sc in s.execute(select(Script)).scalars()} == before
    assert not answer_keys.show_keys(db, world.subject_code)[0]["intact"]


def test_key_change_needs_signoff_again_and_rescores_keeping_old_results(db, settings, world, store, tmp_path):
    _scored_batch(db, settings, world, store, tmp_path, n=3)
    with db.read() as s:
        old = {sc.id: sc.objective_cp for sc in s.execute(select(Script)).scalars()}
    changed = dict(KEY, **{"2": "C"})   # a corrected key
    key2 = answer_keys.enter_key(db, world.subject_code, world.users["reviewer"], changed)
    with pytest.raises(NotAllowed):
        answer_keys.lock_key(db, key2.id, world.users["keyofficer"])       # not signed off yet
    answer_keys.sign_key(db, key2.id, world.users["keyofficer"], "reviewer")
    answer_keys.sign_key(db, key2.id, world.users["authority"], "authority_officer")
    info = answer_keys.lock_key(db, key2.id, world.users["authority"])
    assert info["superseded"] and info["rescore"]["scored"] == 3
    with db.read() as s:
        keys = {k.version: k.status for k in s.execute(select(AnswerKey)).scalars()}
        assert keys == {1: "superseded", 2: "locked"}
        per_key = {k: n for k, n in s.execute(text(
            "SELECT key_id, count(*) FROM objective_answer GROUP BY key_id")).all()}
        assert len(per_key) == 2 and set(per_key.values()) == {30}      # both versions' results kept
        new = {sc.id: sc.objective_cp for sc in s.execute(select(Script)).scalars()}
        reasons = s.execute(select(LedgerEvent.reason).where(LedgerEvent.action == "objective.scored",
                                                             LedgerEvent.reason.is_not(None))).scalars().all()
    # item 2: scripts that answered B lose a point, those that answered C gain one
    delta = {0: -100, 1: -100, 2: 100}
    for i, sid in enumerate(sorted(old)):
        assert new[sid] - old[sid] == delta[i]
    assert set(reasons) == {"key_change"}


def test_score_item_rules():
    single = {"answer": "B", "points_cp": 100, "kind": "single"}
    assert answer_keys.score_item(single, "B") == 100
    assert answer_keys.score_item(single, "") == 0
    assert answer_keys.score_item(single, "AB") == 0
    multi = {"answer": "ACD", "points_cp": 200, "kind": "multiple", "multi_rule": "partial_subset", "partial_cp": 100}
    assert answer_keys.score_item(multi, "ACD") == 200
    assert answer_keys.score_item(multi, "AC") == 100      # a correct subset
    assert answer_keys.score_item(multi, "ACE") == 0       # any wrong option
    assert answer_keys.score_item(multi, "ABCDE") == 0
    assert answer_keys.score_item(dict(multi, multi_rule="all_or_nothing"), "AC") == 0


# --------------------------------------------------------------------------- exceptions and ID corrections

def test_exception_needs_two_technicians_and_reads_stay(db, settings, world, store, tmp_path):
    template = load_template(small_template())
    folder = tmp_path / "scans"
    folder.mkdir()
    answers = dict(ANSWERS[0], **{"3": "C"})
    data, _ = scan(template, answers, candidate=world.roll[0], seed=5, fmt="jpeg",
                   specials=[Special("erasure", "3", "A", 0.45)])
    (folder / "a.jpg").write_bytes(data)
    report = ingest_path(db, settings, folder, world.subject_code, store=store)
    run_nodes_inline(db, store)
    [entry] = batches.list_exceptions(db, batch_id=report.batch_id)
    with db.read() as s:
        reads_before = [(r.id, r.result_sha256) for r in s.execute(select(OmrRead)).scalars()]
    u = world.users
    batches.propose_resolution(db, entry.entry_id, u["tech1"], {"action": "accept", "answers": {"3": "C"}},
                               note="erasure on A; C filled")
    with pytest.raises(batches.TwoPersonError):
        batches.confirm_resolution(db, entry.entry_id, u["tech1"])
    with pytest.raises(NotAllowed):
        batches.confirm_resolution(db, entry.entry_id, u["marker1"])   # not a designated technician
    assert batches.confirm_resolution(db, entry.entry_id, u["tech2"]) == "accept"
    with db.read() as s:
        card = s.get(Card, entry.card_id)
        assert card.status == "resolved"
        accepted = json.loads(card.accepted_reading)
        assert accepted["answers"]["3"] == "C" and accepted["source"] == "resolution"
        e = s.get(RegisterEntry, entry.entry_id)
        assert json.loads(e.before) and json.loads(e.after)["action"] == "accept"
        assert [(r.id, r.result_sha256) for r in s.execute(select(OmrRead)).scalars()] == reads_before
    # the database itself refuses one person on both sides
    with pytest.raises(IntegrityError):
        with db.write() as s:
            s.add(RegisterEntry(register="omr_exception", reason_code="x", proposed_by=u["tech1"],
                                confirmed_by=u["tech1"]))
            s.flush()


def test_unknown_candidate_then_id_correction(db, settings, world, store, tmp_path):
    template = load_template(small_template())
    folder = tmp_path / "scans"
    folder.mkdir()
    wrong = "450126209999"          # valid number, not on the roll (a mis-filled digit)
    data, _ = scan(template, ANSWERS[1], candidate=wrong, seed=9, fmt="jpeg")
    (folder / "a.jpg").write_bytes(data)
    report = ingest_path(db, settings, folder, world.subject_code, store=store)
    run_nodes_inline(db, store)
    exceptions = batches.list_exceptions(db)
    # the reader already flags "not on the roll" → the card is an exception
    assert exceptions and exceptions[0].card_id
    card_id = exceptions[0].card_id
    u = world.users
    entry_id = batches.propose_id_correction(db, card_id, u["tech1"], world.roll[5], note="label shows 00006")
    with pytest.raises(batches.TwoPersonError):
        batches.confirm_id_correction(db, entry_id, u["tech1"])
    batches.confirm_id_correction(db, entry_id, u["tech2"])
    # the original exception: the answers themselves are fine → accepted by two technicians
    for ex in batches.list_exceptions(db):
        batches.propose_resolution(db, ex.entry_id, u["tech1"], {"action": "accept"})
        batches.confirm_resolution(db, ex.entry_id, u["tech2"])
    result = batches.settle_batch(db, report.batch_id)
    assert result["assigned_cards"] == 1
    with db.read() as s:
        script = s.execute(select(Script)).scalar_one()
        assert s.get(Candidate, script.candidate_id).candidate_no == world.roll[5]
        entry = s.get(RegisterEntry, entry_id)
        assert json.loads(entry.before)["candidate_number"] == wrong
        assert json.loads(entry.after)["candidate_number"] == world.roll[5]
        assert entry.proposed_by != entry.confirmed_by
        events = s.execute(select(LedgerEvent.reason).where(LedgerEvent.action.like("omr.id_correction%"))).scalars().all()
        assert events == ["id_correction", "id_correction"]
