"""Standardisation sets and qualification (上岗考核): R-ROLE-1, R-ROLE-2.

* The team leader classes responses as ``practice``, ``qualification`` or ``seed``
  with an exact definitive score (a valid mark of the item). Because every marker
  may be shown them, standardisation responses are withdrawn from live dealing:
  an unresolved one is finalised at the definitive score — the subject group's
  decision (R-MARK-4) — through the engine's ``record_resolution`` (ledger reason
  ``arbitration``), and its script total is recomputed. A response already final
  keeps its score.
* Defining the first qualification responses of an item makes a passed test a
  condition of dispatch (``marking.eligibility``): markers with a marker duty get a
  pending attempt and their duty becomes ``pending_qualification``; team leaders
  and reviewers without a marker duty are recorded as passed (basis recorded).
* An attempt deals ``qualification_size`` qualification responses the marker has
  never seen (so a retake sees new responses, RM's 1st/2nd qualification sets).
  When all are marked, it is graded: exact agreement on items worth ≤ 2/3/4–6
  points (90/80/70 %), within-threshold (80 %) above; configurable per item.
  Passing activates the duty (unless suspended). Attempts are kept, never edited
  after their decision.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marking import events, ledger, totals
from marking.access import NotAllowed, active_user
from marking.adjudication import CHAIN_KINDS, lock_response, record_resolution
from marking.centre_time import now_or
from marking.dispatch import cancel_open_tasks
from marking.models import (CalibrationResult, Item, ItemDuty, Mark, MarkTask, Qualification,
                            StandardisationResponse)
from marking.policy import policy_for_item
from marking.scores import check_mark, format_points, from_cp, parse_points

from . import config
from .common import leader, seen, subjective_item

PURPOSES = ("practice", "qualification", "seed")


@dataclass(frozen=True)
class SetEntry:
    response_id: int
    purpose: str
    definitive: Any
    tolerance: Any = None
    rationale: str = ""


def define(db, leader_id: int, item_id: int, entries: Iterable[SetEntry | dict], *,
           now: dt.datetime | None = None) -> list[int]:
    """Add responses to the item's standardisation sets; returns the new row ids."""
    now = now_or(now)
    entries = [e if isinstance(e, SetEntry) else SetEntry(**e) for e in entries]

    def fn(session: Session) -> list[int]:
        boss = leader(session, leader_id, item_id)
        item = subjective_item(session, item_id)
        had_qualification = _has_qualification_set(session, item_id)
        ids = []
        for entry in entries:
            if entry.purpose not in PURPOSES:
                raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}")
            definitive_cp = check_mark(parse_points(str(entry.definitive)), max_cp=item.max_cp, step_cp=item.step_cp)
            tolerance_cp = None
            if entry.tolerance is not None:
                tolerance_cp = int(parse_points(str(entry.tolerance)) * 100)
            response = lock_response(session, entry.response_id)
            if response.item_id != item_id:
                raise ValueError(f"response {response.id} belongs to another item")
            if response.status in ("problem", "void"):
                raise ValueError(f"response {response.id} is {response.status}; choose another")
            row = StandardisationResponse(item_id=item_id, response_id=response.id, purpose=entry.purpose,
                                          definitive_cp=definitive_cp, tolerance_cp=tolerance_cp,
                                          rationale=entry.rationale[:2000], created_by=boss.id, created_at=now)
            session.add(row)
            session.flush()
            ids.append(row.id)
            definitive = from_cp(definitive_cp)
            ledger.append(session, actor_id=boss.id, action="standardisation.defined", entity="response",
                          entity_id=response.id,
                          data={"row_id": row.id, "purpose": entry.purpose, "item_id": item_id,
                                "definitive": ledger.score_text(definitive),
                                "tolerance": ledger.score_text(from_cp(tolerance_cp)) if tolerance_cp is not None else None},
                          at=now)
            if response.status != "resolved":
                cancel_open_tasks(session, response.id, CHAIN_KINDS)
                policy_row, _ = policy_for_item(session, item)
                record_resolution(session, response, final=definitive, outcome="arbitrated", policy=policy_row,
                                  inputs={"standardisation": row.id, "definitive": ledger.score_text(definitive)},
                                  decided_by=boss.id, now=now, reason="arbitration")
                totals.recompute_script(session, response.script_id, now=now, actor_id=boss.id)
        if not had_qualification and _has_qualification_set(session, item_id):
            _require_qualification(session, item, boss.id, now)
        return ids

    return db.run(fn, retry_integrity=False)


