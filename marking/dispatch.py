"""Dispatch: claim the next response under a fenced lease; renew, release, recycle.

Design (architecture.md §3, R-MARK-3, R-ROLE-1, R-ROLE-4, R-SEC-1):

* Work is ``mark_task`` rows: ``first`` and ``second`` are created with the response
  (``first`` only for single-marked items); ``third``, ``arbitration``, ``extra`` and
  ``review`` are created by the decision that needs them.
* A claim picks, per slot, the lowest open task of the item by the index
  ``(item_id, status, slot, id)`` with ``LIMIT 1`` (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL; SQLite is serialised by ``BEGIN IMMEDIATE``). Slots are tried one at a
  time (third, second, first) so each probe is an ordered index range scan, never a
  sort of the item's tasks: the cost does not grow with the number of responses.
  The rows skipped are only those this marker may not take (already read by them,
  excluded), which other markers take quickly.
* The claim inserts a ``mark_assignment`` row, UNIQUE(response_id, marker_id), in the
  same transaction: a marker is never dealt the same response twice, even after their
  lease expired, and third readers, arbitrators, extra readers and reviewers are
  always distinct from earlier readers. A race (the same marker claiming in two
  tabs) fails the constraint and ``db.run`` retries.
* Leases carry a uuid4 token (the fencing token) and an expiry; abandoned leases go
  back to the pool in the claim itself (expired leases of the item are reopened
  first) and through :func:`reap_expired_leases`. A reopened task's token is cleared,
  so the old holder's submit is refused.
* What the marker receives (:class:`TaskView`) has the item, its marking scheme and
  an image reference only: no candidate identity, no other marker's score (R-SEC-1),
  except where the policy says the reader sees earlier marks (arbitration).
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import events
from .access import LeaseError, NotAllowed, active_user, has_duty
from .centre_time import centre_day, now_or
from .eligibility import excluded_clause, exclusions_for, qualification_problem
from .models import Item, Mark, MarkingScheme, MarkTask, Response
from .models.work import MarkAssignment
from .policy import policy_for_item
from .scores import format_points, from_cp

DEFAULT_LEASE_SECONDS = 600
# Essays: 650 per marker per day (qingdaonews 2012); Item.daily_cap overrides.
DEFAULT_DAILY_CAP = 650

# queue -> (slots in claim order, duties that may work it)
QUEUES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "marking": (("third", "second", "first"), ("marker",)),
    "arbitration": (("arbitration",), ("team_leader",)),
    "extra": (("extra",), ("team_leader", "reviewer")),
    "review": (("review",), ("reviewer", "team_leader")),
}
MARKING_SLOTS = ("first", "second", "third")
# Calibration (issue 7) registers ``fn(session, user, item, now) -> MarkTask | None``: an
# open seed or self-check task reserved for the user, dealt in the marking queue before
# live work and leased and shown exactly like it (R-SEC-1, ★ seed hygiene).
INJECTORS: list = []
INJECTED_SLOTS = ("seed", "self_check")


class CapReached(NotAllowed):
    """The marker has been dealt the item's daily cap today."""


@dataclass(frozen=True)
class TaskView:
    """Everything a reader is given for one task (R-SEC-1: nothing identifying)."""

    token: str
    lease_expires_at: dt.datetime
    queue: str
    item_id: int
    item_code: str
    item_title: str
    max_points: str
    step_points: str
    image_ref: str | None
    scheme_version: int | None
    scheme_text: str | None
    condition_codes: tuple[str, ...] = ("NR", "OT", "IL", "RF")
    earlier_marks: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lease_expires_at"] = self.lease_expires_at.isoformat()
        data["earlier_marks"] = [dict(m) for m in self.earlier_marks]
        data["condition_codes"] = list(self.condition_codes)
        return data


# --------------------------------------------------------------------------- task creation

def open_tasks_for_response(session: Session, response: Response, item: Item) -> list[MarkTask]:
    """Create the initial tasks of a new response (call in the ingest transaction)."""
    slots = ("first", "second") if item.double_marked else ("first",)
    tasks = [MarkTask(response_id=response.id, item_id=item.id, slot=s, status="open") for s in slots]
    session.add_all(tasks)
    return tasks


