"""Suspension with blast-radius re-queue (★ reference/marking.md §6.3), resume, re-qualification.

Suspending a marker on an item (automatically from :mod:`calibration.monitor`, or
by the team leader):

1. holds dispatch: the marker duty becomes ``suspended`` (``has_duty`` then refuses
   every claim) and a ``revoked`` qualification attempt is added, so resuming needs
   a new passed attempt;
2. returns the marker's leases on the item to the pool (seed/self-check leases are
   cancelled);
3. re-queues every live mark (first/second/third) of the marker on the item
   submitted since their last passed seed (since their qualification when no seed
   passed since): the mark's task is set ``cancelled`` — the mark is kept for the
   record but is out of the resolution chain (``marking.adjudication.chain_marks``
   ignores marks of cancelled tasks) — and a fresh task of the same slot is opened,
   which dispatch deals only to markers who never read the response. Open
   third/arbitration/extra tasks of the response are cancelled; the policy decides
   again when the new mark arrives (``advance`` → ``finalise`` → ``record_resolution``
   and the script total, all through the ledger). A final score that depended on the
   mark is withdrawn at once (status back to ``marking``): ledger event
   ``response.requeued`` with reason ``suspension_requeue`` and the score before.
   Responses settled by arbitration keep the team leader's score (R-MARK-3).
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from marking import events, ledger
from marking.access import NotAllowed, active_user
from marking.adjudication import chain_marks, final_of, lock_response
from marking.centre_time import now_or
from marking.dispatch import cancel_open_tasks, ensure_task
from marking.models import (CalibrationResult, ItemDuty, Mark, MarkerSuspension, MarkTask, Qualification,
                            StandardisationResponse)

from .common import LIVE_MARK_KINDS, leader, monitoring_start


def blast_radius_start(session: Session, user_id: int, item_id: int) -> dt.datetime | None:
    """Submission time of the marker's last passed seed (within tolerance) since their licence began."""
    since = monitoring_start(session, user_id, item_id)
    q = (select(Mark.submitted_at).join(CalibrationResult, CalibrationResult.mark_id == Mark.id)
         .where(CalibrationResult.user_id == user_id, CalibrationResult.item_id == item_id,
                CalibrationResult.kind == "seed", CalibrationResult.within.is_(True)))
    if since is not None:
        q = q.where(Mark.submitted_at >= since)
    last_pass = session.execute(q.order_by(Mark.submitted_at.desc()).limit(1)).scalar_one_or_none()
    return last_pass or since


def has_qualification_set(session: Session, item_id: int) -> bool:
    return session.execute(select(StandardisationResponse.id).where(
        StandardisationResponse.item_id == item_id, StandardisationResponse.purpose == "qualification",
        StandardisationResponse.active.is_(True)).limit(1)).scalar() is not None


def suspend_in_session(session: Session, user_id: int, item_id: int, *, cause: str, detail: dict[str, Any],
                       actor_id: int | None, now: dt.datetime) -> MarkerSuspension:
    duties = session.execute(select(ItemDuty).where(ItemDuty.user_id == user_id, ItemDuty.item_id == item_id,
                                                    ItemDuty.duty == "marker")).scalars().all()
    if not duties:
        raise NotAllowed(f"user {user_id} has no marker duty on item {item_id}")
    for duty in duties:
        duty.status, duty.status_reason, duty.updated_at = "suspended", f"suspended: {cause}", now
    since = blast_radius_start(session, user_id, item_id)
    if has_qualification_set(session, item_id):
        # Resuming needs re-qualification (issue 7); without a set there is nothing to re-take.
        latest = session.execute(select(Qualification).where(Qualification.user_id == user_id,
                                                             Qualification.item_id == item_id)
                                 .order_by(Qualification.attempt.desc()).limit(1)).scalar_one_or_none()
        if latest is not None and latest.status == "pending":
            latest.status, latest.decided_at = "revoked", now
        else:
            session.add(Qualification(user_id=user_id, item_id=item_id,
                                      attempt=(latest.attempt if latest else 0) + 1, status="revoked",
                                      decided_at=now, detail=json.dumps({"reason": f"suspended: {cause}"})))
    # Leases back to the pool; injected calibration work cancelled.
    session.execute(update(MarkTask).where(MarkTask.item_id == item_id, MarkTask.marker_id == user_id,
                                           MarkTask.status == "leased", MarkTask.slot.in_(LIVE_MARK_KINDS))
                    .values(status="open", marker_id=None, lease_token=None, leased_until=None, claimed_at=None)
                    .execution_options(synchronize_session=False))
    session.execute(update(MarkTask).where(MarkTask.item_id == item_id, MarkTask.reserved_for == user_id,
                                           MarkTask.status.in_(("open", "leased")),
                                           MarkTask.slot.in_(("seed", "self_check")))
                    .values(status="cancelled", leased_until=None).execution_options(synchronize_session=False))
    row = MarkerSuspension(user_id=user_id, item_id=item_id, cause=cause,
                           detail=ledger.canonical_json(detail), suspended_by=actor_id, suspended_at=now,
                           since_at=since, requeued=0)
    session.add(row)
    session.flush()
    ledger.append(session, actor_id=actor_id, action="marker.suspended", entity="user", entity_id=user_id,
                  data={"item_id": item_id, "suspension_id": row.id, "cause": cause, "detail": detail,
                        "since": since.isoformat() if since else None}, at=now)
    q = (select(Mark).join(MarkTask, MarkTask.id == Mark.task_id)
         .where(Mark.marker_id == user_id, MarkTask.item_id == item_id, Mark.kind.in_(LIVE_MARK_KINDS),
                MarkTask.status == "done"))
    if since is not None:
        q = q.where(Mark.submitted_at > since)
    marks = session.execute(q.order_by(Mark.id)).scalars().all()
    requeued = []
    for mark in marks:
        if requeue_mark(session, mark, suspension_id=row.id, actor_id=actor_id, now=now):
            requeued.append(mark.response_id)
    row.requeued = len(requeued)
    events.publish(session, events.leader_topic(item_id), "marker.suspended",
                   {"item_id": item_id, "user_id": user_id, "cause": cause, "requeued": len(requeued)})
    events.publish(session, events.item_topic(item_id), "queue.changed", {"item_id": item_id})
    return row


