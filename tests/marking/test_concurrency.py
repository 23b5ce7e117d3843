"""Many threads and processes claiming and submitting at once (SQLite and PostgreSQL)."""
from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from fractions import Fraction

from sqlalchemy import func, select

from marking import dispatch, ledger, policy, simulate, submission, totals
from marking.models import Item, LedgerEvent, Mark, MarkTask, Response, Script
from marking.models.work import MarkAssignment
from marking.scores import from_cp
from tests.marking import _workers
from tests.marking.factories import staffed_subject


def check_invariants(db, item_ids):
    with db.read() as s:
        # No response with two marks by one marker, no marker assigned twice.
        dup = s.execute(select(Mark.response_id, Mark.marker_id, func.count()).group_by(
            Mark.response_id, Mark.marker_id).having(func.count() > 1)).all()
        assert dup == []
        assert s.execute(select(MarkAssignment.response_id, MarkAssignment.marker_id).group_by(
            MarkAssignment.response_id, MarkAssignment.marker_id).having(func.count() > 1)).all() == []
        # No lost or duplicated submission: one ledger event per mark and vice versa.
        marks = s.execute(select(func.count()).select_from(Mark)).scalar_one()
        events = s.execute(select(func.count()).select_from(LedgerEvent)
                           .where(LedgerEvent.action == "mark.submitted")).scalar_one()
        assert marks == events
        # At most one live task per slot; exactly one third slot when one is needed.
        slots = Counter(s.execute(select(MarkTask.response_id, MarkTask.slot)
                                  .where(MarkTask.status != "cancelled")).all())
        assert max(slots.values()) == 1
        for item_id in item_ids:
            item = s.get(Item, item_id)
            _row, params = policy.policy_for_item(s, item)
            for r in s.execute(select(Response).where(Response.item_id == item_id)).scalars():
                assert r.status == "resolved"
                ms = {m.kind: m for m in s.execute(select(Mark).where(Mark.response_id == r.id)).scalars()}
                chain = {k: from_cp(m.score_cp) for k, m in ms.items() if k != "review"}
                d = policy.decide(params, policy.MarkSet(**chain), threshold=from_cp(item.threshold_cp),
                                  max_score=from_cp(item.max_cp), double_marked=item.double_marked)
                assert d.action == "final" and d.final == Fraction(r.final_num, r.final_den), (r.id, chain, d)
                needs_third = abs(chain["first"] - chain["second"]) > from_cp(item.threshold_cp)
                assert (slots.get((r.id, "third"), 0) == 1) == needs_third
                # Only the marks the policy needs exist: a third only if needed, etc.
                assert ("third" in chain) == needs_third
    assert ledger.verify(db, None).ok
    assert totals.verify_results(db) == []


def _plan(ids):
    plan = []
    for item_id in ids["items"]:
        plan += [(m, item_id, "marking") for m in ids["markers"]]
        plan += [(tl, item_id, q) for tl in ids["leaders"] for q in ("arbitration", "extra")]
    return plan


