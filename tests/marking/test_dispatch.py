"""Dispatch and submit: leases, fencing, idempotency, blindness, eligibility, caps."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from sqlalchemy import func, select, update

from marking import dispatch, ledger, problems, simulate, submission
from marking.access import LeaseError, NotAllowed
from marking.models import (Candidate, Exclusion, Item, Mark, MarkTask, Qualification, RegisterEntry, Response,
                            Script, User)
from marking.models.work import MarkAssignment
from marking.scores import ScoreError
from tests.marking.factories import NOW, staffed_subject


@pytest.fixture
def world(db):
    ids = staffed_subject(db, markers=3)
    simulate.create_responses_for_testing(db, ids["subject_code"], 4, seed=3)
    ids["item"] = ids["items"][0]
    return ids


def test_expired_lease_is_recycled_and_old_token_fenced(db, world):
    m1, m2, _ = world["markers"]
    item = world["item"]
    v1 = dispatch.claim_next(db, m1, item, now=NOW, lease_seconds=60)
    later = NOW + dt.timedelta(seconds=61)
    v2 = dispatch.claim_next(db, m2, item, now=later)
    with db.read() as s:
        t1 = s.execute(select(MarkTask).where(MarkTask.lease_token == v2.token)).scalar_one()
    # m2 took over the recycled task (lowest id first) and m1's token no longer works.
    with pytest.raises(LeaseError):
        submission.submit_mark(db, m1, v1.token, "5", request_id="late", now=later)
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Mark)).scalar_one() == 0
        assert t1.status == "leased"
    # m1 is never dealt that response again (assignment history), even though it is open for others.
    v3 = dispatch.claim_next(db, m1, item, now=later)
    with db.read() as s:
        first = s.execute(select(MarkAssignment.response_id).where(MarkAssignment.marker_id == m1)
                          .order_by(MarkAssignment.id)).scalars().all()
    assert len(first) == 2 and first[0] != first[1]
    assert v3.token != v1.token


def test_renew_extends_and_release_returns(db, world):
    m1 = world["markers"][0]
    v = dispatch.claim_next(db, m1, world["item"], now=NOW, lease_seconds=60)
    until = dispatch.renew_lease(db, m1, v.token, now=NOW + dt.timedelta(seconds=50), lease_seconds=60)
    assert until == NOW + dt.timedelta(seconds=110)
    # Still held after the original expiry: a claim by someone else does not recycle it.
    dispatch.claim_next(db, world["markers"][1], world["item"], now=NOW + dt.timedelta(seconds=90))
    result = submission.submit_mark(db, m1, v.token, "4.5", request_id="x1", now=NOW + dt.timedelta(seconds=95))
    assert result.score == "4.5"
    with pytest.raises(LeaseError):
        dispatch.renew_lease(db, m1, v.token, now=NOW)
    v2 = dispatch.claim_next(db, m1, world["item"], now=NOW)
    dispatch.release_task(db, m1, v2.token)
    with pytest.raises(LeaseError):
        submission.submit_mark(db, m1, v2.token, "1", request_id="x2", now=NOW)


def test_foreign_token_and_bad_scores_write_nothing(db, world):
    m1, m2, _ = world["markers"]
    v = dispatch.claim_next(db, m1, world["item"], now=NOW)
    with pytest.raises(LeaseError):
        submission.submit_mark(db, m2, v.token, "5", request_id="steal", now=NOW)
    for bad in ("10.5", "3.25", "-1", "abc"):
        with pytest.raises(ScoreError):
            submission.submit_mark(db, m1, v.token, bad, request_id=f"bad{bad}", now=NOW)
    with pytest.raises(TypeError):
        submission.submit_mark(db, m1, v.token, 2.5, request_id="float", now=NOW)
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Mark)).scalar_one() == 0
    ok = submission.submit_mark(db, m1, v.token, None, condition_code="NR", request_id="nr", now=NOW)
    assert (ok.score, ok.condition_code) == ("0", "NR")


def test_idempotent_retry_returns_original(db, world):
    m1 = world["markers"][0]
    v = dispatch.claim_next(db, m1, world["item"], now=NOW)
    first = submission.submit_mark(db, m1, v.token, "6", request_id="req-1", now=NOW)
    again = submission.submit_mark(db, m1, v.token, "7", request_id="req-1", now=NOW)
    assert again.mark_id == first.mark_id and again.replayed and again.score == "6"
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Mark)).scalar_one() == 1
        assert s.execute(select(func.count()).select_from(ledger.LedgerEvent)
                         .where(ledger.LedgerEvent.action == "mark.submitted")).scalar_one() == 1
    v2 = dispatch.claim_next(db, m1, world["item"], now=NOW)
    with pytest.raises(submission.IdempotencyConflict):
        submission.submit_mark(db, m1, v2.token, "6", request_id="req-1", now=NOW)


def test_marker_view_is_blind(db, world):
    """R-SEC-1: no candidate identity, no other marker's score in what a marker receives."""
    m1, m2, _ = world["markers"]
    v1 = dispatch.claim_next(db, m1, world["item"], now=NOW)
    submission.submit_mark(db, m1, v1.token, "7.5", request_id="b1", now=NOW)
    v2 = dispatch.claim_next(db, m2, world["item"], now=NOW)
    with db.read() as s:
        task = s.execute(select(MarkTask).where(MarkTask.lease_token == v2.token)).scalar_one()
        response = s.get(Response, task.response_id)
        script = s.get(Script, response.script_id)
        cand = s.get(Candidate, script.candidate_id)
        assert task.slot == "second"  # the same response m1 has just marked
    text = json.dumps(v2.as_dict(), ensure_ascii=False)
    for secret in (cand.name, cand.candidate_no, script.anon_code, cand.school_code, "7.5"):
        assert secret not in text
    assert set(v2.as_dict()) == {f.name for f in dataclasses.fields(dispatch.TaskView)}
    assert v2.earlier_marks == () and v2.queue == "marking"
    assert "score" not in json.dumps(submission.submit_mark(db, m2, v2.token, "7", request_id="b2", now=NOW).__dict__
                                     ).replace('"score"', "")


