"""Helpers shared by the calibration services."""
from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from marking import dispatch
from marking.access import NotAllowed, active_user, require_leader_or_role
from marking.centre_time import centre_day
from marking.models import Item, Mark, MarkTask, Qualification
from marking.models.work import MarkAssignment

LIVE_MARK_KINDS = ("first", "second", "third")


def subjective_item(session: Session, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None or item.kind != "subjective":
        raise LookupError(f"no subjective item {item_id}")
    return item


def leader(session: Session, user_id: int, item_id: int):
    """The acting user, who must be the item's team leader (R-ROLE-2) or an admin."""
    user = active_user(session, user_id)
    require_leader_or_role(session, user, item_id, "admin")
    return user


def seen(session: Session, user_id: int, response_id: int) -> bool:
    """The user was dealt or marked the response (never again, except self-checks)."""
    if session.execute(select(MarkAssignment.id).where(MarkAssignment.response_id == response_id,
                                                       MarkAssignment.marker_id == user_id).limit(1)).first():
        return True
    return session.execute(select(Mark.id).where(Mark.response_id == response_id,
                                                 Mark.marker_id == user_id).limit(1)).first() is not None


def lease(session: Session, task: MarkTask, user_id: int, item: Item, queue: str, now: dt.datetime,
          lease_seconds: int | None = None) -> dispatch.TaskView:
    """Lease a calibration task exactly as dispatch leases live work; the view has the same shape."""
    task.status = "leased"
    task.marker_id = user_id
    task.lease_token = str(uuid.uuid4())
    task.leased_until = now + dt.timedelta(seconds=lease_seconds or dispatch.DEFAULT_LEASE_SECONDS)
    task.claimed_at = now
    if task.slot != "self_check" and not session.execute(
            select(MarkAssignment.id).where(MarkAssignment.response_id == task.response_id,
                                            MarkAssignment.marker_id == user_id)).first():
        session.add(MarkAssignment(response_id=task.response_id, marker_id=user_id, item_id=item.id,
                                   task_id=task.id, slot=task.slot, day=centre_day(now), claimed_at=now))
    session.flush()
    return dispatch._view(session, task, item, queue)


def monitoring_start(session: Session, user_id: int, item_id: int) -> dt.datetime | None:
    """When the marker's current licence began: their latest passed qualification."""
    return session.execute(
        select(Qualification.decided_at).where(Qualification.user_id == user_id, Qualification.item_id == item_id,
                                               Qualification.status == "passed")
        .order_by(Qualification.attempt.desc()).limit(1)
    ).scalar_one_or_none()


def require(condition: bool, message: str) -> None:
    if not condition:
        raise NotAllowed(message)
