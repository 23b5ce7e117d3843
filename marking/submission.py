"""Submit a mark: fenced by the lease token, idempotent by the client's request id.

* R-MARK-1/R-MARK-2: the score is the points awarded, validated against the item's
  maximum and step (:func:`marking.scores.check_mark`), stored in centipoints; a
  condition code (NR no response, OT off topic, IL illegible, RF refused) means 0.
* Fencing: only the current holder's token is accepted; a stale token (lease
  recycled), a foreign token or a used one is refused and nothing is written.
* Idempotency: UNIQUE(marker_id, request_id). A retried submit returns the original
  result; two racing retries collide on the constraint and the loser, retried by
  ``db.run``, finds and returns the first.
* R-QC-4: the ledger event is appended in the same transaction as the mark.
* Then, with the response row locked, the policy decides (marking.adjudication).
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

from sqlalchemy import bindparam, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from . import events, ledger
from .access import LeaseError, NotAllowed, active_user
from .adjudication import (CHAIN_KINDS, CHAIN_MARK_COLUMNS, ChainMark, advance, current_decision,
                           live_chain_mark_filter, lock_response, note_script_locked)
from .centre_time import now_or
from .fastsql import EntityColumns, FastStatement, first, run_in
from .models import Item, Mark, MarkTask, ResolutionPolicy, Response, Script, User
from .models.work import CALIBRATION_SLOTS, CONDITION_CODES
from .policy import default_policy_id, remember_policy
from .scores import ScoreError, check_mark, format_points, from_cp, parse_points
from .statements import one_of

# R-MARK-8: abnormal features a marker reports (the response is still marked).
ABNORMAL_FLAGS = ("handwriting_change", "identity_written", "special_marks", "suspected_copying")
MAX_REQUEST_ID = 64
# Calibration slots (seed, self_check, qualification, practice, trial) never enter the
# resolution chain. The calibration package registers ``fn(session, task, mark, now)``
# here (issue 7) to score them in the same transaction.
CALIBRATION_HOOKS: list = []


_TASK = MarkTask.__table__
_MARK = Mark.__table__
# Built once (every submit runs them): the user, the token's task, its item and the item's
# policy version (the decision needs it), and a used request id.
_USED_TASK = (select(Mark.task_id).where(Mark.marker_id == bindparam("user_id"),
                                         Mark.request_id == bindparam("request_id"))
              .scalar_subquery().label("used_task"))
_ITEM_POLICY = ResolutionPolicy.id == func.coalesce(Item.policy_id, default_policy_id())
# Read on the cursor (marking.fastsql): the objects are the session's, as a query gives them.
_FOUND_ITEM = EntityColumns(Item, prefix="i")
_FOUND_POLICY = EntityColumns(ResolutionPolicy, prefix="p")
_FOUND_RESPONSE = EntityColumns(Response, prefix="r")
_FOUND = FastStatement(
    select(User.active, _TASK.c.id, _TASK.c.response_id, _USED_TASK, *_FOUND_ITEM.columns, *_FOUND_POLICY.columns)
    .select_from(User)
    .outerjoin(_TASK, _TASK.c.lease_token == bindparam("token"))
    .outerjoin(Item, Item.id == _TASK.c.item_id)
    .outerjoin(ResolutionPolicy, _ITEM_POLICY)
    .where(User.id == bindparam("user_id")), autoflush=True)
# PostgreSQL: the same facts and the response row locked, in one round trip. No row when
# the user or the token is unknown (then ``_FOUND`` says which). Under READ COMMITTED a
# lock wait returns the response row as the holder committed it (the columns of the
# other tables are from before the wait: the fence re-checks the task, and a request id
# committed meanwhile is found when the fence refuses). The rows replace what the
# session's objects hold (as ``populate_existing``): the locked row is the newest.
_FOUND_AND_LOCKED = FastStatement(
    select(User.active, _TASK.c.id, _TASK.c.response_id, _USED_TASK, *_FOUND_ITEM.columns, *_FOUND_POLICY.columns,
           *_FOUND_RESPONSE.columns)
    .select_from(User)
    .join(_TASK, _TASK.c.lease_token == bindparam("token"))
    .join(Response, Response.id == _TASK.c.response_id)
    .join(Item, Item.id == _TASK.c.item_id)
    .outerjoin(ResolutionPolicy, _ITEM_POLICY)
    .where(User.id == bindparam("user_id"))
    .with_for_update(of=Response.__table__), autoflush=True)
# The fence: only the holder's current lease turns into a done task.
_FENCED_DONE = (update(_TASK)
                .where(_TASK.c.id == bindparam("task"), _TASK.c.lease_token == bindparam("token"),
                       _TASK.c.status == "leased", _TASK.c.marker_id == bindparam("holder"))
                .values(status="done").returning(_TASK.c.slot, _TASK.c.claimed_at))
_MARK_INSERT = insert(_MARK).returning(_MARK.c.id)
_MARK_COLUMNS = ("response_id", "task_id", "marker_id", "score_cp", "condition_code", "flags", "request_id",
                 "submitted_at", "dwell_ms")


def _fenced_mark_insert():
    """PostgreSQL: the fence, the mark and the response's other live chain marks in one
    statement (the INSERT reads the fenced row).

    ``WITH done AS (UPDATE mark_task … RETURNING slot, claimed_at), inserted AS (INSERT
    INTO mark SELECT … FROM done RETURNING id, kind), marking AS (UPDATE response SET
    status = 'marking' …) SELECT id, kind, (the live chain marks as JSON) FROM
    inserted``: no row when the fence refuses. The caller holds the
    response row's lock before this statement starts, and under READ COMMITTED a
    statement's snapshot is taken when it starts, so it sees every mark committed by the
    transactions that lock waited for (the locking SELECT's own snapshot, taken before
    the wait, would not). The new mark is not in that snapshot; the caller adds it.

    ``marking``: a pending response's first or second read makes it ``marking`` — what
    :func:`marking.adjudication.advance` sets when the policy waits, as it always does on
    the first mark of a double-marked item. Any other decision sets its own status
    afterwards; the caller tells the response's ORM object (see ``_apply_marking``).
    """
    done = _FENCED_DONE.cte("done")
    r = Response.__table__
    becomes_marking = (update(r)
                       .where(r.c.id == bindparam("new_response_id", type_=r.c.id.type), r.c.status == "pending",
                              exists().where(one_of(done.c.slot, FIRST_READS)))
                       .values(status="marking").cte("marking"))
    # ``new_*`` names: a parameter named like a mark_task column would become a SET of the UPDATE.
    values = [bindparam(f"new_{c}", type_=_MARK.c[c].type) for c in _MARK_COLUMNS]
    started = func.coalesce(bindparam("new_started_at", type_=_MARK.c.started_at.type), done.c.claimed_at)
    source = select(*values, done.c.slot, started)
    inserted = (insert(_MARK).from_select(list(_MARK_COLUMNS) + ["kind", "started_at"], source,
                                          include_defaults=False)
                .returning(_MARK.c.id, _MARK.c.kind).cte("inserted"))
    chain = live_chain_mark_filter(bindparam("new_response_id", type_=_MARK.c.response_id.type))
    prior = (select(func.json_agg(aggregate_order_by(func.json_build_array(*CHAIN_MARK_COLUMNS), Mark.id)))
             .select_from(Mark).join(MarkTask, MarkTask.id == Mark.task_id).where(*chain)
             .scalar_subquery())
    # A read that joins earlier chain marks may decide the response, and a final totals its
    # script under the script's lock. Taken here, the lock is held before the finalise
    # statement starts, so that statement can read the script's finals itself (one round
    # trip fewer per deciding read; marking.adjudication.finalise). Only a hint: a final
    # without it takes the lock and reads the finals after, as before.
    sc = Script.__table__
    script_lock = (select(sc.c.id).where(sc.c.id == bindparam("lock_script", type_=sc.c.id.type),
                                        select(Mark.id).join(MarkTask, MarkTask.id == Mark.task_id)
                                        .where(*chain).exists())
                   .with_for_update().cte("script_lock"))
    script_locked = select(func.count()).select_from(script_lock).scalar_subquery()
    return (select(inserted.c.id, inserted.c.kind, prior.label("prior"), script_locked.label("script_locked"))
            .add_cte(becomes_marking))


FIRST_READS = ("first", "second")


def _apply_marking(response: Response, slot: str) -> None:
    """The response's ORM object learns what ``marking`` wrote (no second UPDATE at flush)."""
    if slot in FIRST_READS and response.status == "pending":
        set_committed_value(response, "status", "marking")