def test_qualification_and_duty_honoured(db, world):
    """R-ROLE-1: level below the item's requirement, or no passed test, is never dealt."""
    item = world["item"]
    m1, m2, _ = world["markers"]
    with db.write() as s:
        s.get(Item, item).required_qualification = 2
    with pytest.raises(NotAllowed, match="R-ROLE-1"):
        dispatch.claim_next(db, m1, item, now=NOW)
    with db.write() as s:
        s.get(Item, item).required_qualification = 1
        s.add(Qualification(user_id=m1, item_id=item, attempt=1, status="failed"))
    with pytest.raises(NotAllowed, match="failed"):
        dispatch.claim_next(db, m1, item, now=NOW)
    with pytest.raises(NotAllowed, match="not passed"):   # the item now has a qualification procedure
        dispatch.claim_next(db, m2, item, now=NOW)
    with db.write() as s:
        s.add(Qualification(user_id=m1, item_id=item, attempt=2, status="passed"))
    assert dispatch.claim_next(db, m1, item, now=NOW) is not None
    with pytest.raises(NotAllowed, match="duty"):
        dispatch.claim_next(db, world["officer"], item, now=NOW)
    with pytest.raises(NotAllowed):
        dispatch.claim_next(db, m1, item, queue="arbitration", now=NOW)


