"""Dispatch: claim the next response under a fenced lease; renew, release, recycle.

Design (architecture.md §3, R-MARK-3, R-ROLE-1, R-ROLE-4, R-SEC-1):

* Work is ``mark_task`` rows: ``first`` and ``second`` are created with the response
  (``first`` only for single-marked items); ``third``, ``arbitration``, ``extra`` and
  ``review`` are created by the decision that needs them.
* A claim picks, per slot, the lowest open task of the item by the index
  ``(item_id, status, slot, id)`` with ``LIMIT 1`` (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL; SQLite is serialised by ``BEGIN IMMEDIATE``). Each probe is an ordered
  index range scan, never a sort of the item's tasks: the cost does not grow with the
  number of responses. Third reads go first (a response waits on them); between the
  first and second reads the lower task id wins, so both reads of a response are
  dealt close together and responses resolve in a steady stream rather than all at
  the end of the item.
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
* A claim is a handful of statements whatever the item's size (issue 8's load target):
  one facts statement (user, item, duty, qualification, held lease, today's count,
  exclusions, whether a lease of the item has expired, and every registered
  ``eligibility.FactCheck`` such as the R-MARK-9 scheme gate), the expiry sweep only
  when that says a lease expired, one UPDATE … RETURNING that picks and leases the
  task (all slot probes in one statement), the assignment, and one read for the view;
  the outbox event is inserted at commit with the transaction's other events.
* What the marker receives (:class:`TaskView`) has the item, its marking scheme and
  an image reference only: no candidate identity, no other marker's score (R-SEC-1),
  except where the policy says the reader sees earlier marks (arbitration).
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from sqlalchemy import and_, bindparam, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from . import events
from .access import LeaseError, NotAllowed, active_user
from .centre_time import centre_day, now_or
from .eligibility import (FACT_CHECKS, NO_EXCLUSIONS, Exclusions, FactCheck, excluded_clause, exclusions_for,
                          qualification_problem)
from .fastsql import EntityColumns, FastStatement, first, run_in
from .models import Exclusion, Item, ItemDuty, Mark, MarkingScheme, MarkTask, Qualification, Response, User
from .models.work import MarkAssignment, MarkerItemTally
from .policy import policy_for_item
from .scores import format_points, from_cp
from .statements import constant, one_of, written_limit

DEFAULT_LEASE_SECONDS = 600
# Essays: 650 per marker per day (qingdaonews 2012); Item.daily_cap overrides.
DEFAULT_DAILY_CAP = 650

# queue -> (slots, duties that may work it); see _lease_next for the order
QUEUES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "marking": (("third", "first", "second"), ("marker",)),
    "arbitration": (("arbitration",), ("team_leader",)),
    "extra": (("extra",), ("team_leader", "reviewer")),
    "review": (("review",), ("reviewer", "team_leader")),
}
MARKING_SLOTS = ("first", "second", "third")


@dataclass(frozen=True)
class Injector:
    """Calibration work (issue 7) dealt in the marking queue before live work and leased
    and shown exactly like it (R-SEC-1, ★ seed hygiene): seeds and self-checks.

    ``facts()`` returns labelled scalar SQL expressions over the bind parameters
    ``user_id``, ``item_id`` and ``day`` (the centre day, a date); the claim
    reads them in its one facts statement, so deciding "nothing due" costs no round trip
    of its own (issue 8). ``inject(session, user, item, now, facts)`` gets them as a
    mapping by label and returns an open task reserved for the user, or None.
    """

    name: str
    facts: Callable[[], list]
    inject: Callable[..., "MarkTask | None"]


INJECTORS: list[Injector] = []
INJECTED_SLOTS = ("seed", "self_check")
_ASSIGNMENT_INSERT = insert(MarkAssignment.__table__)
_HELD_AGAIN = (select(MarkTask).where(MarkTask.id == bindparam("task_id"), MarkTask.status == "leased",
                                      MarkTask.marker_id == bindparam("user_id"),
                                      MarkTask.leased_until >= bindparam("now", type_=MarkTask.leased_until.type))
               .execution_options(populate_existing=True))


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
        data = {f.name: getattr(self, f.name) for f in fields(self)}   # (asdict deep-copies every value)
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
    t = MarkTask.__table__
    statement = _cached(("cancel", slots), lambda: (
        update(t).where(t.c.response_id == bindparam("for_response"), one_of(t.c.slot, slots),
                        one_of(t.c.status, ("open", "leased")))
        .values(status="cancelled", leased_until=None)))
    result = session.connection().execute(statement, {"for_response": response_id})
    return result.rowcount or 0


# --------------------------------------------------------------------------- leases

def _reopen_expired(session: Session, item_id: int, now: dt.datetime) -> int:
    t = MarkTask.__table__
    dialect = session.get_bind().dialect.name
    conn = session.connection()
    ids = conn.execute(_cached(("expired", dialect), lambda: _expired_statement(dialect)),
                       {"item_id": item_id, "now": now}).scalars().all()
    if not ids:
        return 0
    expired = and_(t.c.item_id == item_id, t.c.status == "leased", t.c.leased_until < now)
    conn.execute(
        update(t).where(t.c.id.in_(ids), expired)
        .values(status="open", marker_id=None, lease_token=None, leased_until=None, claimed_at=None)
    )
    events.publish(session, events.item_topic(item_id), "lease.expired", {"item_id": item_id, "count": len(ids)})
    return len(ids)


def _expired_statement(dialect: str):
    t = MarkTask.__table__
    pick = select(t.c.id).where(   # ix_mark_task_lease_expiry: only the expired rows
        t.c.item_id == bindparam("item_id"), t.c.status == "leased",
        t.c.leased_until < bindparam("now", type_=t.c.leased_until.type))
    return pick.with_for_update(skip_locked=True) if dialect == "postgresql" else pick


def reap_expired_leases(db, *, now: dt.datetime | None = None) -> int:
    """Return every abandoned lease to the pool (periodic job; claims also do it per item)."""
    now = now_or(now)

    def fn(session: Session) -> int:
        item_ids = session.execute(select(Item.id).where(Item.kind == "subjective")).scalars().all()
        return sum(_reopen_expired(session, item_id, now) for item_id in item_ids)

    return db.run(fn)


def _lease_seconds(lease_seconds: int | None) -> dt.timedelta:
    return dt.timedelta(seconds=lease_seconds or DEFAULT_LEASE_SECONDS)


def _next_open(dialect: str, slot: str, exclusions: Exclusions):
    """The lowest open task of one slot the user may take (scalar subquery, locked on PG).

    Parameters: ``pick_item``, ``pick_user`` (not column names: an UPDATE reserves those).
    """
    t = MarkTask.__table__
    a = MarkAssignment.__table__
    user_id = bindparam("pick_user")
    read_before = exists().where(a.c.response_id == t.c.response_id, a.c.marker_id == user_id)
    if dialect == "postgresql":
        # ``status BETWEEN 'open' AND 'open'`` ordered by (status, id), not ``status = 'open'``
        # ordered by id: with the equality, PostgreSQL may walk the primary key in id order
        # and filter — estimating the first open task a few rows away when every done task
        # of the item lies below it (the cost grows with every mark made). The range keeps
        # ``status`` in the sort key, which only ix_mark_task_dispatch (item, status, slot,
        # id) provides. SQLite would sort on the range instead, so it gets the equality
        # (its planner takes the dispatch index for it).
        # The constants and the LIMIT are written into the SQL text (marking.statements):
        # bound, the generic plan costs them blind, looks dearer than a custom plan on a
        # large item, and PostgreSQL re-plans the deal on every claim.
        open_ = constant(t.c.status, "open")
        status, order = t.c.status.between(open_, open_), (t.c.status, t.c.id)
    else:
        status, order = t.c.status == "open", (t.c.id,)
    query = (select(t.c.id)
             .where(t.c.item_id == bindparam("pick_item"), status, t.c.slot == constant(t.c.slot, slot),
                    or_(t.c.reserved_for.is_(None), t.c.reserved_for == user_id),
                    ~read_before)
             .order_by(*order).limit(written_limit(1)))
    if not exclusions.empty:
        query = query.where(~excluded_clause(exclusions, t.c.response_id))
    if dialect == "postgresql":
        query = query.with_for_update(skip_locked=True, of=t)
    return query.scalar_subquery()


def _lease_statement(dialect: str, slots: tuple[str, ...], exclusions: Exclusions):
    """UPDATE … RETURNING that picks and leases the next task (see :func:`_lease_next`)."""
    t = MarkTask.__table__
    probes = {slot: _next_open(dialect, slot, exclusions) for slot in slots}
    if set(slots) >= {"first", "second"}:
        # Each probe evaluated once (a CTE), whichever branch of the CASE uses it.
        pair = select(probes.pop("first").label("a"), probes.pop("second").label("b")).cte("pair")
        earliest = select(case((or_(pair.c.b.is_(None), pair.c.a < pair.c.b), func.coalesce(pair.c.a, pair.c.b)),
                               else_=pair.c.b)).scalar_subquery()
        ordered = [probes[slot] for slot in slots if slot in probes] + [earliest]
    else:
        ordered = [probes[slot] for slot in slots]
    target = ordered[0] if len(ordered) == 1 else func.coalesce(*ordered)
    return (update(t).where(t.c.id == target, t.c.status == "open")
            .values(status="leased", marker_id=bindparam("pick_user"), lease_token=bindparam("token"),
                    leased_until=bindparam("until"), claimed_at=bindparam("now"))
            .returning(t.c.id, t.c.response_id, t.c.slot))


def _lease_next(session: Session, item_id: int, slots: tuple[str, ...], user_id: int,
                exclusions: Exclusions, token: str, until: dt.datetime, now: dt.datetime):
    """Pick and lease the next task in one statement (the slot probes are scalar subqueries).

    Order: a third read before anything else; then the lower task id of the first and
    second probes (tasks are created in pairs per response, so this deals a response's
    two reads together). Other queues have one slot.
    """
    dialect = session.get_bind().dialect.name
    if exclusions.empty:   # the common case: one statement object per dialect and queue
        statement = _cached(("lease", dialect, slots), lambda: _lease_statement(dialect, slots, exclusions))
    else:
        statement = _lease_statement(dialect, slots, exclusions)
    return session.connection().execute(statement, {"pick_item": item_id, "pick_user": user_id, "token": token,
                                                    "until": until, "now": now}).first()


# Hot-path statements are built once and reused: building a SQLAlchemy statement costs
# as much CPU as executing it (issue 8's load benchmark, docs/benchmarks.md).
_STATEMENTS: dict[tuple, Any] = {}


def _cached(key: tuple, build):
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = build()
    return statement


def dealt_on_day(tally, day):
    """First, second and third reads dealt on ``day``, from the marker's tally
    (``marker_item_tally``; its count is of the latest day anything was dealt)."""
    return case((tally.c.day == day, tally.c.live_on_day), else_=0)


def dealt_today(session: Session, user_id: int, item_id: int, day: dt.date) -> int:
    k = MarkerItemTally.__table__
    return session.execute(
        select(dealt_on_day(k, day)).where(k.c.marker_id == user_id, k.c.item_id == item_id)
    ).scalar_one_or_none() or 0


def _view(session: Session, task: MarkTask, item: Item, queue: str) -> TaskView:
    return _view_of(session, item, queue, token=task.lease_token, until=task.leased_until,
                    slot=task.slot, response_id=task.response_id)


def _view_of(session: Session, item: Item, queue: str, *, token: str, until: dt.datetime, slot: str,
             response_id: int, shown: tuple | None = None) -> TaskView:
    """``shown``: (image, scheme version, scheme text) when the claim already read them."""
    image_ref, scheme_version, scheme_text = shown or session.connection().execute(
        _cached(("view",), _view_statement), {"item_id": item.id, "response_id": response_id}).one()
    earlier: tuple[dict[str, Any], ...] = ()
    if slot in ("arbitration", "third"):
        _row, params = policy_for_item(session, item)
        if (slot == "arbitration" and params["arbiter_sees_marks"]) or \
                (slot == "third" and params["third_sees_marks"]):
            earlier = _earlier_marks(session, response_id)
    return TaskView(
        token=token, lease_expires_at=until, queue=queue,
        item_id=item.id, item_code=item.code, item_title=item.title,
        max_points=format_points(from_cp(item.max_cp)), step_points=format_points(from_cp(item.step_cp)),
        image_ref=image_ref, scheme_version=scheme_version, scheme_text=scheme_text, earlier_marks=earlier,
    )


def _view_statement():
    """The response's image and the item's latest frozen scheme, in one read."""
    return (select(Response.image_sha256, MarkingScheme.version, MarkingScheme.text)
            .select_from(Response)
            .outerjoin(MarkingScheme, MarkingScheme.id == _latest_scheme(bindparam("item_id")))
            .where(Response.id == bindparam("response_id")))


def _latest_scheme(item_id):
    return (select(MarkingScheme.id)
            .where(MarkingScheme.item_id == item_id, MarkingScheme.status == "frozen")
            .order_by(MarkingScheme.version.desc()).limit(1).scalar_subquery())


def _deal_statement(slots: tuple[str, ...]):
    """PostgreSQL: pick and lease the next task, record the assignment and read what the
    marker is shown, in one statement (three round trips otherwise; issue 8)::

        WITH picked AS (UPDATE mark_task … RETURNING id, response_id, slot),
             assigned AS (INSERT INTO mark_assignment … SELECT … FROM picked)
        SELECT picked.*, response.image_sha256, scheme.version, scheme.text FROM picked …

    No row when nothing is open. UNIQUE(response_id, marker_id) on the assignment still
    raises on a race (``db.run`` retries), as the separate INSERT did.
    """
    a = MarkAssignment.__table__
    picked = _lease_statement("postgresql", slots, NO_EXCLUSIONS).cte("picked")
    assigned = (insert(a).from_select(
        ["response_id", "marker_id", "item_id", "task_id", "slot", "day", "claimed_at"],
        select(picked.c.response_id, bindparam("pick_user", type_=a.c.marker_id.type),
               bindparam("pick_item", type_=a.c.item_id.type), picked.c.id, picked.c.slot,
               bindparam("day", type_=a.c.day.type), bindparam("now", type_=a.c.claimed_at.type))
        .where(picked.c.slot != "self_check"))   # a self-check re-serves the marker's own response
        .returning(a.c.task_id).cte("assigned"))
    return (select(picked.c.id, picked.c.response_id, picked.c.slot,
                   Response.image_sha256, MarkingScheme.version, MarkingScheme.text)
            .select_from(picked)
            .join(Response, Response.id == picked.c.response_id)
            .outerjoin(MarkingScheme, MarkingScheme.id == _latest_scheme(bindparam("pick_item")))
            .add_cte(assigned))


def _earlier_marks(session: Session, response_id: int) -> tuple[dict[str, Any], ...]:
    marks = session.execute(
        select(Mark.kind, Mark.score_cp, Mark.condition_code)
        .join(MarkTask, MarkTask.id == Mark.task_id)
        .where(Mark.response_id == response_id,
               Mark.kind.in_(("first", "second", "third", "extra")),
               MarkTask.status != "cancelled")  # a re-queued (superseded) mark is not shown
        .order_by(Mark.id)
    ).all()
    # The kind and score only: never who marked (R-SEC-1 keeps readers anonymous too).
    return tuple({"kind": k, "score": format_points(from_cp(cp)), "condition_code": code}
                 for k, cp, code in marks)


@dataclass(frozen=True)
class _Facts:
    user: User
    item: Item
    has_duty: bool
    latest_qualification: str | None
    requires_test: bool
    held_task_id: int | None
    dealt_today: int
    has_exclusions: bool
    has_expired_leases: bool
    check_facts: dict[str, Any]
    row: Any   # the whole facts row by label (injectors read their own facts from it)


def _facts(session: Session, user_id: int, item_id: int, duties: tuple[str, ...], held_slots: tuple[str, ...],
           now: dt.datetime, day: dt.date) -> _Facts:
    """The user and item rows, duty, qualification, held lease, today's count, exclusions and
    whether any lease of the item has expired: one round trip for everything a claim checks."""
    checks, injectors = tuple(FACT_CHECKS), tuple(INJECTORS) if "seed" in held_slots else ()
    statement = _cached(("facts", duties, held_slots, checks, injectors),
                        lambda: FastStatement(_facts_statement(duties, held_slots, checks, injectors),
                                              autoflush=True))
    row = first(run_in(session, statement, {"user_id": user_id, "item_id": item_id, "now": now, "day": day}))
    if row is None or not _FACTS_USER.value(row, "active"):
        raise NotAllowed(f"user {user_id} does not exist or is disabled")
    if _FACTS_ITEM.value(row, "id") is None or _FACTS_ITEM.value(row, "kind") != "subjective":
        raise NotAllowed(f"item {item_id} is not a subjective item")
    facts = row._asdict()
    return _Facts(_FACTS_USER.load(session, row), _FACTS_ITEM.load(session, row), bool(row.duty), row.latest,
                  bool(row.requires_test), row.held, row.dealt or 0, bool(row.excluded), bool(row.expired),
                  {c.name: facts[f"check_{c.name}"] for c in checks}, facts)


# The claim's facts read the user and item rows on the cursor (marking.fastsql); the
# objects are the session's, as a query would give them (every claim runs it: issue 8).
_FACTS_USER_TABLE, _FACTS_ITEM_TABLE = User.__table__.alias("u"), Item.__table__.alias("i")
_FACTS_USER = EntityColumns(User, _FACTS_USER_TABLE, "u_")
_FACTS_ITEM = EntityColumns(Item, _FACTS_ITEM_TABLE, "i_")


def _facts_statement(duties: tuple[str, ...], held_slots: tuple[str, ...], checks: tuple[FactCheck, ...],
                     injectors: tuple[Injector, ...]):
    # Short aliases throughout: psycopg re-parses a statement longer than 4 KB on every run
    # (its parse cache stops there), and this one is run on every claim.
    t = MarkTask.__table__.alias("t")
    d, q = ItemDuty.__table__.alias("d"), Qualification.__table__.alias("q")
    u, i = _FACTS_USER_TABLE, _FACTS_ITEM_TABLE
    user_id, item_id = bindparam("user_id"), bindparam("item_id")
    now = bindparam("now", type_=t.c.leased_until.type)
    duty = exists().where(d.c.user_id == user_id, d.c.item_id == item_id,
                          one_of(d.c.duty, duties), d.c.status == "active")
    latest = (select(q.c.status)
              .where(q.c.user_id == user_id, q.c.item_id == item_id)
              .order_by(q.c.attempt.desc()).limit(1).scalar_subquery())
    requires_test = exists().where(q.c.item_id == item_id)
    held = (select(t.c.id)
            .where(t.c.marker_id == user_id, t.c.status == "leased", t.c.item_id == item_id,
                   one_of(t.c.slot, held_slots), t.c.leased_until >= now)
            .order_by(t.c.id).limit(1).scalar_subquery())
    # The day's count from the marker's tally: one row, however long their history.
    k = MarkerItemTally.__table__.alias("k")
    dealt = (select(dealt_on_day(k, bindparam("day", type_=k.c.day.type)))
             .where(k.c.marker_id == user_id, k.c.item_id == item_id).scalar_subquery())
    excluded = exists().where(Exclusion.__table__.alias("x").c.user_id == user_id)
    # The earliest expiry among the item's leases, compared with now: min() is answered from
    # the end of ix_mark_task_lease_expiry in any plan. (An EXISTS over ``leased_until < now``
    # became a sequential scan of the item's tasks in PostgreSQL's generic plan for the
    # prepared statement, which guesses a third of the rows match.)
    earliest_expiry = (select(func.min(t.c.leased_until)).where(t.c.item_id == item_id, t.c.status == "leased")
                       .scalar_subquery())
    expired = earliest_expiry < now
    return (select(*_FACTS_USER.columns, *_FACTS_ITEM.columns, duty.label("duty"), latest.label("latest"),
                   requires_test.label("requires_test"), held.label("held"), dealt.label("dealt"),
                   excluded.label("excluded"), expired.label("expired"),
                   *(c.fact().label(f"check_{c.name}") for c in checks),
                   *(fact for injector in injectors for fact in injector.facts()))
            .select_from(u).outerjoin(i, i.c.id == item_id).where(u.c.id == user_id))


def claim_next(db, user_id: int, item_id: int, *, queue: str = "marking",
               now: dt.datetime | None = None, lease_seconds: int | None = None) -> TaskView | None:
    """Deal the next response of ``item_id`` in ``queue`` to ``user_id`` under a lease.

    Returns None when there is nothing this user may take. A user who already holds
    an unexpired lease in this queue gets that task again (a reload never leaks
    leases). Raises NotAllowed (no duty, unqualified) or CapReached.
    """
    return db.run(claim_work(user_id, item_id, queue=queue, now=now, lease_seconds=lease_seconds))


def claim_work(user_id: int, item_id: int, *, queue: str = "marking", now: dt.datetime | None = None,
               lease_seconds: int | None = None):
    """The claim as ``fn(session) -> TaskView | None``, for ``db.run`` (see :func:`claim_next`)."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; use one of {', '.join(QUEUES)}")
    slots, duties = QUEUES[queue]
    now = now_or(now)

    def fn(session: Session) -> TaskView | None:
        held_slots = slots + INJECTED_SLOTS if queue == "marking" else slots
        day = centre_day(now)
        facts = _facts(session, user_id, item_id, duties, held_slots, now, day)
        user, item = facts.user, facts.item
        if not facts.has_duty:
            raise NotAllowed(f"{user.username} has no active {'/'.join(duties)} duty on item {item.code}")
        problem = qualification_problem(session, user, item,
                                        facts=(facts.latest_qualification, facts.requires_test),
                                        check_facts=facts.check_facts)
        if problem:
            raise NotAllowed(problem)
        if facts.held_task_id is not None:
            # Read again with its conditions: the same marker's other tab may have submitted
            # or released it since ``_facts`` looked (then a new task is dealt below).
            held = session.execute(_HELD_AGAIN, {"task_id": facts.held_task_id, "user_id": user.id,
                                                 "now": now}).scalar_one_or_none()
            if held is not None:
                return _view(session, held, item, queue)
        if queue == "marking":
            cap = item.daily_cap or DEFAULT_DAILY_CAP
            if facts.dealt_today >= cap:
                raise CapReached(f"{user.username} has reached today's cap of {cap} on item {item.code}")
        if facts.has_expired_leases:
            _reopen_expired(session, item.id, now)
        token, until = str(uuid.uuid4()), now + _lease_seconds(lease_seconds)
        leased = None
        for injector in (INJECTORS if queue == "marking" else ()):
            task = injector.inject(session, user, item, now, facts.row)
            if task is not None:
                task.status, task.marker_id, task.lease_token = "leased", user.id, token
                task.leased_until, task.claimed_at = until, now
                session.flush()
                leased = (task.id, task.response_id, task.slot)
                break
        if leased is None:
            # The rows are read only when there are some (the facts query says so).
            exclusions = exclusions_for(session, user) if facts.has_exclusions or user.school_code else NO_EXCLUSIONS
            if exclusions.empty and session.get_bind().dialect.name == "postgresql":
                dealt = first(run_in(
                    session, _cached(("deal", slots), lambda: FastStatement(_deal_statement(slots))),
                    {"pick_item": item.id, "pick_user": user.id, "token": token, "until": until, "now": now,
                     "day": day}))
                if dealt is None:
                    return None
                events.publish(session, events.item_topic(item.id), "task.claimed",
                               {"item_id": item.id, "queue": queue})
                return _view_of(session, item, queue, token=token, until=until, slot=dealt.slot,
                                response_id=dealt.response_id, shown=tuple(dealt)[3:])
            leased = _lease_next(session, item.id, slots, user.id, exclusions, token, until, now)
            if leased is None:
                return None
        task_id, response_id, slot = leased
        if slot != "self_check":  # a self-check re-serves the marker's own response on purpose
            # UNIQUE(response_id, marker_id) → IntegrityError → db.run retries
            session.connection().execute(_ASSIGNMENT_INSERT, {
                "response_id": response_id, "marker_id": user.id, "item_id": item.id, "task_id": task_id,
                "slot": slot, "day": day, "claimed_at": now})
        events.publish(session, events.item_topic(item.id), "task.claimed", {"item_id": item.id, "queue": queue})
        return _view_of(session, item, queue, token=token, until=until, slot=slot, response_id=response_id)

    return fn


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


# Slots a released task may be dealt to the same person again: the team leader's and
# reviewers' work, done by a few people (often one per item), where a release that
# barred the releaser could leave the task with nobody allowed to take it.
REDEALT_AFTER_RELEASE = ("arbitration", "extra", "review")


def release_task(db, user_id: int, token: str, *, now: dt.datetime | None = None) -> None:
    """Hand a task back unmarked.

    For a marker's read (first, second, third) the assignment stays: the response is not
    dealt to them again (no choosing which scripts to mark). For arbitration, extra and
    review tasks the releaser's assignment of this task is removed, so the task can come
    back to them: otherwise a single team leader who handed back an arbitration would
    leave it with nobody who may take it (R-MARK-3).
    """

    def fn(session: Session) -> None:
        active_user(session, user_id)
        task = _held_task(session, user_id, token)
        task.status, task.marker_id, task.lease_token = "open", None, None
        task.leased_until = task.claimed_at = None
        if task.slot in REDEALT_AFTER_RELEASE:
            a = MarkAssignment.__table__
            session.execute(delete(a).where(a.c.task_id == task.id, a.c.marker_id == user_id))
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
