"""Review sample (R-MARK-5), score changes (R-QC-2/3/5, R-MARK-7), totals (R-MARK-2/6), 复核 (R-PROC-4)."""
from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import pytest
from sqlalchemy import select

from marking import changes, dispatch, ledger, review, review_requests, simulate, submission, totals
from marking.access import NotAllowed
from marking.centre_time import centre_day
from marking.models import RegisterEntry, Response, ScoreChange, Script
from marking.scores import round_total
from tests.marking.factories import NOW, staffed_subject


def _mark_all(db, ids, scores_by_slot, now=NOW):
    """Mark every response of the first item: first/second marks from ``scores_by_slot``."""
    item = ids["items"][0]
    for marker, slot in zip(ids["markers"], ("first", "second")):
        n = 0
        while (v := dispatch.claim_next(db, marker, item, now=now)) is not None:
            submission.submit_mark(db, marker, v.token, scores_by_slot[slot](n), request_id=v.token, now=now)
            n += 1


def test_review_sample_floor_reproducible_and_dispute(db):
    ids = staffed_subject(db, markers=2, reviewers=1, item_specs=[dict(code="Q1", policy={
        "extra_read_zero": False, "extra_read_full": False})])
    simulate.create_responses_for_testing(db, ids["subject_code"], 25, seed=4)
    _mark_all(db, ids, {"first": lambda n: "6", "second": lambda n: "6.5"})
    day = centre_day(NOW)
    picks = review.select_daily_sample(db, day, seed="s1", now=NOW, risk_pm=0)
    assert len(picks[ids["items"][0]]) == math.ceil(25 * 0.1) == 3
    # Reproducible: the same day, seed and finalised set give the same choice.
    finalised = list(range(1, 26))
    assert review.choose(day, "s1", finalised, set(), {}) == review.choose(day, "s1", finalised, set(), {})
    assert review.choose(day, "s1", finalised, set(), {}) != review.choose(day, "s2", finalised, set(), {})
    # Re-running adds nothing; never below the floor.
    assert review.select_daily_sample(db, day, seed="s1", now=NOW, risk_pm=0) == {}
    with pytest.raises(ValueError):
        review.select_daily_sample(db, day, seed="s1", rate_pm=50)
    # The reviewer re-checks; readers never review their own responses (assignment UNIQUE).
    reviewer, leader = ids["reviewers"][0], ids["leaders"][0]
    for marker in ids["markers"]:
        assert dispatch.claim_next(db, marker, ids["items"][0], queue="marking", now=NOW) is None
    v = dispatch.claim_next(db, reviewer, ids["items"][0], queue="review", now=NOW)
    submission.submit_mark(db, reviewer, v.token, "1", request_id="rv1", now=NOW)   # disagrees with 6.25
    with db.read() as s:
        entry = s.execute(select(RegisterEntry).where(RegisterEntry.register == "review_dispute")).scalar_one()
    with pytest.raises(NotAllowed):
        review.decide_dispute(db, reviewer, entry.id, score="1", now=NOW)
    change_id = review.decide_dispute(db, leader, entry.id, score="5.5", now=NOW)
    with db.read() as s:
        r = s.get(Response, entry.response_id)
        assert Fraction(r.final_num, r.final_den) == Fraction(11, 2)
        assert s.get(ScoreChange, change_id).status == "applied"
    assert ledger.verify(db, None).ok


def test_risk_weighting_adds_extremes():
    day = dt.date(2026, 11, 22)
    finalised = list(range(1, 101))
    risk = {rid: "extreme" for rid in range(1, 101, 5)}
    chosen = review.choose(day, "s", finalised, set(), risk, risk_pm=1000)
    reasons = Counter(r.split(":")[0] for _rid, r in chosen)
    assert reasons["uniform"] == 10 and reasons["risk"] >= 15


def _setup_total(db, *, first, second, objective_cp=5000, places=0, rounding="half_up"):
    ids = staffed_subject(db, markers=2, objective_max_cp=8000, places=places, rounding=rounding,
                          item_specs=[dict(code="Q1", max_cp=2000, step_cp=50, threshold_cp=200,
                                           policy={"extra_read_zero": False, "extra_read_full": False})])
    simulate.create_responses_for_testing(db, ids["subject_code"], 1, seed=1)
    with db.write() as s:
        s.execute(select(Script)).scalar_one().objective_cp = objective_cp
    _mark_all(db, ids, {"first": lambda n: first, "second": lambda n: second})
    with db.read() as s:
        ids["script"] = s.execute(select(Script)).scalar_one()
        ids["response"] = s.execute(select(Response)).scalar_one().id
    return ids