def test_exclusions_honoured(db, world):
    """R-ROLE-4: a marker excluded from a school, region or candidate is never dealt those scripts."""
    m1 = world["markers"][0]
    with db.write() as s:
        schools = s.execute(select(Candidate.school_code).distinct()).scalars().all()
        for code in schools[:-1]:
            s.add(Exclusion(user_id=m1, kind="school", value=code, reason="relative"))
        allowed_school = schools[-1]
    seen = []
    while (v := dispatch.claim_next(db, m1, world["item"], now=NOW)) is not None:
        with db.read() as s:
            task = s.execute(select(MarkTask).where(MarkTask.lease_token == v.token)).scalar_one()
            seen.append(s.execute(select(Candidate.school_code).join(Script, Script.candidate_id == Candidate.id)
                                  .join(Response, Response.script_id == Script.id)
                                  .where(Response.id == task.response_id)).scalar_one())
        submission.submit_mark(db, m1, v.token, "5", request_id=v.token, now=NOW)
    assert seen and set(seen) == {allowed_school}
    # Own school counts as an exclusion too.
    with db.write() as s:
        s.get(User, m1).school_code = allowed_school
    assert dispatch.claim_next(db, m1, world["item"], now=NOW) is None


def test_daily_cap(db, world):
    m1 = world["markers"][0]
    with db.write() as s:
        s.get(Item, world["item"]).daily_cap = 2
    for n in range(2):
        v = dispatch.claim_next(db, m1, world["item"], now=NOW)
        submission.submit_mark(db, m1, v.token, "5", request_id=f"c{n}", now=NOW)
    with pytest.raises(dispatch.CapReached):
        dispatch.claim_next(db, m1, world["item"], now=NOW)
    assert dispatch.claim_next(db, m1, world["item"], now=NOW + dt.timedelta(days=1)) is not None


def test_same_lease_returned_on_reload(db, world):
    m1 = world["markers"][0]
    a = dispatch.claim_next(db, m1, world["item"], now=NOW)
    b = dispatch.claim_next(db, m1, world["item"], now=NOW)
    assert a.token == b.token


def test_problem_and_abnormal_go_to_team_leader(db, world):
    """R-MARK-4/R-MARK-8: problems leave normal flow; abnormal ones are marked first, then registered."""
    m1, m2, _ = world["markers"]
    leader = world["leaders"][0]
    item = world["item"]
    v = dispatch.claim_next(db, m1, item, now=NOW)
    entry = problems.report_problem(db, m1, v.token, "illegible", note="smudged", now=NOW)
    queue = problems.leader_queue(db, leader, item)
    assert [q.entry_id for q in queue] == [entry]
    with pytest.raises(NotAllowed):
        problems.leader_queue(db, m1, item)
    with db.read() as s:
        rid = s.get(RegisterEntry, entry).response_id
        assert s.get(Response, rid).status == "problem"
        assert not s.execute(select(MarkTask).where(MarkTask.response_id == rid,
                                                    MarkTask.status.in_(("open", "leased")))).first()
    assert problems.decide_problem(db, leader, entry, "requeue", now=NOW) == "pending"
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(MarkTask).where(
            MarkTask.response_id == rid, MarkTask.status == "open")).scalar_one() == 2
    # Abnormal: marked, and registered for the leader.
    v2 = dispatch.claim_next(db, m2, item, now=NOW)
    submission.submit_mark(db, m2, v2.token, "6", request_id="ab", flags=["identity_written"], now=NOW)
    abnormal = problems.leader_queue(db, leader, item, register="abnormal")
    assert len(abnormal) == 1 and abnormal[0].detail["flags"] == ["identity_written"]
    problems.decide_abnormal(db, leader, abnormal[0].entry_id, "reported_to_authority", note="ok", now=NOW)
    with db.read() as s:
        actions = s.execute(select(ledger.LedgerEvent.action)).scalars().all()
    assert {"response.problem_reported", "problem.decided", "abnormal.registered", "abnormal.decided"} <= set(actions)
    assert ledger.verify(db, None).ok


