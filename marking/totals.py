"""Subject totals (R-MARK-2, R-MARK-6) and ``results verify`` (R-QC-1).

Total = objective subtotal (``Script.objective_cp``) + the exact finals of the
script's subjective responses, rounded ONCE with the subject's rule
(``Subject.total_rounding``/``total_places``, :func:`marking.scores.round_total`).
The exact total is kept (``total_num``/``total_den``) beside the rounded text.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, exists, func, select, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from . import events, ledger
from .fastsql import EntityColumns, FastStatement, one, run_in
from .models import ExamSession, Item, Resolution, Response, Script, Subject
from .scores import from_cp, round_total


@dataclass(frozen=True)
class ScriptTotal:
    complete: bool
    exact: Fraction | None
    rounded: Decimal | None
    missing: tuple[str, ...] = ()   # item codes without a final score


def find_subject(session: Session, code: str, session_code: str | None = None) -> Subject:
    query = select(Subject).where(Subject.code == code)
    if session_code:
        query = query.join(ExamSession, ExamSession.id == Subject.session_id).where(ExamSession.code == session_code)
    rows = session.execute(query).scalars().all()
    if not rows:
        raise LookupError(f"no subject with code {code!r}" + (f" in session {session_code!r}" if session_code else ""))
    if len(rows) > 1:
        raise LookupError(f"subject code {code!r} is used in several exam sessions; name the session")
    return rows[0]


# Built once: a final score recomputes its script's total on every second read.
_OBJECTIVE_ITEM = select(Item.id).where(Item.subject_id == bindparam("subject_id"), Item.kind == "objective").limit(1)
# The subject's subjective items, each with the script's response to it (if any): one read.
_ITEM_FINALS = (select(Item.id, Item.code, Response.id.label("response_id"), Response.status,
                       Response.final_num, Response.final_den)
                .select_from(Item)
                .outerjoin(Response, and_(Response.item_id == Item.id, Response.script_id == bindparam("script_id")))
                .where(Item.subject_id == bindparam("subject_id"), Item.kind == "subjective")
                .order_by(Item.ordinal, Response.id))


class ItemFinal(NamedTuple):
    """One row of :data:`_ITEM_FINALS`: a subjective item and the script's response to it."""
    id: int
    code: str
    response_id: int | None
    status: str | None
    final_num: int | None
    final_den: int | None


def item_finals_json():
    """:data:`_ITEM_FINALS` as one JSON array, for a statement that selects the script
    (correlated with its ``script`` row): the finalise statement reads them itself when
    its transaction already holds the script's lock (marking.adjudication)."""
    return (select(func.json_agg(aggregate_order_by(
                func.json_build_array(Item.id, Item.code, Response.id, Response.status, Response.final_num,
                                      Response.final_den), Item.ordinal, Response.id)))
            .select_from(Item)
            .outerjoin(Response, and_(Response.item_id == Item.id, Response.script_id == Script.id))
            .where(Item.subject_id == Script.subject_id, Item.kind == "subjective")
            .correlate(Script).scalar_subquery())


def finals_from_json(value) -> list[ItemFinal]:
    return [ItemFinal(*row) for row in value or ()]


_LOCKED_SCRIPT = EntityColumns(Script, prefix="s")
_LOCKED_SUBJECT = EntityColumns(Subject, prefix="j")


def locked_script_statement(*columns):
    """The script (locked), its subject, and whether the subject has objective items: one
    read (``columns``: more to read in the same statement), run as a
    :class:`~marking.fastsql.FastStatement`; :func:`locked_script` makes its row the objects."""
    return (select(*columns, *_LOCKED_SCRIPT.columns, *_LOCKED_SUBJECT.columns,
                   exists().where(Item.subject_id == Script.subject_id, Item.kind == "objective")
                   .label("has_objective"))
            .select_from(Script)
            .join(Subject, Subject.id == Script.subject_id)
            .where(Script.id == bindparam("for_script")).with_for_update(of=Script.__table__))


def locked_script(session: Session, row) -> tuple[Script, Subject, bool]:
    """(script, subject, has_objective) from a :func:`locked_script_statement` row: the
    session's objects, refreshed from the row (it was read under the script's lock)."""
    return (_LOCKED_SCRIPT.load(session, row, refresh=True), _LOCKED_SUBJECT.load(session, row, refresh=True),
            bool(row.has_objective))


