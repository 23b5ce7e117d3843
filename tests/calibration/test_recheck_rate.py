"""The back-read change rate (R-MARK-5): of the responses a marker read that the daily
re-check re-read, how many the team leader changed — in the statistics and on the page."""
from __future__ import annotations

from sqlalchemy import select

from calibration import stats
from marking import dispatch, review, simulate, submission
from marking.centre_time import centre_day
from marking.models import RegisterEntry
from tests.marking.factories import NOW, staffed_subject


def _mark_all(db, item, markers, scores):
    for marker, score in zip(markers, scores):
        while (v := dispatch.claim_next(db, marker, item, now=NOW)) is not None:
            submission.submit_mark(db, marker, v.token, score, request_id=v.token, now=NOW)


def _open_dispute(db) -> int:
    with db.read() as s:
        return s.execute(select(RegisterEntry.id).where(RegisterEntry.register == "review_dispute",
                                                        RegisterEntry.status == "open")).scalar_one()


def test_recheck_change_rate_counts_rereads_and_changes(db):
    ids = staffed_subject(db, markers=2, reviewers=1, item_specs=[dict(code="Q1", policy={
        "extra_read_zero": False, "extra_read_full": False})])
    item, (m1, m2), reviewer, leader = ids["items"][0], ids["markers"], ids["reviewers"][0], ids["leaders"][0]
    simulate.create_responses_for_testing(db, ids["subject_code"], 25, seed=4)
    _mark_all(db, item, (m1, m2), ("6", "6.5"))          # every final 6.25, agreed
    before = {m["user_id"]: m for m in stats.marker_statistics(db, item)["markers"]}
    assert (before[m1]["rechecked"], before[m1]["recheck_changed"], before[m1]["recheck_change_rate"]) == (0, 0, None)

    sampled = review.select_daily_sample(db, centre_day(NOW), seed="s1", now=NOW, risk_pm=0)[item]
    assert len(sampled) == 3
    # The reviewer re-reads two: one agrees, one disagrees and the leader changes that final.
    for request_id, score in (("rv1", "6"), ("rv2", "1")):
        v = dispatch.claim_next(db, reviewer, item, queue="review", now=NOW)
        submission.submit_mark(db, reviewer, v.token, score, request_id=request_id, now=NOW)
    assert review.decide_dispute(db, leader, _open_dispute(db), score="5.5", now=NOW) is not None
    middle = {m["user_id"]: m for m in stats.marker_statistics(db, item)["markers"]}
    assert (middle[m1]["rechecked"], middle[m1]["recheck_changed"]) == (2, 1)   # sampled is not re-read
    # The third disagrees too, but the leader keeps the final: not a change.
    v = dispatch.claim_next(db, reviewer, item, queue="review", now=NOW)
    submission.submit_mark(db, reviewer, v.token, "1", request_id="rv3", now=NOW)
    assert review.decide_dispute(db, leader, _open_dispute(db), score=None, now=NOW) is None

    after = {m["user_id"]: m for m in stats.marker_statistics(db, item)["markers"]}
    for marker in (m1, m2):   # both read every response: the same three re-checks, one change
        assert (after[marker]["rechecked"], after[marker]["recheck_changed"]) == (3, 1)
        assert after[marker]["recheck_change_rate"] == round(1 / 3, 4)
    assert reviewer not in after   # a review mark is not live marking: the reviewer has no row