def test_many_threads(db):
    ids = staffed_subject(db, markers=6, leaders=2, item_specs=[dict(code="Q1"), dict(code="Q2")])
    simulate.create_responses_for_testing(db, ids["subject_code"], 20, seed=5)
    plan = _plan(ids)
    errors, results = [], []

    def run(k):
        try:
            mine = plan[k:] + plan[:k]   # every thread works every queue, in a different order
            results.append(_workers.work(db, mine, ids["items"], seed=5, deadline=time.monotonic() + 120,
                                         abandon_every=7 if k % 3 == 0 else 0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(r["replayed"] for r in results) > 0
    check_invariants(db, ids["items"])
    with db.read() as s:
        outcomes = Counter(s.execute(select(Response.status)).scalars())
    assert outcomes == {"resolved": 40}


def test_racing_retries_make_one_mark(db):
    ids = staffed_subject(db, markers=2)
    simulate.create_responses_for_testing(db, ids["subject_code"], 1, seed=2)
    m1 = ids["markers"][0]
    view = dispatch.claim_next(db, m1, ids["items"][0])
    out, errors = [], []

    def go():
        try:
            out.append(submission.submit_mark(db, m1, view.token, "5", request_id="same"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({r.mark_id for r in out}) == 1 and sum(not r.replayed for r in out) == 1
    with db.read() as s:
        assert s.execute(select(func.count()).select_from(Mark)).scalar_one() == 1


def test_many_processes(db, db_url):
    ids = staffed_subject(db, markers=6, leaders=1, item_specs=[dict(code="Q1")])
    simulate.create_responses_for_testing(db, ids["subject_code"], 24, seed=9)
    plan = _plan(ids)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        jobs = [pool.apply_async(_workers.process_main,
                                 (db_url, plan[k:] + plan[:k], ids["items"], 9, 120)) for k in range(3)]
        stats = [j.get(timeout=180) for j in jobs]
    assert sum(s["submitted"] for s in stats) >= 48
    check_invariants(db, ids["items"])


def _submit_at_once(db, submits) -> list[BaseException]:
    """Each (marker, view, score) submitted from its own thread, all released at once by a
    barrier; returns what they raised."""
    submits = list(submits)
    barrier, errors = threading.Barrier(len(submits)), []

    def submit(marker, view, score):
        try:
            barrier.wait()
            submission.submit_mark(db, marker, view.token, score, request_id=view.token)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=one) for one in submits]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_paired_reads_submitted_at_once_always_reach_their_decision(db):
    """R-MARK-3 under a race: the two reads of a response submitted at the same moment.
    Whichever commits second must decide on the first's mark (0 and 10 of 10 points,
    threshold 2: a third read) — it waited for the response lock, and the marks it
    decides on are read after that wait (on PostgreSQL inside its mark's statement,
    whose snapshot starts after the lock is granted)."""
    ids = staffed_subject(db, markers=2, item_specs=[dict(code="Q1")])
    simulate.create_responses_for_testing(db, ids["subject_code"], 10, seed=3)
    (m1, m2), item = ids["markers"], ids["items"][0]
    errors = []
    for _ in range(10):
        views = [dispatch.claim_next(db, m, item) for m in (m1, m2)]
        errors += _submit_at_once(db, zip((m1, m2), views, ("0", "10")))
    assert not errors, errors
    with db.read() as s:
        pairs = s.execute(select(Mark.response_id).where(Mark.kind.in_(("first", "second")))
                          .group_by(Mark.response_id).having(func.count() == 2)).scalars().all()
        thirds = set(s.execute(select(MarkTask.response_id).where(MarkTask.slot == "third")).scalars())
        status = dict(s.execute(select(Response.id, Response.status)).all())
    assert len(pairs) == 10   # each round's two claims were the two reads of one response
    assert thirds == set(pairs) and {status[r] for r in pairs} == {"third"}


def test_a_scripts_last_two_finals_at_once_always_total_it(db):
    """The script total under a race: the finals of a script's two items decided at the
    same moment. Whichever commits second must see the first's final and total the
    script — it waited for the script's lock, and the finals it adds up are read after
    that wait (on PostgreSQL the lock is taken by the final's own statement, whose
    snapshot predates the wait, so the finals must come from the statement after it)."""
    ids = staffed_subject(db, markers=2, item_specs=[dict(code="Q1", double_marked=False),
                                                      dict(code="Q2", double_marked=False)])
    simulate.create_responses_for_testing(db, ids["subject_code"], 8, seed=4)
    (m1, m2), (q1, q2) = ids["markers"], ids["items"]
    errors = []
    for _ in range(8):
        views = [dispatch.claim_next(db, m1, q1), dispatch.claim_next(db, m2, q2)]
        errors += _submit_at_once(db, zip((m1, m2), views, ("3", "4.5")))
    assert not errors, errors
    _assert_both_finals_totalled(db, 8, Fraction(15, 2))   # each round's two claims: one script's two items


def _assert_both_finals_totalled(db, scripts: int, subjective: Fraction) -> None:
    """Every script whose two responses are resolved is complete, its total the objective
    subtotal plus ``subjective``; there are ``scripts`` of them, and results verify."""
    with db.read() as s:
        resolved = s.execute(select(Response.script_id).group_by(Response.script_id)
                             .having(func.count() == 2, func.min(Response.status) == "resolved",
                                     func.max(Response.status) == "resolved")).scalars().all()
        rows = s.execute(select(Script.status, Script.objective_cp, Script.total_num, Script.total_den)
                         .where(Script.id.in_(resolved))).all()
    assert len(rows) == scripts
    for status, objective_cp, num, den in rows:
        assert status == "complete" and Fraction(num, den) == from_cp(objective_cp) + subjective
    assert totals.verify_results(db) == []


def test_a_scripts_last_two_deciding_reads_at_once_always_total_it(db):
    """The same race between second reads of double-marked items. A read that joins an
    earlier mark takes the script's lock in its mark's statement, and its final then reads
    the script's finals in its own statement (PostgreSQL): correct only because the lock
    was held before that statement started. Fails on PostgreSQL when the mark's statement
    notes the lock without taking it (checked)."""
    ids = staffed_subject(db, markers=4, item_specs=[dict(code="Q1"), dict(code="Q2")])
    simulate.create_responses_for_testing(db, ids["subject_code"], 8, seed=4)
    (m1, m2, m3, m4), (q1, q2) = ids["markers"], ids["items"]
    errors = []
    for _ in range(8):
        for marker, item in ((m1, q1), (m2, q2)):   # first reads, one after the other
            view = dispatch.claim_next(db, marker, item)
            submission.submit_mark(db, marker, view.token, "5", request_id=view.token)
        views = [dispatch.claim_next(db, m3, q1), dispatch.claim_next(db, m4, q2)]   # their second reads
        errors += _submit_at_once(db, zip((m3, m4), views, ("5.5", "5.5")))
    assert not errors, errors
    _assert_both_finals_totalled(db, 8, Fraction(21, 2))   # (5 + 5.5) / 2 on each of two items