_LOCK_SCRIPT = FastStatement(locked_script_statement(), autoflush=True)
_SCRIPT = Script.__table__
_SET_TOTAL = FastStatement(update(_SCRIPT).where(_SCRIPT.c.id == bindparam("for_script"))
                           .values({c: bindparam(c, type_=_SCRIPT.c[c].type)
                                    for c in ("total_num", "total_den", "total_rounded", "status")}))


def has_objective_items(session: Session, subject_id: int) -> bool:
    return session.execute(_OBJECTIVE_ITEM, {"subject_id": subject_id}).first() is not None


def compute(session: Session, script: Script, subject: Subject, *,
            override: dict[int, Fraction] | None = None, has_objective: bool | None = None,
            finals: list[ItemFinal] | None = None) -> ScriptTotal:
    """The script's total from what is recorded (``override``: response id → final, for what-ifs).

    ``has_objective``: whether the subject has objective items, when the caller has read it.
    ``finals``: the script's item finals (:func:`item_finals_json`), when the caller has read them.
    """
    if finals is None:
        session.flush()   # the finals this transaction set on Response objects are read below
        finals = session.connection().execute(_ITEM_FINALS, {"script_id": script.id, "subject_id": subject.id})
    rows: dict[int, Any] = {}
    for row in finals:
        rows[row.id] = row   # by item, in item order (a later response to the same item wins)
    missing: list[str] = []
    total = Fraction(0)
    if script.objective_cp is not None:
        total += from_cp(script.objective_cp)
    elif has_objective if has_objective is not None else has_objective_items(session, subject.id):
        missing.append("objective")
    for row in rows.values():
        if row.response_id is None:
            missing.append(row.code)
        elif override and row.response_id in override:
            total += override[row.response_id]
        elif row.status == "resolved" and row.final_num is not None:
            total += Fraction(row.final_num, row.final_den)
        else:
            missing.append(row.code)
    if missing:
        return ScriptTotal(False, None, None, tuple(missing))
    return ScriptTotal(True, total, round_total(total, subject.total_rounding, subject.total_places))


def recompute_script(session: Session, script_id: int, *, now: dt.datetime, actor_id: int | None,
                     reason: str | None = None, locked: tuple | None = None,
                     finals: list[ItemFinal] | None = None,
                     override: dict[int, Fraction] | None = None) -> ScriptTotal:
    """Recompute and store the total (script row locked: concurrent finals see each other).

    ``locked``: the (script, subject, has_objective) row when the caller has just locked
    it with :func:`locked_script_statement` (then the finals are read after that lock,
    unless ``finals`` were read under it already; ``override`` then gives the finals the
    caller set in the same statement, which its snapshot did not show)."""
    script, subject, has_objective = locked or locked_script(session, one(run_in(session, _LOCK_SCRIPT,
                                                                              {"for_script": script_id})))
    result = compute(session, script, subject, has_objective=has_objective, finals=finals, override=override)
    if not result.complete:
        return result
    before = Fraction(script.total_num, script.total_den) if script.total_num is not None else None
    first_time = before is None
    if before == result.exact and script.total_rounded == str(result.rounded):
        return result
    total = {"total_num": result.exact.numerator, "total_den": result.exact.denominator,
             "total_rounded": str(result.rounded), "status": "complete"}
    # A statement of its own, and the ORM object told the committed values: set through
    # the ORM, the row went through a unit-of-work flush at the next query (twice the
    # Python time of the UPDATE, on every deciding read; issue 8).
    run_in(session, _SET_TOTAL, {"for_script": script.id, **total})
    for key, value in total.items():
        set_committed_value(script, key, value)
    ledger.append(session, actor_id=actor_id, action="script.totalled", entity="script", entity_id=script.id,
                  data={"before": ledger.score_text(before), "exact": ledger.score_text(result.exact),
                        "rounded": str(result.rounded), "rounding": subject.total_rounding,
                        "places": subject.total_places, "subject_id": subject.id},
                  reason=reason, at=now)
    events.publish(session, f"subject:{subject.id}", "script.totalled", {"subject_id": subject.id})
    if first_time:
        _pass_band_extra_reads(session, script, subject, result.exact)
    return result