def _live_chain(prior, new: ChainMark) -> dict[str, ChainMark]:
    """The response's live chain marks by kind, as ``chain_marks`` reads them: the
    statement's earlier marks (by id; psycopg parses the JSON, None when there are none)
    and then the new one, when it is a chain mark."""
    marks = {row[1]: ChainMark(*row) for row in prior or ()}
    if new.kind in CHAIN_KINDS:
        marks[new.kind] = new
    return marks


_FENCED_MARK_INSERT = FastStatement(_fenced_mark_insert())   # every mark: on the cursor


class IdempotencyConflict(ValueError):
    """The request id was already used for a different task."""


@dataclass(frozen=True)
class SubmitResult:
    """What the marker is told back: their own mark only (R-SEC-1), never the outcome."""

    mark_id: int
    score: str
    condition_code: str | None
    replayed: bool


def _result(mark: Mark, replayed: bool) -> SubmitResult:
    return SubmitResult(mark.id, format_points(from_cp(mark.score_cp)), mark.condition_code, replayed)


def validate_score(item: Item, score, condition_code: str | None) -> int:
    if condition_code is not None:
        if condition_code not in CONDITION_CODES:
            raise ScoreError(f"unknown condition code {condition_code!r}; use one of {', '.join(CONDITION_CODES)}")
        if score not in (None, "", 0, "0") and parse_points(score) != 0:
            raise ScoreError("a condition code records 0 points; leave the score empty or 0")
        return 0
    if score is None or score == "":
        raise ScoreError("a score or a condition code is required")
    return check_mark(parse_points(score), max_cp=item.max_cp, step_cp=item.step_cp)