def ensure_task(session: Session, response: Response, slot: str, *, reserved_for: int | None = None) -> MarkTask:
    """The live task of ``slot`` for the response, created if missing (response locked by caller)."""
    existing = session.execute(
        select(MarkTask).where(MarkTask.response_id == response.id, MarkTask.slot == slot,
                               MarkTask.status != "cancelled")
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    task = MarkTask(response_id=response.id, item_id=response.item_id, slot=slot, status="open",
                    reserved_for=reserved_for)
    session.add(task)
    session.flush()  # uq_mark_task_live_slot backs "exactly one" under any race
    return task


def cancel_open_tasks(session: Session, response_id: int, slots: tuple[str, ...]) -> int:
    result = session.execute(
        update(MarkTask).where(MarkTask.response_id == response_id, MarkTask.slot.in_(slots),
                               MarkTask.status.in_(("open", "leased")))
        .values(status="cancelled", leased_until=None).execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


# --------------------------------------------------------------------------- leases

def _reopen_expired(session: Session, item_id: int, now: dt.datetime) -> int:
    t = MarkTask.__table__
    pick = select(t.c.id).where(t.c.item_id == item_id, t.c.status == "leased", t.c.leased_until < now)
    if session.get_bind().dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    ids = session.execute(pick).scalars().all()
    if not ids:
        return 0
    session.execute(
        update(t).where(t.c.id.in_(ids), t.c.status == "leased", t.c.leased_until < now)
        .values(status="open", marker_id=None, lease_token=None, leased_until=None, claimed_at=None)
    )
    events.publish(session, events.item_topic(item_id), "lease.expired", {"item_id": item_id, "count": len(ids)})
    return len(ids)


def reap_expired_leases(db, *, now: dt.datetime | None = None) -> int:
    """Return every abandoned lease to the pool (periodic job; claims also do it per item)."""
    now = now_or(now)

    def fn(session: Session) -> int:
        item_ids = session.execute(select(Item.id).where(Item.kind == "subjective")).scalars().all()
        return sum(_reopen_expired(session, item_id, now) for item_id in item_ids)

    return db.run(fn)


def _lease_seconds(lease_seconds: int | None) -> dt.timedelta:
    return dt.timedelta(seconds=lease_seconds or DEFAULT_LEASE_SECONDS)


def _pick(session: Session, item_id: int, slot: str, user_id: int, exclusions) -> int | None:
    t = MarkTask.__table__
    read_before = (select(MarkAssignment.id)
                   .where(MarkAssignment.response_id == t.c.response_id,
                          MarkAssignment.marker_id == user_id).exists())
    query = (select(t.c.id)
             .where(t.c.item_id == item_id, t.c.status == "open", t.c.slot == slot,
                    (t.c.reserved_for.is_(None)) | (t.c.reserved_for == user_id),
                    ~read_before)
             .order_by(t.c.id).limit(1))
    if not exclusions.empty:
        query = query.where(~excluded_clause(exclusions, t.c.response_id))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=t)
    return session.execute(query).scalar_one_or_none()


def dealt_today(session: Session, user_id: int, item_id: int, day: dt.date) -> int:
    return session.execute(
        select(func.count()).select_from(MarkAssignment)
        .where(MarkAssignment.marker_id == user_id, MarkAssignment.item_id == item_id,
               MarkAssignment.day == day, MarkAssignment.slot.in_(MARKING_SLOTS))
    ).scalar_one()


def _view(session: Session, task: MarkTask, item: Item, queue: str) -> TaskView:
    response = session.get(Response, task.response_id)
    scheme = session.execute(
        select(MarkingScheme).where(MarkingScheme.item_id == item.id, MarkingScheme.status == "frozen")
        .order_by(MarkingScheme.version.desc()).limit(1)
    ).scalar_one_or_none()
    earlier: tuple[dict[str, Any], ...] = ()
    _row, params = policy_for_item(session, item)
    if (task.slot == "arbitration" and params["arbiter_sees_marks"]) or \
            (task.slot == "third" and params["third_sees_marks"]):
        marks = session.execute(
            select(Mark.kind, Mark.score_cp, Mark.condition_code)
            .join(MarkTask, MarkTask.id == Mark.task_id)
            .where(Mark.response_id == task.response_id,
                   Mark.kind.in_(("first", "second", "third", "extra")),
                   MarkTask.status != "cancelled")  # a re-queued (superseded) mark is not shown
            .order_by(Mark.id)
        ).all()
        # The kind and score only: never who marked (R-SEC-1 keeps readers anonymous too).
        earlier = tuple({"kind": k, "score": format_points(from_cp(cp)), "condition_code": code}
                        for k, cp, code in marks)
    return TaskView(
        token=task.lease_token, lease_expires_at=task.leased_until, queue=queue,
        item_id=item.id, item_code=item.code, item_title=item.title,
        max_points=format_points(from_cp(item.max_cp)), step_points=format_points(from_cp(item.step_cp)),
        image_ref=response.image_sha256, scheme_version=scheme.version if scheme else None,
        scheme_text=scheme.text if scheme else None, earlier_marks=earlier,
    )


def claim_next(db, user_id: int, item_id: int, *, queue: str = "marking",
               now: dt.datetime | None = None, lease_seconds: int | None = None) -> TaskView | None:
    """Deal the next response of ``item_id`` in ``queue`` to ``user_id`` under a lease.

    Returns None when there is nothing this user may take. A user who already holds
    an unexpired lease in this queue gets that task again (a reload never leaks
    leases). Raises NotAllowed (no duty, unqualified) or CapReached.
    """
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; use one of {', '.join(QUEUES)}")
    slots, duties = QUEUES[queue]
    now = now_or(now)

    def fn(session: Session) -> TaskView | None:
        user = active_user(session, user_id)
        item = session.get(Item, item_id)
        if item is None or item.kind != "subjective":
            raise NotAllowed(f"item {item_id} is not a subjective item")
        if not has_duty(session, user.id, item.id, *duties):
            raise NotAllowed(f"{user.username} has no active {'/'.join(duties)} duty on item {item.code}")
        problem = qualification_problem(session, user, item)
        if problem:
            raise NotAllowed(problem)
        held = session.execute(
            select(MarkTask).where(MarkTask.item_id == item.id, MarkTask.status == "leased",
                                   MarkTask.slot.in_(slots + INJECTED_SLOTS if queue == "marking" else slots),
                                   MarkTask.marker_id == user.id,
                                   MarkTask.leased_until >= now).order_by(MarkTask.id).limit(1)
        ).scalar_one_or_none()
        if held is not None:
            return _view(session, held, item, queue)
        day = centre_day(now)
        if queue == "marking":
            cap = item.daily_cap or DEFAULT_DAILY_CAP
            if dealt_today(session, user.id, item.id, day) >= cap:
                raise CapReached(f"{user.username} has reached today's cap of {cap} on item {item.code}")
        _reopen_expired(session, item.id, now)
        injected = [(None, inject) for inject in INJECTORS] if queue == "marking" else []
        exclusions = exclusions_for(session, user)
        for slot, inject in injected + [(slot, None) for slot in slots]:
            if inject is not None:
                task = inject(session, user, item, now)
                if task is None:
                    continue
                slot = task.slot
            else:
                task_id = _pick(session, item.id, slot, user.id, exclusions)
                if task_id is None:
                    continue
                task = session.get(MarkTask, task_id)
            task.status = "leased"
            task.marker_id = user.id
            task.lease_token = str(uuid.uuid4())
            task.leased_until = now + _lease_seconds(lease_seconds)
            task.claimed_at = now
            if slot != "self_check":  # a self-check re-serves the marker's own response on purpose
                session.add(MarkAssignment(response_id=task.response_id, marker_id=user.id, item_id=item.id,
                                           task_id=task.id, slot=slot, day=day, claimed_at=now))
            session.flush()  # UNIQUE(response_id, marker_id) → IntegrityError → db.run retries
            events.publish(session, events.item_topic(item.id), "task.claimed",
                           {"item_id": item.id, "queue": queue})
            return _view(session, task, item, queue)
        return None

    return db.run(fn)


def _held_task(session: Session, user_id: int, token: str) -> MarkTask:
    task = session.execute(
        select(MarkTask).where(MarkTask.lease_token == token).with_for_update()
    ).scalar_one_or_none()
    if task is None or task.status != "leased":
        raise LeaseError("this task is no longer yours: the lease expired and was recycled, "
                         "or it was already submitted or cancelled")
    if task.marker_id != user_id:
        raise LeaseError("this task is leased to someone else")
    return task


def renew_lease(db, user_id: int, token: str, *, now: dt.datetime | None = None,
                lease_seconds: int | None = None) -> dt.datetime:
    """Heartbeat: extend a lease still held (an expired one not yet recycled is still held)."""
    now = now_or(now)

    def fn(session: Session) -> dt.datetime:
        active_user(session, user_id)
        task = _held_task(session, user_id, token)
        task.leased_until = now + _lease_seconds(lease_seconds)
        return task.leased_until

    return db.run(fn)


def release_task(db, user_id: int, token: str, *, now: dt.datetime | None = None) -> None:
    """Hand a task back unmarked. The assignment stays: the response is not dealt to them again."""

    def fn(session: Session) -> None:
        active_user(session, user_id)
        task = _held_task(session, user_id, token)
        task.status, task.marker_id, task.lease_token = "open", None, None
        task.leased_until = task.claimed_at = None
        events.publish(session, events.item_topic(task.item_id), "task.released", {"item_id": task.item_id})

    db.run(fn)


def queue_counts(db, item_id: int) -> dict[str, Any]:
    """Open/leased tasks per slot and responses per status (for dashboards)."""
    with db.read() as session:
        tasks = session.execute(
            select(MarkTask.slot, MarkTask.status, func.count())
            .where(MarkTask.item_id == item_id, MarkTask.status.in_(("open", "leased")))
            .group_by(MarkTask.slot, MarkTask.status)
        ).all()
        responses = session.execute(
            select(Response.status, func.count()).where(Response.item_id == item_id)
            .group_by(Response.status)
        ).all()
    return {"tasks": {f"{slot}:{status}": n for slot, status, n in tasks},
            "responses": {status: n for status, n in responses}}