def requeue_mark(session: Session, mark: Mark, *, suspension_id: int, actor_id: int | None,
                 now: dt.datetime) -> bool:
    """Take one mark out of its response's chain and deal its slot again. False if nothing to do."""
    response = lock_response(session, mark.response_id)
    if response.status in ("void", "problem"):
        return False
    chain = chain_marks(session, response.id)
    if "arbitration" in chain:
        return False  # the team leader's score is final (R-MARK-3)
    if chain.get(mark.kind) is None or chain[mark.kind].id != mark.id:
        return False
    task = session.execute(select(MarkTask).where(MarkTask.id == mark.task_id).with_for_update()).scalar_one()
    task.status = "cancelled"
    session.flush()
    cancel_open_tasks(session, response.id, ("third", "arbitration", "extra"))
    ensure_task(session, response, mark.kind)
    before = final_of(response)
    if response.status == "resolved":
        response.final_num = response.final_den = None
        response.resolved_at = None
    response.status = "marking"
    ledger.append(session, actor_id=actor_id, action="response.requeued", entity="response", entity_id=response.id,
                  reason="suspension_requeue",
                  data={"suspension_id": suspension_id, "mark_id": mark.id, "slot": mark.kind,
                        "marker_id": mark.marker_id, "before": ledger.score_text(before),
                        "item_id": response.item_id, "script_id": response.script_id}, at=now)
    events.publish(session, events.leader_topic(response.item_id), "response.requeued",
                   {"item_id": response.item_id})
    return True


def suspend(db, actor_id: int, user_id: int, item_id: int, *, note: str = "",
            now: dt.datetime | None = None) -> int:
    """Manual suspension by the item's team leader (or an admin); returns the suspension id."""
    now = now_or(now)

    def fn(session: Session) -> int:
        boss = leader(session, actor_id, item_id)
        duty = session.execute(select(ItemDuty).where(ItemDuty.user_id == user_id, ItemDuty.item_id == item_id,
                                                      ItemDuty.duty == "marker")).scalar_one_or_none()
        if duty is not None and duty.status == "suspended":
            raise ValueError("the marker is already suspended on this item")
        return suspend_in_session(session, user_id, item_id, cause="manual", detail={"note": note[:400]},
                                  actor_id=boss.id, now=now).id

    return db.run(fn, retry_integrity=False)


def resume(db, actor_id: int, user_id: int, item_id: int, *, note: str = "",
           now: dt.datetime | None = None) -> None:
    """The team leader lets a suspended marker back: through re-qualification where the
    item has a qualification set (dispatch waits for a passed attempt), else directly."""
    now = now_or(now)

    def fn(session: Session) -> None:
        boss = leader(session, actor_id, item_id)
        active_user(session, user_id)
        duties = session.execute(select(ItemDuty).where(ItemDuty.user_id == user_id, ItemDuty.item_id == item_id,
                                                        ItemDuty.duty == "marker",
                                                        ItemDuty.status == "suspended")).scalars().all()
        if not duties:
            raise ValueError("the marker is not suspended on this item")
        status, reason = (("pending_qualification", "resumed: re-qualify") if has_qualification_set(session, item_id)
                          else ("active", "resumed"))
        for duty in duties:
            duty.status, duty.status_reason, duty.updated_at = status, reason, now
        open_rows = session.execute(select(MarkerSuspension).where(MarkerSuspension.user_id == user_id,
                                                                   MarkerSuspension.item_id == item_id,
                                                                   MarkerSuspension.resumed_at.is_(None))).scalars()
        for row in open_rows:
            row.resumed_at, row.resumed_by = now, boss.id
        ledger.append(session, actor_id=boss.id, action="marker.resumed", entity="user", entity_id=user_id,
                      data={"item_id": item_id, "note": note[:400], "status": status}, at=now)
        events.publish(session, events.leader_topic(item_id), "duty.changed", {"item_id": item_id})

    db.run(fn)


def suspensions(db, item_id: int) -> list[dict[str, Any]]:
    with db.read() as session:
        rows = session.execute(select(MarkerSuspension).where(MarkerSuspension.item_id == item_id)
                               .order_by(MarkerSuspension.id)).scalars().all()
        return [{"id": r.id, "user_id": r.user_id, "cause": r.cause, "detail": json.loads(r.detail),
                 "suspended_by": r.suspended_by, "suspended_at": r.suspended_at.isoformat(),
                 "since": r.since_at.isoformat() if r.since_at else None, "requeued": r.requeued,
                 "resumed_at": r.resumed_at.isoformat() if r.resumed_at else None} for r in rows]