def submit_mark(db, user_id: int, token: str, score: str | int | Fraction | None, *, request_id: str,
                condition_code: str | None = None, flags: Iterable[str] = (), dwell_ms: int | None = None,
                started_at: dt.datetime | None = None, now: dt.datetime | None = None) -> SubmitResult:
    """Record the holder's mark for the leased task ``token``; see the module docstring."""
    return db.run(submit_work(user_id, token, score, request_id=request_id, condition_code=condition_code,
                              flags=flags, dwell_ms=dwell_ms, started_at=started_at, now=now))


def submit_work(user_id: int, token: str, score: str | int | Fraction | None, *, request_id: str,
                condition_code: str | None = None, flags: Iterable[str] = (), dwell_ms: int | None = None,
                started_at: dt.datetime | None = None, now: dt.datetime | None = None):
    """The submit as ``fn(session) -> SubmitResult``, for ``db.run`` (arguments checked now)."""
    if not request_id or len(request_id) > MAX_REQUEST_ID:
        raise ValueError(f"request_id must be 1–{MAX_REQUEST_ID} characters")
    flags = sorted(set(flags))
    unknown = [f for f in flags if f not in ABNORMAL_FLAGS]
    if unknown:
        raise ValueError(f"unknown flags {unknown}; abnormal flags are {', '.join(ABNORMAL_FLAGS)} "
                         "(problems such as an illegible image are reported with report_problem)")
    if dwell_ms is not None and dwell_ms < 0:
        raise ValueError("dwell_ms cannot be negative")
    now = now_or(now)

    def replay(session: Session) -> SubmitResult | None:
        existing = session.execute(
            select(Mark).where(Mark.marker_id == user_id, Mark.request_id == request_id)
        ).scalar_one_or_none()
        if existing is None:
            return None
        task = session.get(MarkTask, existing.task_id)
        if task.lease_token != token:
            raise IdempotencyConflict(f"request id {request_id!r} was already used for another task")
        return _result(existing, True)

    def refused(session: Session, task_id: int) -> SubmitResult:
        """Why the fenced update matched nothing: a committed retry, or a lease not ours."""
        replayed = replay(session)   # READ COMMITTED: a concurrent retry's commit is visible now
        if replayed is not None:
            return replayed
        task = session.execute(select(MarkTask).where(MarkTask.id == task_id)
                               .execution_options(populate_existing=True)).scalar_one()
        if task.status == "leased" and task.lease_token == token and task.marker_id != user_id:
            raise LeaseError("this task is leased to someone else")
        raise LeaseError("this task is no longer leased to you (recycled, submitted or cancelled)")

    def fn(session: Session) -> SubmitResult:
        conn = session.connection()
        postgresql = conn.dialect.name == "postgresql"
        # One round trip: is the user active, which task holds this token (and its item),
        # was this request id used before (then it is a replay, or a conflict); on
        # PostgreSQL also the response row, locked.
        params = {"user_id": user_id, "token": token, "request_id": request_id}
        found = first(run_in(session, _FOUND_AND_LOCKED, params)) if postgresql else None
        locked = _FOUND_RESPONSE.load(session, found, refresh=True) if found is not None else None
        if found is None:
            found = first(run_in(session, _FOUND, params))
        if found is None or not found.active:
            raise NotAllowed(f"user {user_id} does not exist or is disabled")
        if found.used_task is not None:
            replayed = replay(session)
            if replayed is not None:
                return replayed
        if found.id is None:
            raise LeaseError("unknown or recycled lease token: the lease expired and the task went "
                             "back to the pool, or it was never yours")
        item = _FOUND_ITEM.load(session, found, refresh=locked is not None)
        remember_policy(session, item, _FOUND_POLICY.load(session, found, refresh=locked is not None))
        response = locked or lock_response(session, found.response_id)   # lock order: response, then task
        try:
            score_cp = validate_score(item, score, condition_code)
        except ScoreError:
            score_cp = None   # reported after the fence, as a stale lease is reported first
        row = {"response_id": response.id, "task_id": found.id, "marker_id": user_id, "score_cp": score_cp,
               "condition_code": condition_code, "flags": json.dumps(flags), "request_id": request_id,
               "started_at": started_at, "submitted_at": now, "dwell_ms": dwell_ms}
        live = None   # the live chain marks, when the mark's statement read them
        if score_cp is not None and postgresql:
            # UNIQUE(marker_id, request_id), (response, marker) back the insert
            inserted = first(run_in(session, _FENCED_MARK_INSERT, {
                **{f"new_{key}": value for key, value in row.items()},
                "task": found.id, "token": token, "holder": user_id, "lock_script": response.script_id}))
            if inserted is None:
                return refused(session, found.id)
            mark_id, slot, prior, script_locked = inserted
            if script_locked:
                note_script_locked(session, response.script_id)
            _apply_marking(response, slot)
            live = _live_chain(prior, ChainMark(mark_id, slot, score_cp, condition_code, user_id, response.id,
                                                found.id))
        else:
            done = conn.execute(_FENCED_DONE, {"task": found.id, "token": token, "holder": user_id}).first()
            if done is None:
                return refused(session, found.id)
            slot, claimed_at = done
            if score_cp is None:
                score_cp = validate_score(item, score, condition_code)   # raises the ScoreError
            mark_id = conn.execute(_MARK_INSERT, {**row, "score_cp": score_cp, "kind": slot,
                                                  "started_at": started_at or claimed_at}).scalar_one()
        ledger.append(session, actor_id=user_id, action="mark.submitted", entity="response",
                      entity_id=response.id,
                      data={"mark_id": mark_id, "task_id": found.id, "slot": slot, "item_id": item.id,
                            "score": ledger.score_text(from_cp(score_cp)), "condition_code": condition_code,
                            "flags": flags, "request_id": request_id},
                      at=now)
        # No slot on a topic markers read: seeds and self-checks look like live work (issue 7).
        events.publish(session, events.item_topic(item.id), "mark.submitted", {"item_id": item.id})
        result = SubmitResult(mark_id, format_points(from_cp(score_cp)), condition_code, False)
        needs_objects = flags or slot in CALIBRATION_SLOTS or slot in ("review", "extra")
        if not needs_objects:
            advance(session, response, now=now, actor_id=user_id, marks=live)
            return result
        mark = session.get(Mark, mark_id)
        if flags:
            from .problems import register_abnormal
            register_abnormal(session, response, mark, flags, now=now)
        if slot in CALIBRATION_SLOTS:
            task = session.get(MarkTask, found.id)
            for hook in CALIBRATION_HOOKS:
                hook(session, task, mark, now)
        elif slot == "review" or (slot == "extra" and response.status == "resolved"):
            from .review import after_post_final_read
            after_post_final_read(session, response, item, mark, now=now)
        else:
            advance(session, response, now=now, actor_id=user_id)
        return result

    return fn