def test_a_responses_two_reads_are_dealt_together(db, world):
    """Third reads first; then the lower task id of first/second, so responses resolve as marking goes."""
    m1, m2, m3 = world["markers"]
    item = world["item"]
    views = [dispatch.claim_next(db, m, item, now=NOW) for m in (m1, m2, m3)]
    with db.read() as s:
        dealt = [s.execute(select(MarkTask.response_id, MarkTask.slot)
                           .where(MarkTask.lease_token == v.token)).one() for v in views]
    first_response = dealt[0].response_id
    assert [tuple(d) for d in dealt[:2]] == [(first_response, "first"), (first_response, "second")]
    assert dealt[2].slot == "first" and dealt[2].response_id != first_response
    # Both reads in, far apart: the third read is dealt before any new first read.
    submission.submit_mark(db, m1, views[0].token, "0", request_id="t1", now=NOW)
    submission.submit_mark(db, m2, views[1].token, "10", request_id="t2", now=NOW)
    submission.submit_mark(db, m3, views[2].token, "5", request_id="t3", now=NOW)
    third = dispatch.claim_next(db, m3, item, now=NOW)
    with db.read() as s:
        assert tuple(s.execute(select(MarkTask.response_id, MarkTask.slot)
                               .where(MarkTask.lease_token == third.token)).one()) == (first_response, "third")


def test_a_claim_is_a_fixed_handful_of_statements(db, world):
    """Issue 8: a claim's round trips are fixed — the same number for two markers in a row, at most
    five with calibration's seed and self-check schedule installed (its counts ride in the facts
    statement: user, item, duty, qualification, held lease, counts; then pick, assignment, view,
    and the outbox row at commit)."""
    import calibration
    from sqlalchemy import event
    calibration.install()
    seen: list[str] = []
    # SQLite's BEGIN IMMEDIATE is sent as a statement (PostgreSQL's BEGIN is not): not a query.
    listener = lambda *a: None if a[2].startswith("BEGIN") else seen.append(a[2])  # noqa: E731
    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        m1, m2, _ = world["markers"]
        dispatch.claim_next(db, m1, world["item"], now=NOW)
        first = len(seen)
        dispatch.claim_next(db, m2, world["item"], now=NOW)
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    assert first == len(seen) - first <= 5, seen


# The workbench step's statements (submit + next claim, deferred chaining as the servers
# run it): PostgreSQL — the facts with the response locked; the fenced mark with the
# response's chain marks (and, on a first read, the response's status; on a read joining
# earlier marks, the script's lock); on the read that decides, the resolution with the
# chain closed and the script's finals, then its new total; then the claim's facts and
# deal, and the ledger and outbox rows at commit.
WORKBENCH_STATEMENTS = {"postgresql": {"first read": 5, "deciding read": 7},
                        "sqlite": {"first read": 12, "deciding read": 17}}


