"""Problem and abnormal responses (R-MARK-4, R-MARK-8).

* Problem (问题卷): the image is illegible, wrong or cut off, or the page is blank.
  The marker reports it instead of a score; the response leaves normal flow (its
  open tasks are cancelled) and waits in the item team leader's problem queue
  (register ``problem``). The leader requeues it (after a rescan, or "markable
  after all") or sets the score; either decision goes to the ledger.
* Abnormal (异常卷): handwriting changes, identity written, special marks, suspected
  copying. The response is marked first, never replaced; the report is registered
  (register ``abnormal``) and the team leader decides; the decision goes to the
  ledger, a score change through :mod:`marking.changes`.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import events, ledger
from .access import LeaseError, NotAllowed, active_user, require_leader_or_role
from .adjudication import CHAIN_KINDS, lock_response, record_resolution, reopen
from .centre_time import now_or
from .dispatch import cancel_open_tasks
from .models import Item, Mark, MarkTask, RegisterEntry, Response
from .policy import policy_for_item
from .scores import format_points, from_cp
from .submission import validate_score

PROBLEM_KINDS = ("illegible", "wrong_image", "cut_off", "blank")
ABNORMAL_DECISIONS = ("no_action", "score_changed", "reported_to_authority", "void_response")


@dataclass(frozen=True)
class QueueEntry:
    entry_id: int
    register: str
    reason: str
    item_id: int | None
    image_ref: str | None
    detail: dict[str, Any]
    created_at: dt.datetime


def report_problem(db, user_id: int, token: str, kind: str, *, note: str = "",
                   now: dt.datetime | None = None) -> int:
    """A reader reports a problem with the task's response; returns the register entry id."""
    if kind not in PROBLEM_KINDS:
        raise ValueError(f"unknown problem {kind!r}; use one of {', '.join(PROBLEM_KINDS)}")
    now = now_or(now)

    def fn(session: Session) -> int:
        active_user(session, user_id)
        found = session.execute(select(MarkTask.id, MarkTask.response_id)
                                .where(MarkTask.lease_token == token)).first()
        if found is None:
            raise LeaseError("unknown or recycled lease token")
        response = lock_response(session, found.response_id)
        task = session.execute(select(MarkTask).where(MarkTask.id == found.id).with_for_update()
                               .execution_options(populate_existing=True)).scalar_one()
        if task.status != "leased" or task.marker_id != user_id or task.lease_token != token:
            raise LeaseError("this task is no longer leased to you")
        if response.status == "resolved":
            raise ValueError("the response is already final; a reviewer records a disagreement instead")
        cancel_open_tasks(session, response.id, CHAIN_KINDS)
        response.status = "problem"
        entry = RegisterEntry(register="problem", status="open", reason_code=kind, script_id=response.script_id,
                              response_id=response.id, raised_by=user_id,
                              detail=ledger.canonical_json({"note": note[:400], "slot": task.slot}),
                              created_at=now)
        session.add(entry)
        session.flush()
        ledger.append(session, actor_id=user_id, action="response.problem_reported", entity="response",
                      entity_id=response.id, data={"entry_id": entry.id, "kind": kind, "slot": task.slot},
                      at=now)
        events.publish(session, events.leader_topic(response.item_id), "problem.reported",
                       {"item_id": response.item_id, "entry_id": entry.id})
        return entry.id

    return db.run(fn)


def register_abnormal(session: Session, response: Response, mark: Mark, flags: list[str], *,
                      now: dt.datetime) -> RegisterEntry:
    """R-MARK-8: called by submit (the response has been marked); the leader decides."""
    entry = RegisterEntry(register="abnormal", status="open", reason_code=flags[0], script_id=response.script_id,
                          response_id=response.id, raised_by=mark.marker_id,
                          detail=ledger.canonical_json({"flags": flags, "mark_id": mark.id}), created_at=now)
    session.add(entry)
    session.flush()
    ledger.append(session, actor_id=mark.marker_id, action="abnormal.registered", entity="response",
                  entity_id=response.id, data={"entry_id": entry.id, "flags": flags, "mark_id": mark.id}, at=now)
    events.publish(session, events.leader_topic(response.item_id), "abnormal.registered",
                   {"item_id": response.item_id, "entry_id": entry.id})
    return entry