def retire(db, leader_id: int, row_id: int, *, now: dt.datetime | None = None) -> None:
    """Take a response out of rotation (seed pools rotate; ★ seed hygiene)."""
    now = now_or(now)

    def fn(session: Session) -> None:
        row = session.get(StandardisationResponse, row_id)
        if row is None:
            raise LookupError(f"no standardisation response {row_id}")
        boss = leader(session, leader_id, row.item_id)
        row.active = False
        ledger.append(session, actor_id=boss.id, action="standardisation.retired", entity="response",
                      entity_id=row.response_id, data={"row_id": row.id}, at=now)

    db.run(fn)


def _has_qualification_set(session: Session, item_id: int) -> bool:
    return session.execute(select(StandardisationResponse.id).where(
        StandardisationResponse.item_id == item_id, StandardisationResponse.purpose == "qualification").limit(1)
    ).first() is not None


def _require_qualification(session: Session, item: Item, actor_id: int, now: dt.datetime) -> None:
    duties = session.execute(select(ItemDuty).where(ItemDuty.item_id == item.id)).scalars().all()
    by_user: dict[int, list[ItemDuty]] = {}
    for d in duties:
        by_user.setdefault(d.user_id, []).append(d)
    for user_id, rows in sorted(by_user.items()):
        if session.execute(select(Qualification.id).where(Qualification.user_id == user_id,
                                                          Qualification.item_id == item.id)).first():
            continue
        kinds = {d.duty for d in rows}
        if "marker" in kinds:
            session.add(Qualification(user_id=user_id, item_id=item.id, attempt=1, status="pending",
                                      detail=json.dumps({"reason": "qualification set defined"})))
            for d in rows:
                if d.duty == "marker" and d.status == "active":
                    d.status, d.status_reason, d.updated_at = "pending_qualification", "qualification required", now
        else:
            session.add(Qualification(user_id=user_id, item_id=item.id, attempt=1, status="passed", decided_at=now,
                                      detail=json.dumps({"basis": "exempt:" + "+".join(sorted(kinds))})))
    session.flush()
    ledger.append(session, actor_id=actor_id, action="qualification.required", entity="item", entity_id=item.id,
                  data={"users": sorted(by_user)}, at=now)


def grant_exemption(db, leader_id: int, user_id: int, item_id: int, basis: str, *,
                    now: dt.datetime | None = None) -> int:
    """Record a passed qualification without a test for a team leader or reviewer added later."""
    now = now_or(now)

    def fn(session: Session) -> int:
        boss = leader(session, leader_id, item_id)
        duties = {d for (d,) in session.execute(select(ItemDuty.duty).where(ItemDuty.user_id == user_id,
                                                                           ItemDuty.item_id == item_id))}
        if "marker" in duties or not duties:
            raise NotAllowed("markers qualify by test; exemptions are for team leaders and reviewers")
        attempt = _next_attempt(session, user_id, item_id)
        row = Qualification(user_id=user_id, item_id=item_id, attempt=attempt, status="passed", decided_at=now,
                            detail=json.dumps({"basis": f"exempt:{basis}", "granted_by": boss.id}))
        session.add(row)
        session.flush()
        ledger.append(session, actor_id=boss.id, action="qualification.exempted", entity="user", entity_id=user_id,
                      data={"item_id": item_id, "attempt": attempt, "basis": basis}, at=now)
        return row.id

    return db.run(fn)


def _next_attempt(session: Session, user_id: int, item_id: int) -> int:
    return (session.execute(select(func.max(Qualification.attempt)).where(
        Qualification.user_id == user_id, Qualification.item_id == item_id)).scalar() or 0) + 1


def _latest(session: Session, user_id: int, item_id: int) -> Qualification | None:
    return session.execute(select(Qualification).where(Qualification.user_id == user_id,
                                                       Qualification.item_id == item_id)
                           .order_by(Qualification.attempt.desc()).limit(1)).scalar_one_or_none()


def _marker_duty(session: Session, user_id: int, item_id: int) -> ItemDuty:
    duty = session.execute(select(ItemDuty).where(ItemDuty.user_id == user_id, ItemDuty.item_id == item_id,
                                                  ItemDuty.duty == "marker")).scalar_one_or_none()
    if duty is None:
        raise NotAllowed(f"user {user_id} has no marker duty on item {item_id}")
    if duty.status == "suspended":
        raise NotAllowed("suspended: the team leader must resume the marker before re-qualification")
    return duty


def _unseen(session: Session, user_id: int, item_id: int, purpose: str, salt: str) -> list[int]:
    rows = session.execute(select(StandardisationResponse.response_id).where(
        StandardisationResponse.item_id == item_id, StandardisationResponse.purpose == purpose,
        StandardisationResponse.active.is_(True))).scalars().all()
    fresh = [rid for rid in rows if not seen(session, user_id, rid)]
    return sorted(fresh, key=lambda rid: hashlib.sha256(f"{salt}|{user_id}|{rid}".encode()).hexdigest())


