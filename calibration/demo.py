"""Demo support: trial marking → scheme → standardisation sets → qualification → seeds →
a drifting marker suspended with work re-queued. Deterministic for a given seed.

``run_demo(db, subject_code, seed=…)`` needs a subject whose item has ≥ 3 active
markers, a team leader, an approver (authority officer or admin) and about 60
unmarked responses (e.g. after ``marking.simulate.create_responses_for_testing``).
It installs the calibration hooks (idempotent) and returns a summary.
"""
from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import select

from marking import dispatch, ledger, submission
from marking.access import NotAllowed
from marking.centre_time import now_or
from marking.models import Item, ItemDuty, MarkerSuspension, MarkTask, StandardisationResponse, User, UserRole
from marking.totals import find_subject

from . import config, hooks, scheme, standardisation


def _true_cp(item: Item, response_id: int, seed: int) -> int:
    steps = item.max_cp // item.step_cp
    h = int(hashlib.sha256(f"demo|{seed}|{response_id}".encode()).hexdigest(), 16)
    return (steps // 5 + h % max(1, steps - 2 * (steps // 5) + 1)) * item.step_cp


def _submit(db, user_id: int, token: str, cp: int, now: dt.datetime, tag: str) -> None:
    submission.submit_mark(db, user_id, token, f"{cp // 100}.{cp % 100:02d}", request_id=f"cal-{tag}-{token}",
                           dwell_ms=25_000, now=now)


def _task(db, token: str) -> MarkTask:
    with db.read() as s:
        return s.execute(select(MarkTask).where(MarkTask.lease_token == token)).scalar_one()


def run_demo(db, subject_code: str, *, seed: int = 7, item_code: str | None = None,
             now: dt.datetime | None = None) -> dict[str, Any]:
    hooks.install()
    clock = [now_or(now)]

    def tick(seconds: int = 30) -> dt.datetime:
        clock[0] = clock[0] + dt.timedelta(seconds=seconds)
        return clock[0]

    with db.read() as s:
        subject = find_subject(s, subject_code)
        q = select(Item).where(Item.subject_id == subject.id, Item.kind == "subjective").order_by(Item.ordinal)
        if item_code:
            q = q.where(Item.code == item_code)
        item = s.execute(q).scalars().first()
        # Only staff whose level the item allows (R-ROLE-1): dispatch refuses the others anyway.
        staff = {d: s.execute(select(ItemDuty.user_id).join(User, User.id == ItemDuty.user_id)
                              .where(ItemDuty.item_id == item.id, ItemDuty.duty == d, ItemDuty.status == "active",
                                     User.qualification_level >= item.required_qualification)
                              .order_by(ItemDuty.user_id)).scalars().all() for d in ("marker", "team_leader")}
        approver = s.execute(select(User.id).join(UserRole, UserRole.user_id == User.id)
                             .where(UserRole.role.in_(("authority_officer", "admin")))
                             .order_by(User.id)).scalars().first()
    leader, markers = staff["team_leader"][0], staff["marker"]
    if len(markers) < 3 or approver is None:
        raise RuntimeError("the demo needs ≥ 3 markers, a team leader and an authority officer or admin")
    summary: dict[str, Any] = {"item": item.code}
    # 1. Trial marking by the team leader (试评) and the scheme, frozen with a second person's approval.
    with db.write() as s:
        config.set_for_item(s, item.id, {"qualification_size": 5, "seed_rate": 5, "seed_rate_start": 4,
                                         "validity_min_seeds": 3, "validity_window": 4, "self_check_pm": 20,
                                         "self_check_min_age": 5, "schedule_salt": f"demo-{seed}"},
                            actor_id=leader, now=tick())
    trial = scheme.start_trial(db, leader, item.id, 24, seed=f"demo-{seed}", now=tick())
    while (view := scheme.next_trial_task(db, leader, item.id, now=tick())) is not None:
        _submit(db, leader, view.token, _true_cp(item, _task(db, view.token).response_id, seed), tick(), "trial")
    sid = scheme.draft_scheme(db, leader, item.id, "评分细则: award points for each correct step; "
                              "condition codes for blank or off-topic answers.",
                              [{"score": "0", "descriptor": "no creditable work"},
                               {"score": str(item.max_cp // 100), "descriptor": "complete and correct"}], now=tick())
    scheme.submit_scheme(db, leader, sid, now=tick())
    scheme.decide_scheme(db, approver, sid, True, note="demo approval", now=tick())
    summary["trial_responses"] = len(trial)
    # 2. Standardisation sets from the trial marks: 12 qualification, 10 seeds, 2 practice.
    entries = []
    for k, mark in enumerate(scheme.trial_marks(db, item.id)):
        purpose = "qualification" if k < 12 else "seed" if k < 22 else "practice"
        entries.append({"response_id": mark["response_id"], "purpose": purpose, "definitive": mark["score"]})
    standardisation.define(db, leader, item.id, entries, now=tick())
    # 3. Qualification: the first marker fails once, then passes on new responses.
    attempts = []
    for n, marker in enumerate(markers):
        for good in ((False, True) if n == 0 else (True,)):
            standardisation.start_attempt(db, marker, item.id, now=tick())
            while (view := standardisation.next_task(db, marker, item.id, now=tick())) is not None:
                with db.read() as s:
                    definitive = s.execute(select(StandardisationResponse.definitive_cp).where(
                        StandardisationResponse.response_id == _task(db, view.token).response_id)).scalar_one()
                cp = definitive if good else min(item.max_cp, definitive + 3 * item.step_cp + item.threshold_cp)
                _submit(db, marker, view.token, cp, tick(), "q")
            attempts.append((marker, "passed" if good else "failed"))
    summary["qualification"] = attempts
    # 4. Live marking with seeds; the last marker drifts severe after a good start until suspended.
    drifter = markers[-1]
    counts = {"seed": 0, "self_check": 0, "live": 0}
    suspended = False
    for rnd in range(200):
        progressed = False
        for marker in markers:
            if marker == drifter and suspended:
                continue
            try:
                view = dispatch.claim_next(db, marker, item.id, now=tick())
            except NotAllowed:
                if marker == drifter:
                    suspended = True
                continue
            if view is None:
                continue
            progressed = True
            task = _task(db, view.token)
            if task.slot == "seed":
                with db.read() as s:
                    cp = s.execute(select(StandardisationResponse.definitive_cp).where(
                        StandardisationResponse.response_id == task.response_id)).scalar_one()
            else:
                cp = _true_cp(item, task.response_id, seed)
            if marker == drifter and rnd >= 8:
                cp = max(0, cp - item.threshold_cp - 2 * item.step_cp)
            counts["seed" if task.slot == "seed" else task.slot if task.slot == "self_check" else "live"] += 1
            _submit(db, marker, view.token, cp, tick(20), "live")
        for queue in ("arbitration", "extra"):
            while True:
                try:
                    view = dispatch.claim_next(db, leader, item.id, queue=queue, now=tick())
                except NotAllowed:
                    break
                if view is None:
                    break
                progressed = True
                _submit(db, leader, view.token, _true_cp(item, _task(db, view.token).response_id, seed), tick(), queue)
        if not progressed:
            break
    with db.read() as s:
        rows = s.execute(select(MarkerSuspension).where(MarkerSuspension.item_id == item.id)).scalars().all()
        summary["suspensions"] = [{"user_id": r.user_id, "cause": r.cause, "requeued": r.requeued} for r in rows]
    summary["dealt"] = counts
    summary["ledger_ok"] = ledger.verify(db, None).ok
    return summary