def test_total_rounded_once(db):
    """R-MARK-2: 50 + mean(9.5, 10) = 59.75 exactly; rounded once → 60 (not 50 + 10 = 60 by item rounding)."""
    ids = _setup_total(db, first="9.5", second="10", places=0)
    script = ids["script"]
    assert Fraction(script.total_num, script.total_den) == Fraction(5975, 100)
    assert script.total_rounded == "60"
    assert round_total(Fraction(239, 4), "half_up", 1) == Decimal("59.8")
    assert totals.verify_results(db) == []


def test_change_across_pass_mark_needs_authority(db):
    """R-QC-3: 60 → 58 crosses the pass mark: pending until an authority officer approves."""
    ids = _setup_total(db, first="9.5", second="10")   # total 59.75 → 60, a pass
    leader, officer, officer2 = ids["leaders"][0], ids["officer"], ids["officer2"]
    with pytest.raises(NotAllowed):
        changes.request_change(db, ids["markers"][0], ids["response"], "8", "input_error", now=NOW)
    with pytest.raises(ValueError):
        changes.request_change(db, leader, ids["response"], "8", "because", now=NOW)
    change = changes.request_change(db, leader, ids["response"], "8", "input_error", note="keyed 9.5", now=NOW)
    assert change.status == "pending_authority" and change.crosses_pass_mark
    with db.read() as s:
        assert s.get(Script, ids["script"].id).total_rounded == "60"   # not yet in effect
    change2 = changes.request_change(db, officer, ids["response"], "9.5", "input_error", now=NOW)
    assert change2.status == "applied"      # 59.5 → rounds to 60: no crossing, applies at once
    with pytest.raises(ValueError, match="not pending"):
        changes.decide_change(db, officer2, change2.id, True)
    with pytest.raises(changes.StaleChange):  # the score moved since the first request
        changes.decide_change(db, officer2, change.id, True, now=NOW)
    change3 = changes.request_change(db, officer, ids["response"], "8", "input_error", now=NOW)
    assert change3.status == "pending_authority"
    with pytest.raises(NotAllowed):
        changes.decide_change(db, officer, change3.id, True, now=NOW)    # requester ≠ approver
    with pytest.raises(NotAllowed):
        changes.decide_change(db, leader, change3.id, True, now=NOW)     # not an authority officer
    done = changes.decide_change(db, officer2, change3.id, True, now=NOW)
    assert done.status == "applied" and done.approved_by == officer2
    with db.read() as s:
        script = s.get(Script, ids["script"].id)
        assert script.total_rounded == "58"
        actions = [e.action for e in s.execute(select(ledger.LedgerEvent)
                                               .where(ledger.LedgerEvent.action.like("score_change%"))).scalars()]
    assert actions.count("score_change.applied") == 2
    assert totals.verify_results(db) == []
    assert ledger.verify(db, None).ok


def test_verify_lists_problems_and_review_request_fixes_totals(db):
    ids = _setup_total(db, first="9.5", second="10")
    simulate.create_responses_for_testing(db, ids["subject_code"], 1, seed=2)  # an unmarked script
    with db.write() as s:
        s.get(Script, ids["script"].id).total_rounded = "61"   # a totalling error
    findings = totals.verify_results(db, ids["subject_code"])
    kinds = sorted(f.kind for f in findings)
    assert kinds == ["item_not_marked", "total_mismatch"]
    req = review_requests.record_request(db, ids["officer"], ids["script"].id, now=NOW)
    outcome = review_requests.check_request(db, ids["officer"], req, now=NOW)
    assert outcome["totalling_error"] and outcome["corrected"] and outcome["missed"] == []
    assert [f.kind for f in totals.verify_results(db, ids["subject_code"])] == ["item_not_marked"]
    with pytest.raises(ValueError):
        review_requests.check_request(db, ids["officer"], req, now=NOW)
