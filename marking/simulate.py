"""Drive demo markers through the service API (``marking-centre demo``), deterministically.

:func:`create_responses_for_testing` makes candidates, scripts and responses for a
subject without images (``image_sha256`` NULL) so marking can be shown before batch
ingest exists. :func:`simulate_marking` then has the item's markers, team leaders and
reviewers claim and submit through the same services the web uses, producing
agreements, third marks, at least one arbitration (when an item has three markers
and a leader), extra reads and a review sample. Scores come from
``random.Random`` seeded by (seed, response id), so a fresh database and the same
seed give the same results.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections import Counter
from fractions import Fraction
from typing import Any

from sqlalchemy import func, select

from . import dispatch, review, submission
from .access import NotAllowed
from .centre_time import centre_day, now_or
from .models import (Candidate, ExamSession, Item, ItemDuty, Mark, MarkTask, RegisterEntry, Registration,
                     Resolution, Response, Script)
from .models.work import MarkAssignment
from .policy import MarkSet, decide, policy_for_item
from .scores import from_cp
from .totals import find_subject, has_objective_items


def _candidate_no(session_row: ExamSession, seq: int) -> str:
    # R-OMR-8: city(2) county(2) year(2) sitting(1) sequence(5).
    return f"4501{session_row.year % 100:02d}{session_row.sitting}{seq:05d}"


def create_responses_for_testing(db, subject_code: str, count: int, *, seed: int = 0,
                                 session_code: str | None = None, schools: tuple[str, ...] = ("S01", "S02", "S03"),
                                 with_objective: bool = True) -> list[int]:
    """Create ``count`` candidates with scripts and one response per subjective item; return script ids."""
    rng = random.Random(f"responses:{seed}")

    def fn(session) -> list[int]:
        subject = find_subject(session, subject_code, session_code)
        exam = session.get(ExamSession, subject.session_id)
        items = session.execute(select(Item).where(Item.subject_id == subject.id).order_by(Item.ordinal)).scalars().all()
        subjective = [i for i in items if i.kind == "subjective"]
        objective_max = sum(i.max_cp for i in items if i.kind == "objective")
        objective = has_objective_items(session, subject.id)
        start = session.execute(select(func.count()).select_from(Candidate)
                                .where(Candidate.session_id == exam.id)).scalar_one()
        script_ids = []
        for n in range(count):
            seq = start + n + 1
            cand = Candidate(session_id=exam.id, candidate_no=_candidate_no(exam, seq), name=f"Candidate {seq}",
                             school_code=schools[seq % len(schools)] if schools else None,
                             region_code=f"R{seq % 2}")
            session.add(cand)
            session.flush()
            session.add(Registration(candidate_id=cand.id, subject_id=subject.id))
            anon = hashlib.sha256(f"{seed}:{subject.id}:{seq}".encode()).hexdigest()[:16].upper()
            objective_cp = None
            if objective and with_objective:
                objective_cp = rng.randrange(0, objective_max // 100 + 1) * 100
            script = Script(subject_id=subject.id, candidate_id=cand.id, anon_code=anon, status="marking",
                            objective_cp=objective_cp)
            session.add(script)
            session.flush()
            for item in subjective:
                response = Response(script_id=script.id, item_id=item.id, status="pending")
                session.add(response)
                session.flush()
                dispatch.open_tasks_for_response(session, response, item)
            script_ids.append(script.id)
        return script_ids

    return db.run(fn, retry_integrity=False)


def _steps(item: Item) -> int:
    return item.max_cp // item.step_cp


def _score_for(item: Item, response_id: int, slot: str, seed: int, earlier: dict[str, int]) -> int:
    """Deterministic scenario per response: mostly agreement, some thirds, some arbitration."""
    rng = random.Random(f"{seed}:{response_id}")
    steps = _steps(item)
    t_steps = item.threshold_cp // item.step_cp
    roll = rng.random()
    true = rng.randrange(1, steps) if steps > 1 else steps
    gap = t_steps + 1  # just beyond the threshold
    far_possible = 2 * gap <= steps
    if response_id % 7 == 3 and far_possible:
        scenario = "arbitration"
    elif roll < 0.2 and gap <= steps:
        scenario = "third"
    else:
        scenario = "agree"
    if scenario == "agree":
        jitter = rng.choice([0, 0, min(1, t_steps)])
        values = {"first": true, "second": min(steps, true + jitter)}
    elif scenario == "third":
        low = rng.randrange(0, steps - gap + 1)
        values = {"first": low, "second": low + gap, "third": low}
    else:
        low = 0
        values = {"first": low, "second": low + gap, "third": min(steps, low + 2 * gap)}
    if slot in values:
        return values[slot] * item.step_cp
    if slot == "arbitration":
        known = [v for v in earlier.values()]
        return (sum(known) // max(1, len(known)) // item.step_cp) * item.step_cp
    if slot in ("extra", "review"):
        final = earlier.get("final")
        return final if final is not None else true * item.step_cp
    return true * item.step_cp


def _staff(session, item_id: int, duty: str) -> list[int]:
    return list(session.execute(
        select(ItemDuty.user_id).where(ItemDuty.item_id == item_id, ItemDuty.duty == duty,
                                       ItemDuty.status == "active").order_by(ItemDuty.user_id)
    ).scalars())


def _earlier(db, token: str) -> tuple[Item, int, str, dict[str, int]]:
    """The driver (not the marker) looks up the task to script its scenario."""
    with db.read() as session:
        task = session.execute(select(MarkTask).where(MarkTask.lease_token == token)).scalar_one()
        item = session.get(Item, task.item_id)
        response = session.get(Response, task.response_id)
        earlier = {k: cp for k, cp in session.execute(
            select(Mark.kind, Mark.score_cp).where(Mark.response_id == task.response_id)).all()}
        if response.final_num is not None:
            target = Fraction(response.final_num, response.final_den)
        else:  # an extra read of a provisional 0 / full mark: the reader confirms it
            _row, params = policy_for_item(session, item)
            target = decide(params, MarkSet(**{k: from_cp(v) for k, v in earlier.items()
                                               if k in ("first", "second", "third")}),
                            threshold=from_cp(item.threshold_cp), max_score=from_cp(item.max_cp),
                            double_marked=item.double_marked).provisional
        if target is not None:
            earlier["final"] = (int(target * 100) // item.step_cp) * item.step_cp
        return item, task.response_id, task.slot, earlier


def _work(db, user_id: int, item_id: int, queue: str, seed: int, now: dt.datetime | None,
          counters: Counter) -> bool:
    try:
        view = dispatch.claim_next(db, user_id, item_id, queue=queue, now=now)
    except NotAllowed:
        return False
    if view is None:
        return False
    item, response_id, slot, earlier = _earlier(db, view.token)
    score_cp = _score_for(item, response_id, slot, seed, earlier)
    submission.submit_mark(db, user_id, view.token, Fraction(score_cp, 100), request_id=f"sim-{view.token}",
                           dwell_ms=20_000 + (response_id * 7919) % 40_000, now=now)
    counters[f"marks:{slot}"] += 1
    return True


def simulate_marking(db, subject_code: str, *, seed: int, session_code: str | None = None,
                     now: dt.datetime | None = None, review_seed: str | None = None,
                     max_rounds: int = 100_000) -> dict[str, Any]:
    """Mark every open response of the subject through the services; return a summary."""
    counters: Counter = Counter()
    with db.read() as session:
        subject = find_subject(session, subject_code, session_code)
        items = session.execute(select(Item).where(Item.subject_id == subject.id, Item.kind == "subjective")
                                .order_by(Item.ordinal)).scalars().all()
        staff = {i.id: {d: _staff(session, i.id, d) for d in ("marker", "team_leader", "reviewer")} for i in items}
    for item in items:
        if len(staff[item.id]["marker"]) < 2 or not staff[item.id]["team_leader"]:
            raise RuntimeError(f"item {item.code} needs at least two active markers and a team leader "
                               "(three markers for third marks)")

    def drain(queue_plan: list[tuple[int, str, int]]) -> None:
        for _ in range(max_rounds):
            progressed = False
            for user_id, queue, item_id in queue_plan:
                progressed |= _work(db, user_id, item_id, queue, seed, now, counters)
            if not progressed:
                return

    for _round in range(3):  # marking → arbitration/extra → (third after extra) …
        for item in items:
            plan = [(u, "marking", item.id) for u in staff[item.id]["marker"]]
            drain(plan)
            # Reviewers take extra reads first so the team leader stays free to arbitrate.
            drain([(u, "extra", item.id) for u in staff[item.id]["reviewer"]]
                  + [(u, q, item.id) for u in staff[item.id]["team_leader"] for q in ("arbitration", "extra")])
    day = centre_day(now_or(now))
    sampled = review.select_daily_sample(db, day, seed=review_seed or f"demo-{seed}",
                                         item_ids=[i.id for i in items], now=now)
    for item in items:
        reviewers = staff[item.id]["reviewer"] + staff[item.id]["team_leader"]
        drain([(u, "review", item.id) for u in reviewers])
    with db.read() as session:
        ids = [i.id for i in items]
        statuses = dict(session.execute(select(Response.status, func.count()).where(Response.item_id.in_(ids))
                                        .group_by(Response.status)).all())
        outcomes = dict(session.execute(
            select(Resolution.outcome, func.count()).join(Response, Response.id == Resolution.response_id)
            .where(Response.item_id.in_(ids)).group_by(Resolution.outcome)).all())
        disputes = session.execute(select(func.count()).select_from(RegisterEntry)
                                   .join(Response, Response.id == RegisterEntry.response_id)
                                   .where(Response.item_id.in_(ids),
                                          RegisterEntry.register == "review_dispute")).scalar_one()
        totalled = session.execute(select(func.count()).select_from(Script)
                                   .where(Script.subject_id == subject.id, Script.total_num.is_not(None))).scalar_one()
        assignments = session.execute(select(func.count()).select_from(MarkAssignment)
                                      .where(MarkAssignment.item_id.in_(ids))).scalar_one()
    return {
        "subject": subject_code,
        "seed": seed,
        "marks": {k.split(":", 1)[1]: v for k, v in sorted(counters.items())},
        "responses": statuses,
        "outcomes": outcomes,
        "review_sampled": sum(len(v) for v in sampled.values()),
        "review_disputes": disputes,
        "scripts_totalled": totalled,
        "assignments": assignments,
    }