def start_attempt(db, user_id: int, item_id: int, *, now: dt.datetime | None = None) -> int:
    """Open (or continue) the marker's qualification attempt; returns the Qualification id."""
    now = now_or(now)

    def fn(session: Session) -> int:
        user = active_user(session, user_id)
        item = subjective_item(session, item_id)
        if user.qualification_level < item.required_qualification:
            # R-ROLE-1: the professional level is a precondition a qualification set cannot replace.
            raise NotAllowed("this item needs a higher marker qualification level than yours")
        _marker_duty(session, user_id, item_id)
        settings = config.for_item(session, item_id)
        latest = _latest(session, user_id, item_id)
        if latest is not None and latest.status == "passed":
            raise ValueError("already qualified on this item")
        detail = json.loads(latest.detail) if latest is not None else {}
        if latest is not None and latest.status == "pending" and detail.get("responses"):
            return latest.id
        size = int(settings["qualification_size"])
        pool = _unseen(session, user_id, item_id, "qualification", settings["schedule_salt"])
        if len(pool) < size:
            raise ValueError(f"only {len(pool)} unseen qualification responses for this marker; "
                             f"the team leader must add more (need {size})")
        chosen = pool[:size]
        if latest is not None and latest.status == "pending":
            row = latest
        else:
            row = Qualification(user_id=user_id, item_id=item_id, attempt=_next_attempt(session, user_id, item_id),
                                status="pending")
            session.add(row)
        detail.update({"responses": chosen, "started_at": now.isoformat()})
        row.detail = json.dumps(detail, sort_keys=True)
        session.flush()
        for rid in chosen:
            session.add(MarkTask(response_id=rid, item_id=item_id, slot="qualification", status="open",
                                 reserved_for=user_id, created_at=now))
        ledger.append(session, actor_id=user_id, action="qualification.started", entity="user", entity_id=user_id,
                      data={"item_id": item_id, "attempt": row.attempt, "responses": len(chosen)}, at=now)
        return row.id

    return db.run(fn, retry_integrity=False)


def next_task(db, user_id: int, item_id: int, purpose: str = "qualification", *, now: dt.datetime | None = None,
              lease_seconds: int | None = None):
    """The next qualification (or practice) response for the marker, as a TaskView; None when done."""
    if purpose not in ("qualification", "practice"):
        raise ValueError("purpose is qualification or practice")
    now = now_or(now)
    from .scheme import next_reserved_task

    if purpose == "practice":
        def make(session: Session) -> None:
            active_user(session, user_id)
            _marker_duty(session, user_id, item_id)
            if session.execute(select(MarkTask.id).where(MarkTask.item_id == item_id, MarkTask.slot == "practice",
                                                         MarkTask.reserved_for == user_id,
                                                         MarkTask.status.in_(("open", "leased")))).first():
                return
            settings = config.for_item(session, item_id)
            pool = _unseen(session, user_id, item_id, "practice", settings["schedule_salt"])
            if pool:
                session.add(MarkTask(response_id=pool[0], item_id=item_id, slot="practice", status="open",
                                     reserved_for=user_id, created_at=now))

        db.run(make)
    return next_reserved_task(db, user_id, item_id, purpose, now=now, lease_seconds=lease_seconds)


def on_calibration_mark(session: Session, task: MarkTask, mark: Mark, now: dt.datetime) -> None:
    """Submission hook for ``qualification`` and ``practice`` marks."""
    row = session.execute(select(StandardisationResponse).where(
        StandardisationResponse.response_id == task.response_id)).scalar_one_or_none()
    if row is None:
        return
    item = session.get(Item, task.item_id)
    settings = config.for_item(session, item.id)
    rule, _required = config.qualification_rule(settings, from_cp(item.max_cp))
    tolerance = 0 if rule == "exact" else item.threshold_cp
    qualification = None
    if task.slot == "qualification":
        latest = _latest(session, mark.marker_id, item.id)
        if latest is not None and latest.status == "pending":
            qualification = latest
    session.add(CalibrationResult(mark_id=mark.id, user_id=mark.marker_id, item_id=item.id, kind=task.slot,
                                  score_cp=mark.score_cp, reference_cp=row.definitive_cp, tolerance_cp=tolerance,
                                  within=abs(mark.score_cp - row.definitive_cp) <= tolerance,
                                  qualification_id=qualification.id if qualification else None, created_at=now))
    session.flush()
    if qualification is not None:
        _maybe_grade(session, qualification, item, settings, now)


