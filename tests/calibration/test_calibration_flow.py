"""Qualification gate, seeds, suspension with re-queue — on SQLite and PostgreSQL."""
from __future__ import annotations

import json
import uuid
from fractions import Fraction

import pytest
from sqlalchemy import select

from calibration import scheme, standardisation, stats, suspension
from marking import dispatch, ledger, submission
from marking.access import NotAllowed
from marking.models import (CalibrationResult, ItemDuty, LedgerEvent, Mark, MarkerSuspension, MarkTask,
                            Qualification, Response)
from marking.models.work import MarkAssignment

from tests.calibration.helpers import NOW, Clock, calibration_hooks, mark_next, qualify, setup, task_of  # noqa: F401
from tests.marking.factories import staffed_subject


def test_qualification_gate(db):
    """R-ROLE-1: no live work before a passed qualification; a failed attempt is kept; retake on new responses."""
    ids = setup(db)
    item, (m1, m2, *_rest) = ids["item"], ids["markers"]
    with pytest.raises(NotAllowed):
        dispatch.claim_next(db, m1, item, now=NOW)
    qualify(db, m1, item, good=True)
    assert dispatch.claim_next(db, m1, item, now=NOW) is not None
    qualify(db, m2, item, good=False)
    with pytest.raises(NotAllowed):
        dispatch.claim_next(db, m2, item, now=NOW)
    qualify(db, m2, item, good=True)          # attempt 2 sees five other responses
    assert dispatch.claim_next(db, m2, item, now=NOW) is not None
    with db.read() as s:
        rows = s.execute(select(Qualification).where(Qualification.user_id == m2, Qualification.item_id == item)
                         .order_by(Qualification.attempt)).scalars().all()
        assert [(q.attempt, q.status) for q in rows] == [(1, "failed"), (2, "passed")]
        first = set(json.loads(rows[0].detail)["responses"])
        assert not first & set(json.loads(rows[1].detail)["responses"])
        # The team leader was exempted (recorded as passed) and can still arbitrate.
        assert s.execute(select(Qualification.status).where(Qualification.user_id == ids["leader"])).scalar_one() == "passed"
    assert ledger.verify(db, None).ok


def test_qualification_needs_the_professional_level(db):
    """R-ROLE-1: a marker below the item's required level cannot even attempt qualification."""
    from marking.models import Item, User
    ids = setup(db)
    item, m3 = ids["item"], ids["markers"][2]
    with db.write() as s:
        s.get(Item, item).required_qualification = 2
        s.get(User, m3).qualification_level = 1
    with pytest.raises(NotAllowed, match="qualification level"):
        standardisation.start_attempt(db, m3, item, now=NOW)


def test_scheme_freeze_and_approval(db):
    """R-MARK-9: draft → approval by another person → frozen; a later change is a ledger scheme_change."""
    ids = staffed_subject(db, markers=2, code="00016")
    item, tl, m1 = ids["items"][0], ids["leaders"][0], ids["markers"][0]
    sid = scheme.draft_scheme(db, tl, item, "Award 2 points per step", [{"score": "2", "descriptor": "one step"}])
    scheme.submit_scheme(db, tl, sid)
    assert dispatch.claim_next.__name__  # dispatch held while the scheme is not frozen:
    from marking import simulate
    simulate.create_responses_for_testing(db, "00016", 2, seed=3)
    with pytest.raises(NotAllowed, match="not frozen"):
        dispatch.claim_next(db, m1, item, now=NOW)
    with pytest.raises(NotAllowed):
        scheme.decide_scheme(db, tl, sid, True)        # the author cannot approve
    assert scheme.decide_scheme(db, ids["officer"], sid, True) == "frozen"
    view = dispatch.claim_next(db, m1, item, now=NOW)
    assert view.scheme_version == 1 and view.scheme_text == "Award 2 points per step"
    sid2 = scheme.draft_scheme(db, tl, item, "Award 2 points per step; accept units omitted")
    scheme.submit_scheme(db, tl, sid2)
    scheme.decide_scheme(db, ids["officer"], sid2, True)
    assert [(v.version, v.status) for v in scheme.versions(db, item)] == [(1, "superseded"), (2, "frozen")]
    with db.read() as s:
        reasons = s.execute(select(LedgerEvent.reason).where(LedgerEvent.action == "scheme.frozen")
                            .order_by(LedgerEvent.seq)).scalars().all()
    assert reasons == [None, "scheme_change"]
    assert ledger.verify(db, None).ok


