"""End-to-end flow on both databases: two marks agree, a third, an arbitration."""
from __future__ import annotations

from fractions import Fraction

from sqlalchemy import select

from marking import dispatch, ledger, simulate, submission
from marking.models import Resolution, Response, Script

from tests.marking.factories import NOW, staffed_subject


def _mark(db, user, item, score, *, queue="marking", now=NOW):
    view = dispatch.claim_next(db, user, item, queue=queue, now=now)
    assert view is not None
    return submission.submit_mark(db, user, view.token, score, request_id=f"r-{view.token}", now=now)


def test_agreement_third_and_arbitration(db):
    ids = staffed_subject(db, markers=3)
    simulate.create_responses_for_testing(db, ids["subject_code"], 3, seed=1)
    item = ids["items"][0]
    m1, m2, m3 = ids["markers"]
    leader = ids["leaders"][0]
    # response 1: agree (5, 6) → 11/2 ; response 2: 2 vs 8 → third 3 → mean(3, 2) = 5/2
    # response 3: 1 vs 5 → third 9 → arbitration 4
    for score in ("5", "2", "1"):
        _mark(db, m1, item, score)
    for score in ("6", "8", "5"):
        _mark(db, m2, item, score)
    _mark(db, m3, item, "3")
    _mark(db, m3, item, "9")
    assert dispatch.claim_next(db, m3, item, now=NOW) is None
    view = dispatch.claim_next(db, leader, item, queue="arbitration", now=NOW)
    assert [m["score"] for m in view.earlier_marks] == ["1", "5", "9"]
    submission.submit_mark(db, leader, view.token, "4", request_id="arb-1", now=NOW)
    with db.read() as s:
        rows = s.execute(select(Response).order_by(Response.id)).scalars().all()
        assert [r.status for r in rows] == ["resolved"] * 3
        assert [Fraction(r.final_num, r.final_den) for r in rows] == [Fraction(11, 2), Fraction(5, 2), Fraction(4)]
        outcomes = [o for (o,) in s.execute(select(Resolution.outcome).order_by(Resolution.response_id))]
        assert outcomes == ["agreed", "third_resolved", "arbitrated"]
        assert all(sc.total_rounded is not None for sc in s.execute(select(Script)).scalars())
    assert ledger.verify(db, None).ok


def test_arbitrator_does_not_see_superseded_marks(db):
    """A mark whose task was cancelled (re-queued after a suspension) is out of the chain
    and out of what the arbitrator is shown (R-SEC-1, R-MARK-3)."""
    from marking.models import Mark, MarkTask
    ids = staffed_subject(db, markers=4)
    simulate.create_responses_for_testing(db, ids["subject_code"], 1, seed=2)
    item = ids["items"][0]
    m1, m2, m3, m4 = ids["markers"]
    _mark(db, m1, item, "1")
    _mark(db, m2, item, "5")
    _mark(db, m3, item, "9")
    # Supersede the third mark as the suspension re-queue does: cancel its task, deal a new third.
    with db.write() as s:
        third = s.execute(select(MarkTask).join(Mark, Mark.task_id == MarkTask.id)
                          .where(Mark.kind == "third")).scalar_one()
        third.status = "cancelled"
        response = s.get(Response, third.response_id)
        arbitration = s.execute(select(MarkTask).where(MarkTask.slot == "arbitration")).scalar_one()
        arbitration.status = "cancelled"
        response.status = "third"
        s.flush()
        dispatch.ensure_task(s, response, "third")
    _mark(db, m4, item, "8")
    view = dispatch.claim_next(db, ids["leaders"][0], item, queue="arbitration", now=NOW)
    assert [m["score"] for m in view.earlier_marks] == ["1", "5", "8"]


def test_marker_revises_own_mark_until_it_is_used(db):
    """Revisable while unresolved and unused, through the ledger (R-QC-4); not after."""
    from marking.access import NotAllowed
    from marking.models import LedgerEvent
    import pytest
    ids = staffed_subject(db, markers=3)
    simulate.create_responses_for_testing(db, ids["subject_code"], 1, seed=3)
    item = ids["items"][0]
    m1, m2, _ = ids["markers"]
    first = _mark(db, m1, item, "4")
    with pytest.raises(NotAllowed, match="own marks"):
        submission.revise_mark(db, m2, first.mark_id, "5", request_id="x")
    revised = submission.revise_mark(db, m1, first.mark_id, "5", request_id="rev-1")
    assert (revised.score, revised.replayed) == ("5", False)
    assert submission.revise_mark(db, m1, first.mark_id, "5", request_id="rev-1").replayed
    with db.read() as s:
        event = s.execute(select(LedgerEvent).where(LedgerEvent.action == "mark.revised")).scalar_one()
        assert event.reason == "marker_revision" and '"before":{"condition_code":null,"score":"4"}' in event.data
    _mark(db, m2, item, "5")  # agreement: the response is resolved from the revised mark
    with db.read() as s:
        response = s.execute(select(Response)).scalar_one()
        assert Fraction(response.final_num, response.final_den) == 5
    with pytest.raises(NotAllowed, match="already been used"):
        submission.revise_mark(db, m1, first.mark_id, "6", request_id="rev-2")
    assert ledger.verify(db, None).ok


def test_a_released_arbitration_comes_back_to_the_only_leader(db):
    """R-MARK-3: a team leader who hands an arbitration back can be dealt it again (a marker
    who hands back a read is not: that response stays out of their queue)."""
    ids = staffed_subject(db, markers=3, leaders=1)
    simulate.create_responses_for_testing(db, ids["subject_code"], 1, seed=2)
    item = ids["items"][0]
    m1, m2, m3 = ids["markers"]
    leader = ids["leaders"][0]
    _mark(db, m1, item, "1")
    _mark(db, m2, item, "5")
    _mark(db, m3, item, "9")
    view = dispatch.claim_next(db, leader, item, queue="arbitration", now=NOW)
    dispatch.release_task(db, leader, view.token, now=NOW)
    again = dispatch.claim_next(db, leader, item, queue="arbitration", now=NOW)
    assert again is not None and again.token != view.token
    submission.submit_mark(db, leader, again.token, "4", request_id="arb-again", now=NOW)
    with db.read() as s:
        assert s.execute(select(Response.status)).scalar_one() == "resolved"
    # A marker's released read is not dealt to them again: the new response's other read
    # is open, but m1 has seen the response, so m1 gets nothing; m2 gets it.
    simulate.create_responses_for_testing(db, ids["subject_code"], 1, seed=3)
    read = dispatch.claim_next(db, m1, item, now=NOW)
    dispatch.release_task(db, m1, read.token, now=NOW)
    assert dispatch.claim_next(db, m1, item, now=NOW) is None
    assert dispatch.claim_next(db, m2, item, now=NOW) is not None