def test_a_mark_is_a_fixed_handful_of_statements(db, db_url, world):
    """Issue 8 counts round trips per mark; this pins them (a change that adds one fails here)."""
    from sqlalchemy import event

    from marking import workbench
    from marking.db import Database
    deferred = Database(db_url, ledger_chaining="deferred")
    m1, m2, _ = world["markers"]
    item = world["item"]
    warm = dispatch.claim_next(deferred, m1, item, now=NOW)   # response A, first read
    step = workbench.submit_and_claim_next(deferred, m1, warm.token, "5", request_id="w", item_id=item, now=NOW)
    second = dispatch.claim_next(deferred, m2, item, now=NOW)   # A's second read
    counts, seen = {}, []
    listener = lambda *a: None if a[2].startswith("BEGIN") else seen.append(a[2])  # noqa: E731
    event.listen(deferred.engine, "before_cursor_execute", listener)
    try:
        workbench.submit_and_claim_next(deferred, m1, step.next.token, "5", request_id="a", item_id=item, now=NOW)
        counts["first read"] = len(seen)
        workbench.submit_and_claim_next(deferred, m2, second.token, "6", request_id="b", item_id=item, now=NOW)
        counts["deciding read"] = len(seen) - counts["first read"]
    finally:
        event.remove(deferred.engine, "before_cursor_execute", listener)
        deferred.dispose()
    def status(token):
        with db.read() as s:
            return s.execute(select(Response.status).join(MarkTask, MarkTask.response_id == Response.id)
                             .where(MarkTask.lease_token == token)).scalar_one()
    assert (status(step.next.token), status(second.token)) == ("marking", "resolved")
    assert counts == WORKBENCH_STATEMENTS[db.dialect], seen


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_marks_writes_go_through_no_flush(db, world):
    """PostgreSQL: a mark's writes are statements of their own, and the ORM objects are told
    the values (issue 8). A first read's response became ``marking`` in the mark's
    statement, so the decision must not assign it again; a deciding read's final and the
    script's total are written by the finalise and total statements. Either, left to the
    ORM, would send the object through a unit-of-work flush at the next query, which a
    statement count cannot see."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    from marking import workbench
    from marking.policy import policy_for_item
    m1, m2, _ = world["markers"]
    item = world["item"]
    with db.write() as s:   # a centre's first submit stores the default policy: done before
        policy_for_item(s, s.get(Item, item))
        s.execute(update(Script).values(objective_cp=1000))   # objective part scored: a final totals the script
    first = dispatch.claim_next(db, m1, item, now=NOW)
    flushed: list[set[str]] = []

    def note(session, _context, _instances):
        flushed.append({type(o).__name__ for o in [*session.dirty, *session.new]})

    event.listen(Session, "before_flush", note)
    try:
        step = workbench.submit_and_claim_next(db, m1, first.token, "5", request_id="f1", item_id=item, now=NOW)
        after_first, flushed[:] = list(flushed), []
        second = dispatch.claim_next(db, m2, item, now=NOW)
        flushed.clear()
        workbench.submit_and_claim_next(db, m2, second.token, "6", request_id="f2", item_id=item, now=NOW)
    finally:
        event.remove(Session, "before_flush", note)
    assert step.next is not None and after_first == [] and flushed == [], (after_first, flushed)
    with db.read() as s:
        response, script = s.execute(select(Response, Script).join(Script, Script.id == Response.script_id)
                                     .join(MarkTask, MarkTask.response_id == Response.id)
                                     .where(MarkTask.lease_token == first.token)).one()
        assert (response.status, response.final_num, response.final_den) == ("resolved", 11, 2)
        assert (script.status, script.total_num, script.total_den, script.total_rounded) == \
            ("complete", 31, 2, "16")


def test_submit_and_next_in_one_transaction_keeps_the_mark_when_no_next_is_allowed(db, world):
    """The workbench step: mark + next task together; a refused next (cap) still saves the mark."""
    from marking import workbench
    m1 = world["markers"][0]
    with db.write() as s:
        s.get(Item, world["item"]).daily_cap = 2
    v = dispatch.claim_next(db, m1, world["item"], now=NOW)
    step = workbench.submit_and_claim_next(db, m1, v.token, "5", request_id="n1", item_id=world["item"], now=NOW)
    assert not step.result.replayed and step.next is not None and step.next_error is None
    last = workbench.submit_and_claim_next(db, m1, step.next.token, "6", request_id="n2", item_id=world["item"],
                                           now=NOW)
    assert last.next is None and "cap" in last.next_error
    again = workbench.submit_and_claim_next(db, m1, step.next.token, "6", request_id="n2", item_id=world["item"],
                                            now=NOW)
    assert again.result.replayed and again.result.mark_id == last.result.mark_id
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Mark).where(Mark.marker_id == m1)).scalar_one() == 2
        assert s.execute(select(func.count()).select_from(ledger.LedgerEvent)
                         .where(ledger.LedgerEvent.action == "mark.submitted")).scalar_one() == 2
