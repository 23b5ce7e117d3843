"""Score review requests (复核, R-PROC-4): missed marking and totalling errors only.

A request is recorded by the authority; the check looks for subjective items with no
final score (missed marking) and for a recorded total that does not recompute
(totalling error, corrected by recomputation with reason ``totalling_error``). The
strictness of marking is not re-judged. The outcome is stored and written to the
ledger (reason ``review_request``).
"""
from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import ledger, totals
from .access import active_user, require_role
from .centre_time import now_or
from .models import ReviewRequest, Script, Subject

RECORD_ROLES = ("authority_officer", "admin")
HANDLE_ROLES = ("authority_officer", "team_leader", "admin")


def record_request(db, actor_id: int, script_id: int, *, note: str = "", now: dt.datetime | None = None) -> int:
    now = now_or(now)

    def fn(session: Session) -> int:
        actor = active_user(session, actor_id)
        require_role(actor, *RECORD_ROLES)
        if session.get(Script, script_id) is None:
            raise LookupError(f"no script {script_id}")
        row = ReviewRequest(script_id=script_id, status="open", recorded_by=actor.id, requested_at=now)
        session.add(row)
        session.flush()
        ledger.append(session, actor_id=actor.id, action="review_request.recorded", entity="script",
                      entity_id=script_id, data={"request_id": row.id, "note": note[:400]},
                      reason="review_request", at=now)
        return row.id

    return db.run(fn, retry_integrity=False)


def check_request(db, actor_id: int, request_id: int, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Run the 复核 check, correct a totalling error, close the request; returns the outcome."""
    now = now_or(now)

    def fn(session: Session) -> dict[str, Any]:
        actor = active_user(session, actor_id)
        require_role(actor, *HANDLE_ROLES)
        request = session.execute(select(ReviewRequest).where(ReviewRequest.id == request_id).with_for_update()
                                  .execution_options(populate_existing=True)).scalar_one()
        if request.status != "open":
            raise ValueError(f"review request {request_id} is already closed")
        script = session.get(Script, request.script_id)
        subject = session.get(Subject, script.subject_id)
        result = totals.compute(session, script, subject)
        recorded = Fraction(script.total_num, script.total_den) if script.total_num is not None else None
        outcome: dict[str, Any] = {
            "scope": "missed marking and totalling only (R-PROC-4)",
            "missed": list(result.missing),
            "recorded_total": script.total_rounded,
            "recomputed_total": None if result.rounded is None else str(result.rounded),
            "totalling_error": bool(result.complete and (recorded != result.exact
                                                         or script.total_rounded != str(result.rounded))),
            "corrected": False,
        }
        if outcome["totalling_error"]:
            totals.recompute_script(session, script.id, now=now, actor_id=actor.id, reason="totalling_error")
            outcome["corrected"] = True
        request.status, request.handled_by, request.closed_at = "closed", actor.id, now
        request.outcome = json.dumps(outcome, sort_keys=True, ensure_ascii=False)
        ledger.append(session, actor_id=actor.id, action="review_request.closed", entity="script",
                      entity_id=script.id, data={"request_id": request.id, **outcome},
                      reason="review_request", at=now)
        return outcome

    return db.run(fn, retry_integrity=False)