def _view_shape(view):
    d = view.as_dict()
    return {k: type(v).__name__ for k, v in d.items()}, d["queue"], len(d["token"]), d["earlier_marks"]


def test_seeds_indistinguishable_and_never_repeated(db):
    ids = setup(db, responses=70, seeds=10)
    item, markers = ids["item"], ids["markers"]
    for m in markers:
        qualify(db, m, item)
    clock = Clock()
    views = {"seed": [], "live": []}
    for _ in range(12):
        for m in markers:
            got = mark_next(db, m, item, clock)
            if got:
                view, task = got
                views["seed" if task.slot == "seed" else "live"].append(view)
    assert views["seed"] and views["live"]
    live_shape = {(_view_shape(v)[0].__repr__(), _view_shape(v)[1], _view_shape(v)[2]) for v in views["live"]}
    seed_shape = {(_view_shape(v)[0].__repr__(), _view_shape(v)[1], _view_shape(v)[2]) for v in views["seed"]}
    assert seed_shape == live_shape and len(live_shape) == 1
    for v in views["seed"]:
        assert v.image_ref and len(v.image_ref) == 64 and v.earlier_marks == ()
        uuid.UUID(v.token)
        assert set(v.as_dict()) == set(views["live"][0].as_dict())
    with db.read() as s:
        seeds = s.execute(select(MarkTask.reserved_for, MarkTask.response_id).where(MarkTask.slot == "seed")).all()
        assert len(seeds) == len(set(seeds)), "a seed was dealt twice to one marker"
        # The outbox never names the slot on a topic markers read.
        from marking.models import OutboxEvent
        for ev in s.execute(select(OutboxEvent).where(OutboxEvent.topic == f"item:{item}")).scalars():
            assert "seed" not in ev.payload and "slot" not in json.loads(ev.payload)
        results = s.execute(select(CalibrationResult).where(CalibrationResult.kind == "seed")).scalars().all()
        assert results and all(r.within for r in results)


