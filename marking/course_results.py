"""Course results (R-PROC-1 … R-PROC-3): process scores, composite, pass rules, CSV export.

* A process (formative) score is imported once per candidate and course
  (UNIQUE(candidate_id, subject_id)); once confirmed it is permanent and changes
  only through :func:`request_process_change` + a second person's approval.
* Open university: X = Σ xᵢ·kᵢ over the forms of formative work (``process_part``,
  weights in ‰ summing to 1000), computed exactly; the stored ``score_cp`` is X
  rounded half-up to the hundredth for display, the composite uses the exact X.
* Composite Z = X·k + Y·(1−k) with k = ``Subject.process_weight_pm``/1000 (≤ 300 ‰ for
  self-taught sessions) and Y the recorded (once-rounded) exam total; Z is exact and
  rounded once with the subject's rule. No process weight → Z = Y.
* Pass: Z ≥ pass mark (60); for a double-pass course also Y ≥ 60.
* A process score ≥ 60 stays valid for later sittings: :func:`carry_forward` copies a
  confirmed score ≥ 60 into the later sitting's candidate and course, recording the
  source in the ledger (the authority identifies the person across sittings).
"""
from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import ledger
from .access import NotAllowed, active_user, require_role
from .centre_time import now_or
from .models import Candidate, ExamSession, ProcessScore, Script, Subject
from .models.work import ProcessPart, ProcessScoreChange
from .scores import format_points, from_cp, parse_points, round_total, to_cp
from .totals import find_subject

SELF_TAUGHT_MAX_WEIGHT_PM = 300
PASS_CP = 6000
IMPORT_ROLES = ("authority_officer", "admin")


class ProcessScoreExists(ValueError):
    """R-PROC-3: a process score is submitted once per candidate and course."""


def _half_up_cp(points: Fraction) -> int:
    return int(round_total(points * 100, "half_up", 0))


def import_process_score(db, actor_id: int, *, candidate_id: int, subject_id: int, score=None,
                         parts: Iterable[tuple[str, str | int | Fraction, int]] | None = None,
                         confirm: bool = False, now: dt.datetime | None = None) -> int:
    """Import one process score (or its parts: (name, score, weight ‰)); returns its id."""
    now = now_or(now)
    parts = list(parts or [])
    if (score is None) == (not parts):
        raise ValueError("give either score or parts")

    def fn(session: Session) -> int:
        actor = active_user(session, actor_id)
        require_role(actor, *IMPORT_ROLES)
        if session.execute(select(ProcessScore.id).where(ProcessScore.candidate_id == candidate_id,
                                                         ProcessScore.subject_id == subject_id)).first():
            raise ProcessScoreExists("a process score for this candidate and course already exists (R-PROC-3)")
        data = {"candidate_id": candidate_id, "subject_id": subject_id, "confirmed": confirm}
        if parts:
            if sum(w for _n, _s, w in parts) != 1000:
                raise ValueError("formative part weights must sum to 1000 ‰")
            exact = Fraction(0)
            for name, part_score, weight in parts:
                cp = to_cp(parse_points(part_score) if not isinstance(part_score, Fraction) else part_score)
                session.add(ProcessPart(candidate_id=candidate_id, subject_id=subject_id, part=name,
                                        score_cp=cp, weight_pm=weight, imported_by=actor.id, imported_at=now))
                exact += from_cp(cp) * Fraction(weight, 1000)
            score_cp = _half_up_cp(exact)
            data["parts"] = [[n, str(s), w] for n, s, w in parts]
            data["exact"] = ledger.score_text(exact)
        else:
            score_cp = to_cp(parse_points(score) if not isinstance(score, Fraction) else score)
        if not 0 <= score_cp <= 10000:
            raise ValueError("a process score is on a 100-point scale")
        row = ProcessScore(candidate_id=candidate_id, subject_id=subject_id, score_cp=score_cp,
                           confirmed=confirm, imported_by=actor.id, imported_at=now)
        session.add(row)
        session.flush()
        data["score"] = ledger.score_text(from_cp(score_cp))
        ledger.append(session, actor_id=actor.id, action="process_score.imported", entity="process_score",
                      entity_id=row.id, data=data, reason="process_score", at=now)
        return row.id

    return db.run(fn, retry_integrity=False)


def confirm_process_score(db, actor_id: int, process_score_id: int, *, now: dt.datetime | None = None) -> None:
    now = now_or(now)

    def fn(session: Session) -> None:
        actor = active_user(session, actor_id)
        require_role(actor, *IMPORT_ROLES)
        row = session.get(ProcessScore, process_score_id)
        if row.confirmed:
            return
        row.confirmed = True
        ledger.append(session, actor_id=actor.id, action="process_score.confirmed", entity="process_score",
                      entity_id=row.id, data={"score": ledger.score_text(from_cp(row.score_cp))},
                      reason="process_score", at=now)

    db.run(fn)