def _maybe_grade(session: Session, q: Qualification, item: Item, settings: dict, now: dt.datetime) -> None:
    detail = json.loads(q.detail)
    wanted = set(detail.get("responses", []))
    results = session.execute(select(CalibrationResult, Mark.response_id)
                              .join(Mark, Mark.id == CalibrationResult.mark_id)
                              .where(CalibrationResult.qualification_id == q.id)).all()
    done = {rid for _r, rid in results}
    if not wanted or not wanted <= done:
        return
    rule, required = config.qualification_rule(settings, from_cp(item.max_cp))
    exact = sum(r.score_cp == r.reference_cp for r, _ in results)
    within_t = sum(abs(r.score_cp - r.reference_cp) <= item.threshold_cp for r, _ in results)
    n = len(results)
    agree = exact if rule == "exact" else within_t
    passed = agree * 1000 >= required * n
    q.status = "passed" if passed else "failed"
    q.decided_at = now
    detail.update({"rule": rule, "required_pm": required, "n": n, "exact": exact, "within_threshold": within_t,
                   "agreement_pm": agree * 1000 // n})
    q.detail = json.dumps(detail, sort_keys=True)
    if passed:
        for duty in session.execute(select(ItemDuty).where(ItemDuty.user_id == q.user_id, ItemDuty.item_id == item.id,
                                                           ItemDuty.status == "pending_qualification")).scalars():
            duty.status, duty.status_reason, duty.updated_at = "active", f"qualified (attempt {q.attempt})", now
    ledger.append(session, actor_id=q.user_id, action="qualification.decided", entity="user", entity_id=q.user_id,
                  data={"item_id": item.id, "attempt": q.attempt, "status": q.status, "rule": rule,
                        "required_pm": required, "n": n, "agreed": agree}, at=now)
    events.publish(session, events.leader_topic(item.id), "qualification.decided",
                   {"item_id": item.id, "user_id": q.user_id, "status": q.status})


# --------------------------------------------------------------------------- views

def qualification_status(db, item_id: int) -> list[dict[str, Any]]:
    """Per user with a duty on the item: duty status, latest attempt, its result (TL screen)."""
    with db.read() as session:
        duties = session.execute(select(ItemDuty).where(ItemDuty.item_id == item_id)
                                 .order_by(ItemDuty.user_id, ItemDuty.duty)).scalars().all()
        out = []
        for d in duties:
            rows = session.execute(select(Qualification).where(Qualification.user_id == d.user_id,
                                                               Qualification.item_id == item_id)
                                   .order_by(Qualification.attempt)).scalars().all()
            out.append({"user_id": d.user_id, "duty": d.duty, "duty_status": d.status,
                        "attempts": [{"attempt": q.attempt, "status": q.status,
                                      "decided_at": q.decided_at.isoformat() if q.decided_at else None,
                                      "detail": {k: v for k, v in json.loads(q.detail).items() if k != "responses"}}
                                     for q in rows]})
        return out


def practice_feedback(db, user_id: int, item_id: int) -> list[dict[str, str]]:
    """The marker's own practice and decided qualification marks against the definitive scores."""
    with db.read() as session:
        rows = session.execute(select(CalibrationResult).where(
            CalibrationResult.user_id == user_id, CalibrationResult.item_id == item_id,
            CalibrationResult.kind.in_(("practice", "qualification"))).order_by(CalibrationResult.id)).scalars().all()
        out = []
        for r in rows:
            if r.kind == "qualification":
                q = session.get(Qualification, r.qualification_id) if r.qualification_id else None
                if q is None or q.status == "pending":
                    continue  # no feedback while the attempt is open
            out.append({"kind": r.kind, "score": format_points(from_cp(r.score_cp)),
                        "definitive": format_points(from_cp(r.reference_cp)), "within": "yes" if r.within else "no"})
        return out


def sets(db, item_id: int) -> list[dict[str, Any]]:
    """The item's standardisation responses (team leaders only — seeds are hidden from markers)."""
    with db.read() as session:
        rows = session.execute(select(StandardisationResponse).where(StandardisationResponse.item_id == item_id)
                               .order_by(StandardisationResponse.id)).scalars().all()
        return [{"id": r.id, "response_id": r.response_id, "purpose": r.purpose, "active": r.active,
                 "definitive": format_points(from_cp(r.definitive_cp)),
                 "tolerance": format_points(from_cp(r.tolerance_cp)) if r.tolerance_cp is not None else None,
                 "rationale": r.rationale} for r in rows]

