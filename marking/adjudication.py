"""After-submit decisions (R-MARK-3): wait, third slot, arbitration, extra read, final.

Called inside the submitting transaction with the response row locked
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite transactions are serialised by
``BEGIN IMMEDIATE``), so two concurrent final submissions cannot both — or
neither — create the third slot; the partial UNIQUE index on
``mark_task(response_id, slot)`` backs "exactly one" in any case.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
from fractions import Fraction
from typing import Any, NamedTuple

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from . import events, ledger
from .dispatch import cancel_open_tasks, ensure_task
from .fastsql import FastStatement, one, run_in
from .models import Item, Mark, MarkTask, Resolution, ResolutionPolicy, Response
from .policy import Decision, MarkSet, decide, policy_for_item
from .scores import from_cp
from .statements import one_of

CHAIN_KINDS = ("first", "second", "third", "arbitration", "extra")
OUTCOME_REASON = {"agreed": "agreement", "third_resolved": "third_mark", "arbitrated": "arbitration"}


# Built once: these run on every submit (issue 8's load target).
_LOCK_RESPONSE = (select(Response).where(Response.id == bindparam("response_id")).with_for_update()
                  .execution_options(populate_existing=True))

class ChainMark(NamedTuple):
    """A live chain mark as the decision reads it (Mark's attribute names, read-only)."""
    id: int
    kind: str
    score_cp: int | None
    condition_code: str | None
    marker_id: int
    response_id: int
    task_id: int


# Plain rows (ChainMark's columns): the decision only reads them.
CHAIN_MARK_COLUMNS = (Mark.id, Mark.kind, Mark.score_cp, Mark.condition_code, Mark.marker_id, Mark.response_id,
                      Mark.task_id)


def live_chain_mark_filter(response_id) -> tuple:
    """WHERE conditions on mark ⨝ mark_task for a response's live chain marks
    (``response_id``: a value or a bind parameter)."""
    return (Mark.response_id == response_id, one_of(Mark.kind, CHAIN_KINDS),
            MarkTask.status != "cancelled")   # a superseded mark (issue 7 re-queue) is out


_CHAIN_MARKS = (select(*CHAIN_MARK_COLUMNS).join(MarkTask, MarkTask.id == Mark.task_id)
                .where(*live_chain_mark_filter(bindparam("response_id"))).order_by(Mark.id))
_RESOLUTION = Resolution.__table__
# The next version is read inside the INSERT: one statement (``for_response``, not
# ``response_id``, so the parameter is not taken for the column's value). Every value is
# a named parameter: the statement is also a CTE of the PostgreSQL finalise statement.
_RESOLUTION_INSERT = (insert(_RESOLUTION).values(
    response_id=bindparam("for_response"),
    version=select(func.coalesce(func.max(_RESOLUTION.c.version), 0) + 1)
    .where(_RESOLUTION.c.response_id == bindparam("for_response")).scalar_subquery(),
    **{c: bindparam(c, type_=_RESOLUTION.c[c].type)
       for c in ("policy_id", "outcome", "inputs", "final_num", "final_den", "decided_by", "decided_at")})
    .returning(_RESOLUTION.c.version))


def lock_response(session: Session, response_id: int) -> Response:
    return session.execute(_LOCK_RESPONSE, {"response_id": response_id}).scalar_one()


def chain_marks(session: Session, response_id: int) -> dict[str, Any]:
    """The response's live chain marks by kind, as read-only rows with Mark's attribute names."""
    session.flush()   # a mark added through the ORM in this transaction counts too
    marks = session.connection().execute(_CHAIN_MARKS, {"response_id": response_id}).all()
    return {m.kind: m for m in marks}


def final_of(response: Response) -> Fraction | None:
    if response.final_num is None:
        return None
    return Fraction(response.final_num, response.final_den)


def _resolution_row(response: Response, final: Fraction, outcome: str, policy: ResolutionPolicy | None,
                    inputs: dict[str, Any], decided_by: int | None, now: dt.datetime) -> dict[str, Any]:
    return {"for_response": response.id, "policy_id": policy.id if policy else None, "outcome": outcome,
            "inputs": ledger.canonical_json(inputs), "final_num": final.numerator, "final_den": final.denominator,
            "decided_by": decided_by, "decided_at": now}


def record_resolution(session: Session, response: Response, *, final: Fraction, outcome: str,
                      policy: ResolutionPolicy | None, inputs: dict[str, Any], decided_by: int | None,
                      now: dt.datetime, reason: str | None, action: str = "response.resolved",
                      extra_data: dict[str, Any] | None = None) -> int:
    """Write a Resolution version, set the response's final, and the ledger event (R-QC-4).

    Returns the new version number (the response row is locked by the caller, so the
    version read inside the INSERT is the latest).
    """
    final = Fraction(final)
    before = final_of(response)
    version = session.connection().execute(
        _RESOLUTION_INSERT, _resolution_row(response, final, outcome, policy, inputs, decided_by, now)).scalar_one()
    response.final_num, response.final_den = final.numerator, final.denominator
    response.status = "resolved"
    response.resolved_at = response.resolved_at or now
    _ledger_resolution(session, response, version=version, before=before, final=final, outcome=outcome,
                       policy=policy, inputs=inputs, decided_by=decided_by, now=now, reason=reason,
                       action=action, extra_data=extra_data)
    return version


def _ledger_resolution(session: Session, response: Response, *, version: int, before: Fraction | None,
                       final: Fraction, outcome: str, policy: ResolutionPolicy | None, inputs: dict[str, Any],
                       decided_by: int | None, now: dt.datetime, reason: str | None, action: str = "response.resolved",
                       extra_data: dict[str, Any] | None = None) -> None:
    data = {"resolution_version": version, "outcome": outcome, "before": ledger.score_text(before),
            "final": ledger.score_text(final), "inputs": inputs, "item_id": response.item_id,
            "script_id": response.script_id}
    if policy is not None:
        data["policy"] = {"id": policy.id, "name": policy.name, "version": policy.version,
                          "hash": policy.content_hash}
    data.update(extra_data or {})
    ledger.append(session, actor_id=decided_by, action=action, entity="response",
                  entity_id=response.id, data=data, reason=reason, at=now)


def _inputs(marks: dict[str, Mark], item: Item, decision: Decision) -> dict[str, Any]:
    return {
        "threshold": ledger.score_text(from_cp(item.threshold_cp)),
        "max": ledger.score_text(from_cp(item.max_cp)),
        "double_marked": item.double_marked,
        "marks": {k: {"mark_id": m.id, "score": ledger.score_text(from_cp(m.score_cp)),
                      "condition_code": m.condition_code} for k, m in sorted(marks.items())},
        "used": list(decision.used),
        "note": decision.note,
    }


def current_decision(session: Session, response: Response, item: Item, *, marks: dict[str, Any] | None = None
                     ) -> tuple[Decision, dict[str, Mark], ResolutionPolicy]:
    """What the item's policy says about the response's live marks right now.

    ``marks``: the live chain marks by kind when the caller has just read them with
    the response row locked (the submit does, in its mark's INSERT); else read here.
    """
    policy_row, params = policy_for_item(session, item)
    if marks is None:
        marks = chain_marks(session, response.id)
    mark_set = MarkSet(**{k: from_cp(m.score_cp) for k, m in marks.items()})
    decision = decide(params, mark_set, threshold=from_cp(item.threshold_cp),
                      max_score=from_cp(item.max_cp), double_marked=item.double_marked)
    return decision, marks, policy_row


def advance(session: Session, response: Response, *, now: dt.datetime, actor_id: int | None,
            marks: dict[str, Any] | None = None) -> Decision:
    """Apply the item's policy to the response's marks (response already locked;
    ``marks`` as for :func:`current_decision`)."""
    item = session.get(Item, response.item_id)
    decision, marks, policy_row = current_decision(session, response, item, marks=marks)
    if decision.action == "wait":
        status = "marking" if marks else "pending"
        if response.status != status:   # (an unchanged value still sends the object through a flush)
            response.status = status
    elif decision.action == "third":
        ensure_task(session, response, "third")
        response.status = "third"
        events.publish(session, events.item_topic(item.id), "third.created", {"item_id": item.id})
    elif decision.action == "arbitration":
        ensure_task(session, response, "arbitration")
        response.status = "arbitration"
        events.publish(session, events.leader_topic(item.id), "arbitration.created", {"item_id": item.id})
    elif decision.action == "extra":
        ensure_task(session, response, "extra")
        response.status = "marking"
        events.publish(session, events.leader_topic(item.id), "extra.created", {"item_id": item.id})
    else:
        finalise(session, response, item, decision=decision, policy=policy_row,
                 inputs=_inputs(marks, item, decision),
                 decided_by=marks["arbitration"].marker_id if decision.outcome == "arbitrated" else None,
                 now=now)
    return decision


LOCKED_SCRIPTS_KEY = "mc_locked_scripts"


def note_script_locked(session: Session, script_id: int) -> None:
    """This transaction holds ``script_id``'s row lock (the mark's statement took it):
    a final of one of its responses can read the script's finals in its own statement."""
    session.info.setdefault(LOCKED_SCRIPTS_KEY, set()).add(script_id)


def _forget_locked_scripts(session: Session, _transaction) -> None:
    # A lock lasts as long as its transaction; a note that outlived it would let a later
    # final read finals from a snapshot taken before it waited for the lock.
    session.info.pop(LOCKED_SCRIPTS_KEY, None)


sa_event.listen(Session, "after_transaction_end", _forget_locked_scripts)


def finalise(session: Session, response: Response, item: Item, *, decision: Decision,
             policy: ResolutionPolicy | None, inputs: dict[str, Any], decided_by: int | None,
             now: dt.datetime) -> int:
    """Record the final score (returns the resolution version), close the chain, total the script."""
    from . import totals  # late import: totals → adjudication helpers

    reason = OUTCOME_REASON.get(decision.outcome)
    locked_script = finals = None
    if session.connection().dialect.name == "postgresql":
        version, locked_script, finals = _resolve_close_and_lock_script(
            session, response, final=Fraction(decision.final), outcome=decision.outcome, policy=policy,
            inputs=inputs, decided_by=decided_by, now=now, reason=reason,
            read_finals=response.script_id in session.info.get(LOCKED_SCRIPTS_KEY, ()))
    else:
        version = record_resolution(session, response, final=decision.final, outcome=decision.outcome,
                                    policy=policy, inputs=inputs, decided_by=decided_by, now=now, reason=reason)
        cancel_open_tasks(session, response.id, CHAIN_KINDS)
    events.publish(session, events.item_topic(item.id), "response.resolved",
                   {"item_id": item.id, "outcome": decision.outcome})
    totals.recompute_script(session, response.script_id, now=now, actor_id=decided_by, locked=locked_script,
                            finals=finals,
                            override=None if finals is None else {response.id: Fraction(decision.final)})
    return version


def _resolve_close_and_lock_script(session: Session, response: Response, *, final: Fraction, outcome: str,
                                   policy: ResolutionPolicy | None, inputs: dict[str, Any], decided_by: int | None,
                                   now: dt.datetime, reason: str | None, read_finals: bool):
    """PostgreSQL: what :func:`record_resolution` and ``cancel_open_tasks`` write, and the
    script's lock for its total, in one statement (three round trips fewer per final;
    issue 8). Returns the version, the locked (script, subject, has_objective) row, and
    with ``read_finals`` the script's item finals (else None).

    Without ``read_finals`` the script's finals are read by the next statement, after the
    lock is granted, so they include every final committed by a transaction that lock
    waited for (this statement's own snapshot was taken before the wait). With it, this
    transaction already held the lock when the statement started (the mark's statement
    took it), so the statement's snapshot has them; it lacks only this statement's own
    final, which the caller supplies. The response row is written here, so its ORM
    object is told the committed values rather than flushed again.
    """
    before, resolved_at = final_of(response), response.resolved_at or now
    row = one(run_in(session, _finalise_statement(read_finals), {
        **_resolution_row(response, final, outcome, policy, inputs, decided_by, now),
        "for_script": response.script_id, "resolved_at": resolved_at}))
    for key, value in (("final_num", final.numerator), ("final_den", final.denominator), ("status", "resolved"),
                       ("resolved_at", resolved_at)):
        set_committed_value(response, key, value)
    _ledger_resolution(session, response, version=row.version, before=before, final=final, outcome=outcome,
                       policy=policy, inputs=inputs, decided_by=decided_by, now=now, reason=reason)
    from .totals import finals_from_json, locked_script   # late import: totals → adjudication helpers
    finals = finals_from_json(row.finals) if read_finals else None
    return row.version, locked_script(session, row), finals


@functools.cache
def _finalise_statement(read_finals: bool):
    """``WITH res AS (INSERT INTO resolution …), cancelled AS (UPDATE mark_task …),
    resolved AS (UPDATE response …) SELECT res.version, [the script's finals as JSON,]
    script, subject, has_objective … FOR UPDATE OF script`` (built on first use: totals
    imports this module)."""
    from .totals import item_finals_json, locked_script_statement
    t, r = MarkTask.__table__, Response.__table__
    res = _RESOLUTION_INSERT.cte("res")
    cancelled = (update(t).where(t.c.response_id == bindparam("for_response"), one_of(t.c.slot, CHAIN_KINDS),
                                 one_of(t.c.status, ("open", "leased")))
                 .values(status="cancelled", leased_until=None).cte("cancelled"))
    resolved = (update(r).where(r.c.id == bindparam("for_response"))
                .values(final_num=bindparam("final_num"), final_den=bindparam("final_den"), status="resolved",
                        resolved_at=bindparam("resolved_at", type_=r.c.resolved_at.type)).cte("resolved"))
    columns = [select(res.c.version).scalar_subquery().label("version")]
    if read_finals:
        columns.append(item_finals_json().label("finals"))
    return FastStatement(locked_script_statement(*columns).add_cte(cancelled, resolved), autoflush=True)


def reopen(session: Session, response: Response, *, now: dt.datetime, actor_id: int | None) -> Decision:
    """Put a response back into normal flow (after a problem was fixed)."""
    item = session.get(Item, response.item_id)
    marks = chain_marks(session, response.id)
    for slot in (("first", "second") if item.double_marked else ("first",)):
        if slot not in marks:
            ensure_task(session, response, slot)
    response.status = "pending"
    return advance(session, response, now=now, actor_id=actor_id)


def inputs_json(resolution: Resolution) -> dict[str, Any]:
    return json.loads(resolution.inputs)