def request_process_change(db, actor_id: int, process_score_id: int, new_score, reason_code: str, *,
                           note: str = "", now: dt.datetime | None = None) -> ProcessScoreChange:
    """An unconfirmed score changes at once; a confirmed one waits for approval (R-PROC-3)."""
    if reason_code not in ledger.REASON_CODES:
        raise ValueError(f"unknown reason code {reason_code!r}")
    now = now_or(now)

    def fn(session: Session) -> ProcessScoreChange:
        actor = active_user(session, actor_id)
        require_role(actor, *IMPORT_ROLES)
        row = session.execute(select(ProcessScore).where(ProcessScore.id == process_score_id).with_for_update()
                              .execution_options(populate_existing=True)).scalar_one()
        after = to_cp(parse_points(new_score) if not isinstance(new_score, Fraction) else new_score)
        change = ProcessScoreChange(process_score_id=row.id, before_cp=row.score_cp, after_cp=after,
                                    reason_code=reason_code, note=note[:400], requested_by=actor.id,
                                    requested_at=now, status="pending" if row.confirmed else "applied")
        session.add(change)
        session.flush()
        data = {"change_id": change.id, "before": ledger.score_text(from_cp(row.score_cp)),
                "after": ledger.score_text(from_cp(after)), "confirmed": row.confirmed}
        ledger.append(session, actor_id=actor.id, action="process_score.change_requested",
                      entity="process_score", entity_id=row.id, data=data, reason=reason_code, at=now)
        if not row.confirmed:
            row.score_cp = after
            change.decided_at = now
        return change

    return db.run(fn, retry_integrity=False)


def decide_process_change(db, approver_id: int, change_id: int, approve: bool, *,
                          now: dt.datetime | None = None) -> ProcessScoreChange:
    now = now_or(now)

    def fn(session: Session) -> ProcessScoreChange:
        approver = active_user(session, approver_id)
        require_role(approver, "authority_officer")
        change = session.execute(select(ProcessScoreChange).where(ProcessScoreChange.id == change_id)
                                 .with_for_update()).scalar_one()
        if change.status != "pending":
            raise ValueError(f"process score change {change_id} is {change.status}")
        if change.requested_by == approver.id:
            raise NotAllowed("the requester cannot approve their own change")
        row = session.execute(select(ProcessScore).where(ProcessScore.id == change.process_score_id)
                              .with_for_update().execution_options(populate_existing=True)).scalar_one()
        if row.score_cp != change.before_cp:
            raise ValueError("the process score changed since the request; request again")
        change.approved_by, change.decided_at = approver.id, now
        change.status = "applied" if approve else "rejected"
        if approve:
            row.score_cp = change.after_cp
        ledger.append(session, actor_id=approver.id, action="process_score.change_decided",
                      entity="process_score", entity_id=row.id, reason="authority_approval",
                      data={"change_id": change.id, "approved": bool(approve),
                            "score": ledger.score_text(from_cp(row.score_cp))}, at=now)
        return change

    return db.run(fn, retry_integrity=False)


def carry_forward(db, actor_id: int, from_process_score_id: int, *, to_candidate_id: int, to_subject_id: int,
                  now: dt.datetime | None = None) -> int:
    """R-PROC-2: a confirmed process score ≥ 60 stays valid in a later sitting of the same course."""
    now = now_or(now)

    def fn(session: Session) -> int:
        actor = active_user(session, actor_id)
        require_role(actor, *IMPORT_ROLES)
        src = session.get(ProcessScore, from_process_score_id)
        if src is None or not src.confirmed or src.score_cp < PASS_CP:
            raise ValueError("only a confirmed process score of at least 60 carries forward")
        if session.get(Subject, src.subject_id).code != session.get(Subject, to_subject_id).code:
            raise ValueError("a process score carries forward only to the same course")
        if session.execute(select(ProcessScore.id).where(ProcessScore.candidate_id == to_candidate_id,
                                                         ProcessScore.subject_id == to_subject_id)).first():
            raise ProcessScoreExists("the later sitting already has a process score")
        row = ProcessScore(candidate_id=to_candidate_id, subject_id=to_subject_id, score_cp=src.score_cp,
                           confirmed=True, imported_by=actor.id, imported_at=now)
        session.add(row)
        session.flush()
        ledger.append(session, actor_id=actor.id, action="process_score.carried_forward", entity="process_score",
                      entity_id=row.id, reason="process_score",
                      data={"from": src.id, "score": ledger.score_text(from_cp(src.score_cp))}, at=now)
        return row.id

    return db.run(fn, retry_integrity=False)