REVISABLE_KINDS = ("first", "second", "third")


def is_revisable(session: Session, mark: Mark, response, item: Item) -> bool:
    """True while no decision has used the mark (see :func:`revise_mark`)."""
    if mark.kind not in REVISABLE_KINDS or response.status == "resolved":
        return False
    task = session.get(MarkTask, mark.task_id)
    if task is None or task.status == "cancelled":
        return False
    decision, _marks, _policy = current_decision(session, response, item)
    return decision.action == "wait"


def revise_mark(db, user_id: int, mark_id: int, score: str | int | Fraction | None, *,
                condition_code: str | None = None, request_id: str = "",
                now: dt.datetime | None = None) -> SubmitResult:
    """A marker corrects their own mark while no decision has used it (R-QC-4: through the ledger).

    A mark is revisable only while the response still waits for another mark: once the
    policy has decided anything from it (a final score, a third mark, an arbitration),
    changing it would silently change that decision, so later corrections go through
    the score-change service instead (R-QC-2). Calibration marks (seeds, self-checks)
    are never revisable: the first score stands. Re-sending the same score is a no-op.
    """
    now = now_or(now)

    def fn(session: Session) -> SubmitResult:
        active_user(session, user_id)
        found = session.get(Mark, mark_id)
        if found is None or found.marker_id != user_id:
            raise NotAllowed("you can revise only your own marks")  # no hint whether the id exists
        response = lock_response(session, found.response_id)
        mark = session.execute(select(Mark).where(Mark.id == mark_id).with_for_update()
                               .execution_options(populate_existing=True)).scalar_one()
        item = session.get(Item, response.item_id)
        if not is_revisable(session, mark, response, item):
            # One message for every refusal, so a seed or self-check (never revisable)
            # looks exactly like a live mark whose co-mark has arrived (issue 7).
            raise NotAllowed("this mark has already been used in a decision; ask the team leader "
                             "for a score change")
        new_cp = validate_score(item, score, condition_code)
        if (new_cp, condition_code) == (mark.score_cp, mark.condition_code):
            return _result(mark, True)
        before = {"score": ledger.score_text(from_cp(mark.score_cp)), "condition_code": mark.condition_code}
        mark.score_cp, mark.condition_code = new_cp, condition_code
        session.flush()
        ledger.append(session, actor_id=user_id, action="mark.revised", entity="response",
                      entity_id=response.id, reason="marker_revision",
                      data={"mark_id": mark.id, "item_id": item.id, "before": before,
                            "after": {"score": ledger.score_text(from_cp(new_cp)),
                                      "condition_code": condition_code},
                            "request_id": request_id[:MAX_REQUEST_ID]},
                      at=now)
        return _result(mark, False)

    return db.run(fn)