def _pass_band_extra_reads(session: Session, script: Script, subject: Subject, total: Fraction) -> None:
    """★ Scripts whose total is within the band around the pass mark get an extra read."""
    from .dispatch import ensure_task

    if subject.pass_band_cp <= 0 or abs(total - from_cp(subject.pass_mark_cp)) > from_cp(subject.pass_band_cp):
        return
    responses = session.execute(
        select(Response).where(Response.script_id == script.id, Response.status == "resolved")
    ).scalars().all()
    for response in responses:
        ensure_task(session, response, "extra")
        events.publish(session, events.leader_topic(response.item_id), "extra.created",
                       {"item_id": response.item_id, "why": "pass_band"})


def crosses_pass_mark(subject: Subject, before: Decimal | None, after: Decimal | None) -> bool:
    if before is None or after is None:
        return False
    pass_mark = Decimal(subject.pass_mark_cp) / 100
    return (before >= pass_mark) != (after >= pass_mark)


# --------------------------------------------------------------------------- verify

@dataclass(frozen=True)
class Finding:
    script_id: int
    anon_code: str
    kind: str   # item_not_marked | unresolved | resolution_mismatch | total_missing | total_mismatch
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def verify_results(db, subject_code: str | None = None, *, session_code: str | None = None,
                   batch: int = 500) -> list[Finding]:
    """R-MARK-6, R-QC-1: every item score and every script total re-verified."""
    findings: list[Finding] = []
    with db.read() as session:
        subjects = ([find_subject(session, subject_code, session_code)] if subject_code
                    else session.execute(select(Subject).order_by(Subject.id)).scalars().all())
        for subject in subjects:
            last = 0
            while True:
                scripts = session.execute(
                    select(Script).where(Script.subject_id == subject.id, Script.id > last,
                                         Script.absent.is_(False), Script.status != "void")
                    .order_by(Script.id).limit(batch)
                ).scalars().all()
                if not scripts:
                    break
                last = scripts[-1].id
                findings.extend(_verify_scripts(session, subject, scripts))
    return findings


def _verify_scripts(session: Session, subject: Subject, scripts: list[Script]) -> list[Finding]:
    out: list[Finding] = []
    ids = [s.id for s in scripts]
    responses = session.execute(select(Response).where(Response.script_id.in_(ids))).scalars().all()
    latest_version = (select(Resolution.response_id, func.max(Resolution.version).label("v"))
                      .join(Response, Response.id == Resolution.response_id)
                      .where(Response.script_id.in_(ids)).group_by(Resolution.response_id).subquery())
    resolutions = {r.response_id: r for r in session.execute(
        select(Resolution).join(latest_version, (Resolution.response_id == latest_version.c.response_id)
                                & (Resolution.version == latest_version.c.v))).scalars()}
    items = {i.id: i.code for i in session.execute(
        select(Item).where(Item.subject_id == subject.id, Item.kind == "subjective")).scalars()}
    by_script: dict[int, dict[int, Response]] = {}
    for r in responses:
        by_script.setdefault(r.script_id, {})[r.item_id] = r
    for script in scripts:
        mine = by_script.get(script.id, {})
        problems_here = False
        for item_id, code in items.items():
            r = mine.get(item_id)
            if r is None:
                out.append(Finding(script.id, script.anon_code, "item_not_marked", f"item {code}: no response"))
                problems_here = True
            elif r.status != "resolved":
                kind = "item_not_marked" if r.status in ("pending", "marking") else "unresolved"
                out.append(Finding(script.id, script.anon_code, kind, f"item {code}: {r.status}"))
                problems_here = True
            else:
                res = resolutions.get(r.id)
                if res is None or (res.final_num, res.final_den) != (r.final_num, r.final_den):
                    out.append(Finding(script.id, script.anon_code, "resolution_mismatch",
                                       f"item {code}: final does not match its latest resolution"))
                    problems_here = True
        if problems_here:
            continue
        result = compute(session, script, subject)
        if not result.complete:
            out.append(Finding(script.id, script.anon_code, "item_not_marked",
                               f"missing: {', '.join(result.missing)}"))
        elif script.total_num is None:
            out.append(Finding(script.id, script.anon_code, "total_missing", "total not recorded"))
        elif Fraction(script.total_num, script.total_den) != result.exact or \
                script.total_rounded != str(result.rounded):
            out.append(Finding(script.id, script.anon_code, "total_mismatch",
                               f"recorded {script.total_rounded} ({script.total_num}/{script.total_den}), "
                               f"recomputed {result.rounded} ({ledger.score_text(result.exact)})"))
    return out