# --------------------------------------------------------------------------- composite

@dataclass(frozen=True)
class CourseResult:
    exam: Decimal | None
    process: Fraction | None
    weight_pm: int | None
    composite_exact: Fraction | None
    composite: Decimal | None
    passed: bool | None
    note: str = ""


def composite(*, exam: Decimal | None, process: Fraction | None, weight_pm: int | None, session_kind: str,
              double_pass: bool, pass_cp: int = PASS_CP, rounding: str = "half_up",
              places: int = 0) -> CourseResult:
    """Pure: Z = X·k + Y·(1−k), rounded once; pass rules R-PROC-2."""
    if weight_pm is not None and session_kind == "self_taught" and weight_pm > SELF_TAUGHT_MAX_WEIGHT_PM:
        raise ValueError("R-PROC-1: the process weight of a self-taught course is at most 300 ‰")
    if exam is None:
        return CourseResult(None, process, weight_pm, None, None, None, "exam score not final")
    y = Fraction(exam)
    if weight_pm is None or weight_pm == 0:
        z, note = y, "exam only"
    elif process is None:
        return CourseResult(exam, None, weight_pm, None, None, None, "process score missing")
    else:
        k = Fraction(weight_pm, 1000)
        z, note = process * k + y * (1 - k), "composite"
    rounded = round_total(z, rounding, places)
    pass_mark = Decimal(pass_cp) / 100
    passed = rounded >= pass_mark and (not double_pass or Decimal(exam) >= pass_mark)
    if double_pass and Decimal(exam) < pass_mark:
        note += "; double pass: exam below 60"
    return CourseResult(exam, process, weight_pm, z, rounded, passed, note)


def _process_exact(session: Session, candidate_id: int, subject_id: int) -> Fraction | None:
    parts = session.execute(select(ProcessPart.score_cp, ProcessPart.weight_pm)
                            .where(ProcessPart.candidate_id == candidate_id,
                                   ProcessPart.subject_id == subject_id)).all()
    row = session.execute(select(ProcessScore).where(ProcessScore.candidate_id == candidate_id,
                                                     ProcessScore.subject_id == subject_id)).scalar_one_or_none()
    if row is None:
        return None
    if parts and sum(w for _c, w in parts) == 1000 and _half_up_cp(
            sum((from_cp(c) * Fraction(w, 1000) for c, w in parts), Fraction(0))) == row.score_cp:
        return sum((from_cp(c) * Fraction(w, 1000) for c, w in parts), Fraction(0))
    return from_cp(row.score_cp)


def course_result(session: Session, script: Script) -> CourseResult:
    subject = session.get(Subject, script.subject_id)
    kind = session.get(ExamSession, subject.session_id).kind
    exam = Decimal(script.total_rounded) if script.total_rounded is not None else None
    process = _process_exact(session, script.candidate_id, subject.id) if script.candidate_id else None
    return composite(exam=exam, process=process, weight_pm=subject.process_weight_pm, session_kind=kind,
                     double_pass=subject.double_pass, pass_cp=subject.pass_mark_cp, rounding=subject.total_rounding, places=subject.total_places)


CSV_COLUMNS = ["candidate_no", "subject_code", "objective", "exam_total", "process", "process_weight_pm",
               "composite", "passed", "double_pass", "note"]


def export_csv(db, subject_code: str, out: Path | str | io.TextIOBase, *, session_code: str | None = None,
               actor_id: int | None = None) -> int:
    """Write one row per script of the subject; returns the number of rows."""
    with db.read() as session:
        if actor_id is not None:
            require_role(active_user(session, actor_id), "authority_officer", "admin")
        subject = find_subject(session, subject_code, session_code)
        rows = session.execute(
            select(Script, Candidate.candidate_no).join(Candidate, Candidate.id == Script.candidate_id, isouter=True)
            .where(Script.subject_id == subject.id).order_by(Candidate.candidate_no, Script.id)
        ).all()
        lines = []
        for script, candidate_no in rows:
            result = course_result(session, script)
            lines.append([
                candidate_no or "", subject.code,
                "" if script.objective_cp is None else str(Decimal(script.objective_cp) / 100),
                "" if result.exam is None else str(result.exam),
                "" if result.process is None else format_points(result.process),
                "" if result.weight_pm is None else str(result.weight_pm),
                "" if result.composite is None else str(result.composite),
                "" if result.passed is None else ("yes" if result.passed else "no"),
                "yes" if subject.double_pass else "no", result.note,
            ])
    handle = out if hasattr(out, "write") else open(out, "w", newline="", encoding="utf-8")
    try:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(lines)
    finally:
        if handle is not out:
            handle.close()
    return len(lines)
