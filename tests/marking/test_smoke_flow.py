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