def test_suspension_requeues_blast_radius(db):
    """★ A marker who fails seeds is suspended; marks since the last passed seed are re-marked by others."""
    ids = setup(db, responses=80, seeds=10, markers=4)
    item, (good1, good2, good3, bad) = ids["item"], ids["markers"]
    for m in (good1, good2, good3, bad):
        qualify(db, m, item)
    clock = Clock()
    # Phase 1: everyone sound (bad passes at least one seed).
    for _ in range(6):
        for m in (good1, good2, bad):
            mark_next(db, m, item, clock)
    with db.read() as s:
        passed = s.execute(select(CalibrationResult).where(CalibrationResult.user_id == bad,
                                                           CalibrationResult.within.is_(True))).scalars().all()
    assert passed, "the drifting marker should pass a seed first"
    # Phase 2: the marker drifts +3 points on everything until suspended.
    suspended = False
    for _ in range(40):
        try:
            mark_next(db, bad, item, clock, seed_offset_cp=300, live_offset_cp=300)
        except NotAllowed:
            suspended = True
            break
        mark_next(db, good1, item, clock)
        mark_next(db, good2, item, clock)
    assert suspended
    with db.read() as s:
        susp = s.execute(select(MarkerSuspension).where(MarkerSuspension.user_id == bad)).scalar_one()
        assert susp.cause in ("validity", "drift") and susp.requeued > 0
        duty = s.execute(select(ItemDuty).where(ItemDuty.user_id == bad, ItemDuty.duty == "marker")).scalar_one()
        assert duty.status == "suspended"
        requeued = s.execute(select(LedgerEvent).where(LedgerEvent.action == "response.requeued")).scalars().all()
        assert len(requeued) == susp.requeued and {e.reason for e in requeued} == {"suspension_requeue"}
        affected = [int(e.entity_id) for e in requeued]
    # Others finish the work: the re-queued slots go to markers who never read the response.
    for _ in range(60):
        progressed = False
        for m in (good1, good2, good3):
            progressed |= mark_next(db, m, item, clock) is not None
        for q in ("arbitration", "extra"):
            while (v := dispatch.claim_next(db, ids["leader"], item, queue=q, now=clock.tick())) is not None:
                t = task_of(db, v.token)
                from tests.calibration.helpers import true_score
                submission.submit_mark(db, ids["leader"], v.token, str(true_score(t.response_id) / 100),
                                       request_id=str(uuid.uuid4()), now=clock.tick())
                progressed = True
        if not progressed:
            break
    with db.read() as s:
        for rid in affected:
            r = s.get(Response, rid)
            assert r.status == "resolved", (rid, r.status)
            marks = s.execute(select(Mark, MarkTask.status).join(MarkTask, MarkTask.id == Mark.task_id)
                              .where(Mark.response_id == rid, Mark.kind.in_(("first", "second", "third")))).all()
            current = [m for m, st in marks if st != "cancelled"]
            assert bad not in {m.marker_id for m in current}
            assert any(m.marker_id == bad for m, st in marks if st == "cancelled")
            # The final no longer carries the +3 drift: it is the true score (both good marks equal it).
            from tests.calibration.helpers import true_score
            assert Fraction(r.final_num, r.final_den) == Fraction(true_score(rid), 100)
        # Nobody was dealt a response twice.
        pairs = s.execute(select(MarkAssignment.response_id, MarkAssignment.marker_id)).all()
        assert len(pairs) == len(set(pairs))
    # Statistics exclude superseded marks; resume needs re-qualification.
    st = stats.marker_statistics(db, item)
    assert all(m["count"] > 0 for m in st["markers"])
    suspension.resume(db, ids["leader"], bad, item, now=clock.tick())
    with pytest.raises(NotAllowed):
        dispatch.claim_next(db, bad, item, now=clock.tick())
    qualify(db, bad, item, now=clock.tick())
    dispatch.claim_next(db, bad, item, now=clock.tick())   # allowed again (the queue may be empty)
    assert ledger.verify(db, None).ok


def test_manual_suspension_and_self_check(db):
    ids = setup(db, responses=50, seeds=4, settings={"self_check_pm": 200, "self_check_min_age": 2,
                                                     "seed_rate": 1000, "seed_rate_start": 1000})
    item, (m1, m2, *_r) = ids["item"], ids["markers"]
    qualify(db, m1, item)
    qualify(db, m2, item)
    clock = Clock()
    slots = []
    for _ in range(14):
        for m in (m1, m2):
            got = mark_next(db, m, item, clock)
            if got:
                slots.append(got[1].slot)
    assert "self_check" in slots
    with db.read() as s:
        sc = s.execute(select(CalibrationResult).where(CalibrationResult.kind == "self_check")).scalars().all()
        assert sc and all(r.within for r in sc)
        # The first score stands: the self-check mark is outside the chain.
        for r in sc:
            mark = s.get(Mark, r.mark_id)
            resp = s.get(Response, mark.response_id)
            assert resp.status in ("marking", "resolved", "third", "pending")
    sid = suspension.suspend(db, ids["leader"], m1, item, note="not applying the scheme", now=clock.tick())
    with pytest.raises(NotAllowed):
        dispatch.claim_next(db, m1, item, now=clock.tick())
    assert sid and ledger.verify(db, None).ok