def leader_queue(db, user_id: int, item_id: int, register: str = "problem") -> list[QueueEntry]:
    """Open entries of ``register`` (problem | abnormal | review_dispute) for the item's leader."""
    with db.read() as session:
        user = active_user(session, user_id)
        require_leader_or_role(session, user, item_id, "admin")
        rows = session.execute(
            select(RegisterEntry, Response.image_sha256)
            .join(Response, Response.id == RegisterEntry.response_id)
            .where(RegisterEntry.register == register, RegisterEntry.status == "open",
                   Response.item_id == item_id).order_by(RegisterEntry.id)
        ).all()
        return [QueueEntry(e.id, e.register, e.reason_code, item_id, image, json.loads(e.detail), e.created_at)
                for e, image in rows]


def _open_entry(session: Session, entry_id: int, register: str) -> tuple[RegisterEntry, Response]:
    entry = session.execute(select(RegisterEntry).where(RegisterEntry.id == entry_id).with_for_update()
                            .execution_options(populate_existing=True)).scalar_one_or_none()
    if entry is None or entry.register != register:
        raise LookupError(f"no {register} register entry {entry_id}")
    if entry.status != "open":
        raise ValueError(f"{register} entry {entry_id} is already {entry.status}")
    return entry, lock_response(session, entry.response_id)


def decide_problem(db, leader_id: int, entry_id: int, action: str, *, score=None,
                   condition_code: str | None = None, note: str = "", now: dt.datetime | None = None) -> str:
    """The team leader settles a problem: ``requeue`` or ``score`` (final, e.g. blank → 0 NR)."""
    if action not in ("requeue", "score"):
        raise ValueError("action must be 'requeue' or 'score'")
    now = now_or(now)

    def fn(session: Session) -> str:
        leader = active_user(session, leader_id)
        entry, response = _open_entry(session, entry_id, "problem")
        require_leader_or_role(session, leader, response.item_id)
        item = session.get(Item, response.item_id)
        data: dict[str, Any] = {"entry_id": entry.id, "action": action, "note": note[:400]}
        if action == "requeue":
            reopen(session, response, now=now, actor_id=leader.id)
        else:
            score_cp = validate_score(item, score, condition_code)
            policy_row, _params = policy_for_item(session, item)
            final = from_cp(score_cp)
            record_resolution(session, response, final=final, outcome="arbitrated", policy=policy_row,
                              inputs={"problem_entry": entry.id, "score": ledger.score_text(final),
                                      "condition_code": condition_code},
                              decided_by=leader.id, now=now, reason="arbitration")
            data["score"] = format_points(final)
            from . import totals
            totals.recompute_script(session, response.script_id, now=now, actor_id=leader.id)
        entry.status, entry.decided_by, entry.decided_at = "decided", leader.id, now
        ledger.append(session, actor_id=leader.id, action="problem.decided", entity="response",
                      entity_id=response.id, data=data, at=now)
        events.publish(session, events.leader_topic(item.id), "problem.decided", {"item_id": item.id})
        return response.status

    return db.run(fn)


def decide_abnormal(db, leader_id: int, entry_id: int, decision: str, *, new_score=None,
                    reason_code: str = "abnormal_decision", note: str = "",
                    now: dt.datetime | None = None) -> int | None:
    """R-MARK-8: the subject group decides an abnormal response. Returns a ScoreChange id if any."""
    if decision not in ABNORMAL_DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(ABNORMAL_DECISIONS)}")
    if (decision == "score_changed") != (new_score is not None):
        raise ValueError("give new_score exactly when the decision is score_changed")
    now = now_or(now)

    def fn(session: Session) -> int | None:
        from .changes import change_in_session

        leader = active_user(session, leader_id)
        entry, response = _open_entry(session, entry_id, "abnormal")
        require_leader_or_role(session, leader, response.item_id)
        if entry.raised_by == leader.id:
            raise NotAllowed("the reader who raised an abnormal report cannot also decide it")
        change_id = None
        if decision == "score_changed":
            if response.status != "resolved":
                raise ValueError("decide the score after the response is final")
            change = change_in_session(session, leader, response, new_score, reason_code, note=note, now=now)
            change_id = change.id
        entry.status, entry.decided_by, entry.decided_at = "decided", leader.id, now
        ledger.append(session, actor_id=leader.id, action="abnormal.decided", entity="response",
                      entity_id=response.id, reason="abnormal_decision",
                      data={"entry_id": entry.id, "decision": decision, "change_id": change_id,
                            "note": note[:400]}, at=now)
        return change_id

    return db.run(fn)


def final_points(response: Response) -> Fraction | None:
    return None if response.final_num is None else Fraction(response.final_num, response.final_den)
