"""Score changes: the ONE service through which a recorded final score changes.

R-MARK-7, R-QC-2, R-QC-3, R-QC-5:

* Only designated roles: the item's team leader (role ``team_leader`` with an
  active team_leader duty on the item), an ``authority_officer`` or an ``admin``.
* Every change writes a ScoreChange row and a ledger event with before, after and a
  reason code from ``ledger.REASON_CODES`` in the same transaction.
* A change that moves the script's (rounded) subject total across the pass mark
  waits (``pending_authority``) for an authority officer other than the requester
  (CHECK approved_by <> requested_by) before it takes effect.
* Applying re-checks that the score is still what the request saw (no lost update).
"""
from __future__ import annotations

import datetime as dt
from fractions import Fraction

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import backup, events, ledger, totals
from .access import APPROVER_ROLES, CHANGE_ROLES, NotAllowed, active_user, require_leader_or_role, require_role
from .adjudication import final_of, lock_response, record_resolution
from .centre_time import now_or
from .models import Item, Response, Script, ScoreChange, Subject, User
from .scores import ScoreError, from_cp, parse_points


class StaleChange(ValueError):
    """The score changed since the request was made; request again."""


def _check_actor(session: Session, user: User, item_id: int) -> None:
    if not user.role_names.intersection(CHANGE_ROLES):
        raise NotAllowed(f"{user.username} may not change scores (designated roles: {', '.join(CHANGE_ROLES)})")
    require_leader_or_role(session, user, item_id, "authority_officer", "admin")


def change_in_session(session: Session, actor: User, response: Response, new_score, reason_code: str,
                      *, note: str = "", now: dt.datetime) -> ScoreChange:
    """Request (and, unless it crosses the pass mark, apply) a change; response already locked."""
    if reason_code not in ledger.REASON_CODES:
        raise ValueError(f"unknown reason code {reason_code!r}; use one of {', '.join(sorted(ledger.REASON_CODES))}")
    _check_actor(session, actor, response.item_id)
    if response.status != "resolved":
        raise ValueError("only a final score can be changed; unresolved responses follow the policy")
    item = session.get(Item, response.item_id)
    after = parse_points(new_score) if not isinstance(new_score, Fraction) else new_score
    if after < 0 or after > from_cp(item.max_cp):
        raise ScoreError(f"{after} is outside 0–{from_cp(item.max_cp)}")
    before = final_of(response)
    if after == before:
        raise ValueError("the new score equals the recorded one")
    script = session.get(Script, response.script_id)
    subject = session.get(Subject, script.subject_id)
    now_total = totals.compute(session, script, subject)
    new_total = totals.compute(session, script, subject, override={response.id: after})
    crosses = totals.crosses_pass_mark(subject, now_total.rounded, new_total.rounded)
    change = ScoreChange(script_id=script.id, response_id=response.id, item_id=item.id,
                         before_num=before.numerator, before_den=before.denominator,
                         after_num=after.numerator, after_den=after.denominator, reason_code=reason_code,
                         note=note[:400], crosses_pass_mark=crosses,
                         status="pending_authority" if crosses else "applied", requested_by=actor.id,
                         requested_at=now)
    session.add(change)
    session.flush()
    data = {"change_id": change.id, "item_id": item.id, "script_id": script.id,
            "before": ledger.score_text(before), "after": ledger.score_text(after),
            "total_before": str(now_total.rounded) if now_total.rounded is not None else None,
            "total_after": str(new_total.rounded) if new_total.rounded is not None else None,
            "crosses_pass_mark": crosses, "note": note[:400]}
    ledger.append(session, actor_id=actor.id, action="score_change.requested", entity="response",
                  entity_id=response.id, data=data, reason=reason_code, at=now)
    if crosses:
        events.publish(session, "authority", "score_change.pending", {"change_id": change.id})
    else:
        _apply(session, change, response, actor.id, now=now, reason=reason_code)
    return change


def _apply(session: Session, change: ScoreChange, response: Response, actor_id: int, *,
           now: dt.datetime, reason: str) -> None:
    before = Fraction(change.before_num, change.before_den)
    if final_of(response) != before:
        raise StaleChange(f"score change {change.id}: the score is no longer {before}; request again")
    after = Fraction(change.after_num, change.after_den)
    outcome = "review_changed" if change.reason_code == "review_decision" else "changed"
    record_resolution(session, response, final=after, outcome=outcome, policy=None,
                      inputs={"score_change": change.id, "reason_code": change.reason_code,
                              "requested_by": change.requested_by, "approved_by": change.approved_by},
                      decided_by=actor_id, now=now, reason=reason, action="score_change.applied",
                      extra_data={"change_id": change.id, "reason_code": change.reason_code})
    change.status, change.decided_at = "applied", now
    totals.recompute_script(session, response.script_id, now=now, actor_id=actor_id, reason=reason)
    events.publish(session, events.item_topic(response.item_id), "score.changed", {"item_id": response.item_id})


def request_change(db, actor_id: int, response_id: int, new_score, reason_code: str, *, note: str = "",
                   now: dt.datetime | None = None) -> ScoreChange:
    """Change a response's final score (applied now, or pending the authority's approval)."""
    now = now_or(now)

    def fn(session: Session) -> ScoreChange:
        actor = active_user(session, actor_id)
        response = lock_response(session, response_id)
        return change_in_session(session, actor, response, new_score, reason_code, note=note, now=now)

    return db.run(fn, retry_integrity=False)


def decide_change(db, approver_id: int, change_id: int, approve: bool, *, note: str = "",
                  now: dt.datetime | None = None) -> ScoreChange:
    """R-QC-3: an authority officer (not the requester) approves or rejects a pending change."""
    now = now_or(now)

    def fn(session: Session) -> ScoreChange:
        approver = active_user(session, approver_id)
        require_role(approver, *APPROVER_ROLES)
        change = session.get(ScoreChange, change_id)
        if change is None:
            raise LookupError(f"no score change {change_id}")
        response = lock_response(session, change.response_id)
        change = session.execute(select(ScoreChange).where(ScoreChange.id == change_id).with_for_update()
                                 .execution_options(populate_existing=True)).scalar_one()
        if change.status != "pending_authority":
            raise ValueError(f"score change {change_id} is {change.status}, not pending")
        if change.requested_by == approver.id:
            raise NotAllowed("the requester cannot approve their own change (R-QC-3: two people)")
        change.approved_by = approver.id
        ledger.append(session, actor_id=approver.id, action="score_change.decided", entity="response",
                      entity_id=response.id, reason="authority_approval",
                      data={"change_id": change.id, "approved": bool(approve), "note": note[:400]}, at=now)
        if approve:
            _apply(session, change, response, approver.id, now=now, reason="authority_approval")
        else:
            change.status, change.decided_at = "rejected", now
        events.publish(session, "authority", "score_change.decided", {"change_id": change.id})
        return change

    with backup.change_window("score-change"):   # R-DATA-2: backups around a score change, if configured
        return db.run(fn, retry_integrity=False)


def pending_changes(db, user_id: int) -> list[ScoreChange]:
    with db.read() as session:
        require_role(active_user(session, user_id), *APPROVER_ROLES, "admin")
        return list(session.execute(select(ScoreChange).where(ScoreChange.status == "pending_authority")
                                    .order_by(ScoreChange.id)).scalars())
