"""Scanner batches: bookkeeping, exception register, ID corrections, assembly, reconciliation.

* R-OMR-1: a batch needs a passed trial run (:mod:`marking.trials`, read by
  :mod:`omr.trial`) for exactly its subject, template hash, recognition version and
  settings hash; it freezes its card template (content hash), recognition version and
  recognition-settings hash when it is created; results made with anything else are
  refused (:mod:`marking.omr_queue`), and changing a subject's template while one of
  its batches is live is refused (:func:`check_template_change`).
* R-OMR-3: every accepted page becomes a card with two reads on two nodes.
* R-OMR-5: a re-scan or transcription is a new card linked to its original
  (``card.rescan_of_id``); the original card, its image and its reads are kept.
* R-OMR-7: doubtful cards go to the ``omr_exception`` register; one technician
  proposes, a *second* one confirms (also a CHECK constraint); the reads are never
  altered, the accepted reading records the decision with before/after. A technical
  correction of non-answer data (a misread candidate number) goes to the
  ``id_correction`` register with before/after, confirmed by a second person.
* Assembly: accepted cards become scripts by candidate number (identity pages) and
  template page code (following pages attach to the identity page scanned before
  them); subjective item clips become ``response`` rows with their first marking
  tasks (R-SEC-1: clips carry no identity). Reconciliation compares with the roll.
"""
from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import events, ledger, templates
from .access import NotAllowed, active_user, require_role
from .candidates import candidate_number_problems
from .models import (Candidate, Card, CardTemplate, ExamSession, Item, OmrRead, OmrTrialRun, PageImage,
                     RegisterEntry, Registration, Response, ScanBatch, Script, Subject)
from .models.scanning import ItemClip
from .omr_compare import canonical, raise_exception, summarise
from .omr_queue import batch_topic, enqueue_reads, queue_status

TECH_ROLES = ("technician", "admin")
LIVE_STATUSES = ("ingesting", "reading", "review")
OMR_REGISTERS = ("omr_exception", "id_correction", "damaged_card", "rescan")
RESOLUTION_ACTIONS = ("accept", "void", "rescan")


class BatchError(ValueError):
    pass


class BatchFrozen(BatchError):
    """R-OMR-1: a live batch's template and recognition settings cannot change."""


class TwoPersonError(NotAllowed):
    """The same person may not propose and confirm (R-OMR-7)."""


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.timezone.utc)


def find_subject(session: Session, code: str) -> Subject:
    rows = session.execute(select(Subject).where(Subject.code == code)).scalars().all()
    if not rows:
        raise BatchError(f"no subject with code {code!r}")
    if len(rows) > 1:
        live = [s for s in rows if session.get(ExamSession, s.session_id).status != "closed"]
        if len(live) == 1:
            return live[0]
        raise BatchError(f"subject code {code!r} exists in several exam sessions")
    return rows[0]


# --------------------------------------------------------------------------- batch lifecycle

def create_batch(session: Session, subject: Subject, *, recognition_version: str, settings_hash: str,
                 scanner_id: str | None = None, code: str | None = None, actor_id: int | None = None,
                 now: dt.datetime | None = None) -> ScanBatch:
    """A new batch with the subject's card template frozen by hash (R-OMR-1).

    Refused (``BatchError``) unless a trial run passed for exactly this subject, card
    template hash, recognition version and settings hash (R-OMR-1: the equipment and
    the recognition system are tested before live reading).
    """
    if subject.card_template_id is None:
        raise BatchError(f"subject {subject.code} has no card template; import one with the exam spec")
    template = session.get(CardTemplate, subject.card_template_id)
    trial_id = passed_trial_id(session, subject, template_hash=template.content_hash,
                               recognition_version=recognition_version[:40], settings_hash=settings_hash)
    if trial_id is None:
        raise BatchError(
            f"R-OMR-1: no passed trial run of the recognition system for subject {subject.code} with card template "
            f"{template.content_hash[:12]}, recognition {recognition_version} and settings {settings_hash[:12]}; "
            f"before live reading a technician runs `marking-centre batch trial --subject {subject.code} --user NAME` "
            "(a synthetic deck, or --cards DIR --expected FILE for scanned test cards)")
    now = _now(now)
    if code is None:
        n = session.scalar(select(func.count()).select_from(ScanBatch).where(ScanBatch.subject_id == subject.id)) or 0
        code = f"{subject.code}-{now:%Y%m%d}-{n + 1:03d}"
    batch = ScanBatch(subject_id=subject.id, code=code[:40], scanner_id=scanner_id, status="ingesting",
                      card_template_id=template.id, template_hash=template.content_hash,
                      recognition_version=recognition_version[:40], settings_hash=settings_hash,
                      created_by=actor_id, created_at=now)
    session.add(batch)
    session.flush()
    ledger.append(session, actor_id=actor_id, action="batch.created", entity="scan_batch", entity_id=batch.id,
                  data={"code": batch.code, "subject": subject.code, "template_hash": batch.template_hash,
                        "recognition_version": batch.recognition_version, "settings_hash": settings_hash,
                        "scanner_id": scanner_id, "trial_run_id": trial_id})
    events.publish(session, batch_topic(batch.id), "batch.created", {"batch_id": batch.id, "code": batch.code})
    return batch


def passed_trial_id(session: Session, subject: Subject, *, template_hash: str, recognition_version: str,
                    settings_hash: str) -> int | None:
    """The latest passed trial run (R-OMR-1) for exactly these frozen values, or None."""
    return session.scalar(
        select(OmrTrialRun.id).where(OmrTrialRun.subject_id == subject.id, OmrTrialRun.template_hash == template_hash,
                                     OmrTrialRun.recognition_version == recognition_version,
                                     OmrTrialRun.settings_hash == settings_hash, OmrTrialRun.passed.is_(True))
        .order_by(OmrTrialRun.id.desc()).limit(1))


def check_template_change(session: Session, subject_id: int) -> None:
    """Refuse changing a subject's card template while a batch of it is live (R-OMR-1)."""
    live = session.scalar(select(ScanBatch.code).where(ScanBatch.subject_id == subject_id,
                                                       ScanBatch.status.in_(LIVE_STATUSES)).limit(1))
    if live:
        raise BatchFrozen(f"batch {live} is live: the card template and recognition settings are frozen "
                          "until it is closed (R-OMR-1)")


def change_batch_recognition(db, batch_id: int, *, template_hash: str | None = None,
                             settings_hash: str | None = None, recognition_version: str | None = None) -> None:
    """Always refused for a live batch (R-OMR-1); a closed batch is history and never edited either."""
    with db.read() as session:
        batch = session.get(ScanBatch, batch_id)
        if batch is None:
            raise BatchError(f"no batch {batch_id}")
        if batch.status in LIVE_STATUSES:
            raise BatchFrozen(f"batch {batch.code} is live ({batch.status}): its template, recognition version "
                              "and settings are frozen for its duration (R-OMR-1)")
        raise BatchFrozen(f"batch {batch.code} is closed; start a new batch to read with other settings")


def add_page(session: Session, batch: ScanBatch, *, source_name: str, source_page: int, sha256: str | None,
             width: int | None = None, height: int | None = None, reject_reason: str | None = None,
             rescan_of_id: int | None = None) -> tuple[PageImage, Card | None]:
    """Record one received page. Duplicates (same bytes already in this subject) are found here."""
    if reject_reason:
        page = PageImage(batch_id=batch.id, sha256=sha256, source_name=source_name[:400], source_page=source_page,
                         width=width, height=height, status="rejected", reject_reason=reject_reason[:200])
        session.add(page)
        session.flush()
        return page, None
    dup = session.execute(
        select(PageImage.id).join(ScanBatch, ScanBatch.id == PageImage.batch_id)
        .where(ScanBatch.subject_id == batch.subject_id, PageImage.sha256 == sha256,
               PageImage.status == "accepted").order_by(PageImage.id).limit(1)).scalar_one_or_none()
    if dup is not None:
        page = PageImage(batch_id=batch.id, sha256=sha256, source_name=source_name[:400], source_page=source_page,
                         width=width, height=height, status="duplicate", duplicate_of_id=dup)
        session.add(page)
        session.flush()
        return page, None
    page = PageImage(batch_id=batch.id, sha256=sha256, source_name=source_name[:400], source_page=source_page,
                     width=width, height=height, status="accepted")
    session.add(page)
    session.flush()
    card = Card(batch_id=batch.id, page_image_id=page.id, status="reading", rescan_of_id=rescan_of_id)
    session.add(card)
    session.flush()
    enqueue_reads(session, card)
    return page, card


def set_status(session: Session, batch: ScanBatch, status: str, *, now: dt.datetime | None = None) -> None:
    batch.status = status
    if status == "closed":
        batch.closed_at = _now(now)
    events.publish(session, batch_topic(batch.id), "batch.status", {"batch_id": batch.id, "status": status})


def batch_status(db, batch_id: int | None = None) -> dict[str, Any]:
    """The technicians' view of one batch (or all batches) plus the OMR queue and nodes."""
    with db.read() as session:
        query = select(ScanBatch).order_by(ScanBatch.id)
        if batch_id is not None:
            query = query.where(ScanBatch.id == batch_id)
        batches = []
        for b in session.execute(query).scalars():
            pages = dict(session.execute(select(PageImage.status, func.count()).where(PageImage.batch_id == b.id)
                                         .group_by(PageImage.status)).all())
            cards = dict(session.execute(select(Card.status, func.count()).where(Card.batch_id == b.id)
                                         .group_by(Card.status)).all())
            open_ex = session.scalar(select(func.count()).select_from(RegisterEntry).join(Card, Card.id == RegisterEntry.card_id)
                                     .where(Card.batch_id == b.id, RegisterEntry.register.in_(OMR_REGISTERS),
                                            RegisterEntry.status.in_(("open", "proposed"))))
            scripts = session.scalar(select(func.count()).select_from(Script).where(Script.batch_id == b.id))
            subject = session.get(Subject, b.subject_id)
            batches.append({"id": b.id, "code": b.code, "subject": subject.code, "status": b.status,
                            "scanner_id": b.scanner_id, "template_hash": b.template_hash,
                            "recognition_version": b.recognition_version, "settings_hash": b.settings_hash,
                            "manifest_sha256": b.manifest_sha256, "pages": pages, "cards": cards,
                            "open_exceptions": open_ex or 0, "scripts": scripts or 0,
                            "created_at": b.created_at.isoformat()})
    return {"batches": batches, "queue": queue_status(db, batch_id=batch_id)}


# --------------------------------------------------------------------------- exceptions

@dataclass(frozen=True)
class ExceptionView:
    entry_id: int
    register: str
    status: str
    reason: str
    card_id: int | None
    batch_id: int | None
    page_sha256: str | None
    detail: dict[str, Any]
    before: Any
    after: Any
    proposed_by: int | None
    confirmed_by: int | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def list_exceptions(db, *, batch_id: int | None = None, subject_code: str | None = None,
                    statuses: tuple[str, ...] = ("open", "proposed"),
                    registers: tuple[str, ...] = OMR_REGISTERS) -> list[ExceptionView]:
    with db.read() as session:
        query = (select(RegisterEntry, Card.batch_id, PageImage.sha256)
                 .join(Card, Card.id == RegisterEntry.card_id).join(PageImage, PageImage.id == Card.page_image_id)
                 .where(RegisterEntry.register.in_(registers), RegisterEntry.status.in_(statuses))
                 .order_by(RegisterEntry.id))
        if batch_id is not None:
            query = query.where(Card.batch_id == batch_id)
        if subject_code is not None:
            query = query.join(ScanBatch, ScanBatch.id == Card.batch_id).where(
                ScanBatch.subject_id == find_subject(session, subject_code).id)
        out = []
        for entry, b_id, sha in session.execute(query).all():
            out.append(ExceptionView(entry.id, entry.register, entry.status, entry.reason_code, entry.card_id, b_id,
                                     sha, json.loads(entry.detail or "{}"),
                                     json.loads(entry.before) if entry.before else None,
                                     json.loads(entry.after) if entry.after else None,
                                     entry.proposed_by, entry.confirmed_by))
        return out


def _tech(session: Session, user_id: int):
    user = active_user(session, user_id)
    require_role(user, *TECH_ROLES)
    return user


def _entry(session: Session, entry_id: int, registers: tuple[str, ...]) -> RegisterEntry:
    entry = session.execute(select(RegisterEntry).where(RegisterEntry.id == entry_id).with_for_update()
                            .execution_options(populate_existing=True)).scalar_one_or_none()
    if entry is None or entry.register not in registers:
        raise BatchError(f"no {'/'.join(registers)} register entry {entry_id}")
    return entry


def _current_reading(session: Session, card: Card) -> dict[str, Any]:
    """The accepted reading, else what read 1 (or read 2) said."""
    if card.accepted_reading:
        return json.loads(card.accepted_reading)
    for read in session.execute(select(OmrRead).where(OmrRead.card_id == card.id, OmrRead.status == "done")
                                .order_by(OmrRead.read_no)).scalars():
        summary = summarise(json.loads(read.result))
        if "error" not in summary:
            return summary
    return {"page": card.page_code, "candidate_number": None, "subject_code": None, "absent": False,
            "answers": {}, "states": {}}


def propose_resolution(db, entry_id: int, user_id: int, resolution: dict[str, Any], *, note: str = "",
                       now: dt.datetime | None = None) -> None:
    """One technician proposes how an OMR exception is resolved (R-OMR-7).

    ``resolution``: ``{"action": "accept", "answers": {"12": "B", …}, "candidate_number": "…",
    "absent": false, "page": 1}`` (fields not given keep the reading's value: only what
    the people saw on the card image), ``{"action": "void"}`` (not a candidate's page),
    or ``{"action": "rescan", "rescan_card_id": N}`` (superseded by a re-scan, R-OMR-5).
    """
    action = resolution.get("action")
    if action not in RESOLUTION_ACTIONS:
        raise BatchError(f"action must be one of {', '.join(RESOLUTION_ACTIONS)}")

    def work(session: Session) -> None:
        _tech(session, user_id)
        entry = _entry(session, entry_id, ("omr_exception", "damaged_card", "rescan"))
        if entry.status not in ("open", "proposed"):
            raise BatchError(f"entry {entry_id} is {entry.status}; nothing to propose")
        card = session.get(Card, entry.card_id)
        before = _current_reading(session, card)
        after: dict[str, Any] = {"action": action, "note": note[:400]}
        if action == "accept":
            answers = resolution.get("answers") or {}
            unknown = set(answers) - set(before.get("answers", {}))
            if unknown and before.get("answers"):
                raise BatchError(f"items {', '.join(sorted(unknown))} are not on this card")
            for code, value in answers.items():
                if not isinstance(value, str) or (value and not value.isalpha()):
                    raise BatchError(f"item {code}: give the filled options as letters, e.g. 'AC' or '' for blank")
            merged = dict(before)
            merged["answers"] = {**before.get("answers", {}), **{k: "".join(sorted(v.upper())) for k, v in answers.items()}}
            for key in ("candidate_number", "absent", "page", "subject_code"):
                if key in resolution:
                    merged[key] = resolution[key]
            if merged.get("candidate_number"):
                problems = candidate_number_problems(str(merged["candidate_number"]))
                if problems:
                    raise BatchError("candidate number: " + "; ".join(problems) + " (R-OMR-8)")
            after["reading"] = merged
        elif action == "rescan":
            new_id = resolution.get("rescan_card_id")
            new_card = session.get(Card, new_id) if new_id else None
            if new_card is None or new_card.rescan_of_id != card.id:
                raise BatchError("rescan_card_id must name the card re-scanned from this one (R-OMR-5)")
            after["rescan_card_id"] = new_card.id
        entry.before = canonical(before)
        entry.after = canonical(after)
        entry.proposed_by = user_id
        entry.confirmed_by = None
        entry.status = "proposed"
        ledger.append(session, actor_id=user_id, action="omr.exception_proposed", entity="register_entry",
                      entity_id=entry.id, data={"card_id": card.id, "action": action, "after": after})
        events.publish(session, batch_topic(card.batch_id), "exception.proposed", {"entry_id": entry.id})

    db.run(work, retry_integrity=False)


def confirm_resolution(db, entry_id: int, user_id: int, *, now: dt.datetime | None = None) -> str:
    """A second technician confirms; the card's accepted reading records the decision."""
    now = _now(now)

    def work(session: Session) -> str:
        _tech(session, user_id)
        entry = _entry(session, entry_id, ("omr_exception", "damaged_card", "rescan"))
        if entry.status != "proposed" or not entry.after:
            raise BatchError(f"entry {entry_id} has no proposal to confirm")
        if entry.proposed_by == user_id:
            raise TwoPersonError("the proposer cannot also confirm: a second technician must (R-OMR-7)")
        after = json.loads(entry.after)
        card = session.execute(select(Card).where(Card.id == entry.card_id).with_for_update()).scalar_one()
        if after["action"] == "accept":
            reading = dict(after["reading"])
            reading["source"] = "resolution"
            reading["register_entry"] = entry.id
            card.accepted_reading = canonical(reading)
            if reading.get("page") is not None:
                card.page_code = int(reading["page"])
            card.status = "resolved"
        else:
            card.status = "void"   # its image and reads are kept for inspection (R-OMR-5)
        entry.confirmed_by = user_id
        entry.decided_by = user_id
        entry.decided_at = now
        entry.status = "confirmed"
        ledger.append(session, actor_id=user_id, action="omr.exception_confirmed", entity="register_entry",
                      entity_id=entry.id, data={"card_id": card.id, "action": after["action"],
                                                "proposed_by": entry.proposed_by})
        events.publish(session, batch_topic(card.batch_id), "exception.confirmed", {"entry_id": entry.id})
        return after["action"]

    return db.run(work, retry_integrity=False)


def propose_id_correction(db, card_id: int, user_id: int, candidate_number: str, *, note: str = "") -> int:
    """R-OMR-7: a technical correction of non-answer data, registered with before/after."""
    problems = candidate_number_problems(candidate_number)
    if problems:
        raise BatchError("; ".join(problems) + " (R-OMR-8)")

    def work(session: Session) -> int:
        _tech(session, user_id)
        card = session.get(Card, card_id)
        if card is None or card.status not in ("agreed", "resolved", "exception"):
            raise BatchError(f"card {card_id} has no reading to correct")
        current = _current_reading(session, card)
        entry = RegisterEntry(register="id_correction", status="proposed", reason_code="candidate_number",
                              card_id=card.id, script_id=card.script_id, raised_by=user_id, proposed_by=user_id,
                              before=canonical({"candidate_number": current.get("candidate_number")}),
                              after=canonical({"candidate_number": candidate_number}),
                              detail=canonical({"note": note[:400]}))
        session.add(entry)
        session.flush()
        ledger.append(session, actor_id=user_id, action="omr.id_correction_proposed", entity="register_entry",
                      entity_id=entry.id, reason="id_correction",
                      data={"card_id": card.id, "before": current.get("candidate_number"), "after": candidate_number})
        return entry.id

    return db.run(work, retry_integrity=False)


def confirm_id_correction(db, entry_id: int, user_id: int, *, now: dt.datetime | None = None) -> None:
    now = _now(now)

    def work(session: Session) -> None:
        _tech(session, user_id)
        entry = _entry(session, entry_id, ("id_correction",))
        if entry.status != "proposed":
            raise BatchError(f"entry {entry_id} is {entry.status}")
        if entry.proposed_by == user_id:
            raise TwoPersonError("an ID correction needs a second person to confirm it (R-OMR-7)")
        card = session.execute(select(Card).where(Card.id == entry.card_id).with_for_update()).scalar_one()
        after = json.loads(entry.after)
        reading = _current_reading(session, card)
        reading["candidate_number"] = after["candidate_number"]
        reading["id_correction"] = entry.id
        card.accepted_reading = canonical(reading)
        if card.status == "agreed":
            card.status = "resolved"
        card.script_id = None  # re-assembled under the corrected number
        # Open unknown/duplicate-candidate exceptions of this card are settled by this correction.
        for other in session.execute(select(RegisterEntry).where(
                RegisterEntry.card_id == card.id, RegisterEntry.register == "omr_exception",
                RegisterEntry.status == "open",
                RegisterEntry.reason_code.in_(("unknown_candidate", "duplicate_candidate")))).scalars():
            other.status = "closed"
            other.decided_by = user_id
            other.decided_at = now
            other.after = canonical({"closed_by_id_correction": entry.id})
        if card.status == "exception" and card.accepted_reading:
            card.status = "resolved"
        entry.confirmed_by = user_id
        entry.decided_by = user_id
        entry.decided_at = now
        entry.status = "confirmed"
        ledger.append(session, actor_id=user_id, action="omr.id_correction_confirmed", entity="register_entry",
                      entity_id=entry.id, reason="id_correction",
                      data={"card_id": card.id, "before": json.loads(entry.before).get("candidate_number"),
                            "after": after["candidate_number"], "proposed_by": entry.proposed_by})

    db.run(work, retry_integrity=False)


# --------------------------------------------------------------------------- assembly

def identity_pages(template_body: dict[str, Any]) -> set[int]:
    """Page codes that carry the candidate number grid (the card template's own JSON)."""
    return {int(p["code"]) for p in template_body.get("pages", []) if p.get("candidate_number")}


def _anon_code() -> str:
    return "A" + secrets.token_hex(8).upper()


def settle_batch(db, batch_id: int, *, actor_id: int | None = None, now: dt.datetime | None = None,
                 open_tasks: Callable | None = None) -> dict[str, Any]:
    """Assemble accepted cards into scripts, create responses from item clips, reconcile.

    Safe to run again (only unassigned cards and missing responses are handled). Pages
    without a candidate-number grid attach to the identity page scanned just before them.
    """
    now = _now(now)
    if open_tasks is None:
        from .dispatch import open_tasks_for_response as open_tasks

    def work(session: Session) -> dict[str, Any]:
        batch = session.execute(select(ScanBatch).where(ScanBatch.id == batch_id).with_for_update()).scalar_one()
        subject = session.get(Subject, batch.subject_id)
        exam = session.get(ExamSession, subject.session_id)
        template = json.loads(session.get(CardTemplate, batch.card_template_id).body)
        id_pages = identity_pages(template)
        page_codes = {int(p["code"]) for p in template.get("pages", [])}
        cards = session.execute(select(Card).join(PageImage, PageImage.id == Card.page_image_id)
                                .where(Card.batch_id == batch.id).order_by(PageImage.id)).scalars().all()
        registered = {no: cid for no, cid in session.execute(
            select(Candidate.candidate_no, Candidate.id).join(Registration, Registration.candidate_id == Candidate.id)
            .where(Registration.subject_id == subject.id, Candidate.session_id == exam.id)).all()}
        open_reasons = {(e.card_id, e.reason_code) for e in session.execute(
            select(RegisterEntry).where(RegisterEntry.register == "omr_exception",
                                        RegisterEntry.status.in_(("open", "proposed")),
                                        RegisterEntry.card_id.in_([c.id for c in cards] or [0]))).scalars()}

        def flag(card: Card, reason: str, detail: dict[str, Any]) -> None:
            if (card.id, reason) not in open_reasons:
                raise_exception(session, card, reason, detail, before=json.loads(card.accepted_reading or "null"))
                open_reasons.add((card.id, reason))

        DEFER = object()   # the identity page before is not settled yet: following pages wait
        current: Any = None
        touched: set[int] = set()
        assigned = 0
        for card in cards:
            if card.status not in ("agreed", "resolved") or not card.accepted_reading:
                if card.status != "void":
                    current = DEFER   # an unsettled page: the pages after it wait for its decision
                continue
            reading = json.loads(card.accepted_reading)
            page = reading.get("page") or card.page_code
            if page not in page_codes:
                flag(card, "unknown_page", {"page": page})
                current = DEFER
                continue
            if card.script_id is not None:
                current = session.get(Script, card.script_id) if page in id_pages else current
                continue
            if page in id_pages:
                number = reading.get("candidate_number")
                cand_id = registered.get(number) if number else None
                if cand_id is None:
                    flag(card, "unknown_candidate", {"candidate_number": number,
                                                     "why": "not on the roll for this subject" if number else "no number"})
                    current = DEFER
                    continue
                script = session.execute(select(Script).where(Script.subject_id == subject.id,
                                                              Script.candidate_id == cand_id)).scalar_one_or_none()
                if script is None:
                    script = Script(subject_id=subject.id, candidate_id=cand_id, batch_id=batch.id,
                                    anon_code=_anon_code(), status="scanned", absent=bool(reading.get("absent")))
                    session.add(script)
                    session.flush()
                else:
                    clash = session.scalar(select(Card.id).where(Card.script_id == script.id, Card.page_code == page,
                                                                 Card.status.in_(("agreed", "resolved"))).limit(1))
                    if clash is not None:
                        flag(card, "duplicate_candidate", {"candidate_number": number, "other_card_id": clash})
                        current = DEFER
                        continue
                script.absent = bool(reading.get("absent"))
                card.script_id = script.id
                card.page_code = page
                current = script
            else:
                if current is DEFER:
                    continue
                if current is None:
                    flag(card, "orphan_page", {"page": page, "why": "no identity page scanned before it"})
                    continue
                clash = session.scalar(select(Card.id).where(Card.script_id == current.id, Card.page_code == page,
                                                             Card.status.in_(("agreed", "resolved"))).limit(1))
                if clash is not None:
                    flag(card, "duplicate_page", {"page": page, "other_card_id": clash})
                    continue
                card.script_id = current.id
                card.page_code = page
            assigned += 1
            touched.add(card.script_id)

        responses = _make_responses(session, subject, batch, open_tasks)
        pending = session.scalar(select(func.count()).select_from(Card).where(Card.batch_id == batch.id,
                                                                           Card.status == "reading"))
        open_ex = session.scalar(select(func.count()).select_from(RegisterEntry).join(Card, Card.id == RegisterEntry.card_id)
                                 .where(Card.batch_id == batch.id, RegisterEntry.status.in_(("open", "proposed"))))
        status = "reading" if pending else ("review" if open_ex else "closed")
        if batch.status != status and batch.status != "ingesting":
            set_status(session, batch, status, now=now)
        result = {"batch_id": batch.id, "assigned_cards": assigned, "responses_created": responses,
                  "cards_reading": pending, "open_exceptions": open_ex, "status": batch.status}
        ledger.append(session, actor_id=actor_id, action="batch.settled", entity="scan_batch", entity_id=batch.id,
                      data={k: v for k, v in result.items() if k != "batch_id"})
        events.publish(session, batch_topic(batch.id), "batch.settled", result)
        return result

    return db.run(work)


def _make_responses(session: Session, subject: Subject, batch: ScanBatch, open_tasks) -> int:
    """One response per (script, subjective item) from the clips of the script's cards."""
    items = session.execute(select(Item).where(Item.subject_id == subject.id, Item.kind == "subjective")
                            .order_by(Item.ordinal)).scalars().all()
    if not items:
        return 0
    rows = session.execute(
        select(Script, ItemClip).join(Card, Card.script_id == Script.id).join(ItemClip, ItemClip.card_id == Card.id)
        .where(Script.subject_id == subject.id, Card.batch_id == batch.id, Script.absent.is_(False),
               Card.status.in_(("agreed", "resolved")))).all()
    have = {(s, i) for s, i in session.execute(
        select(Response.script_id, Response.item_id).join(Script, Script.id == Response.script_id)
        .where(Script.subject_id == subject.id)).all()}
    by_code = {i.code: i for i in items}
    created = 0
    for script, clip in rows:
        item = by_code.get(clip.item_code)
        if item is None or (script.id, item.id) in have:
            continue
        response = Response(script_id=script.id, item_id=item.id, image_sha256=clip.sha256,
                            ink_density_pm=clip.ink_density_pm, preflags=clip.preflags, status="pending")
        session.add(response)
        session.flush()
        open_tasks(session, response, item)
        have.add((script.id, item.id))
        if script.status == "scanned":
            script.status = "marking"
        created += 1
        events.publish(session, f"item:{item.id}", "response.new", {"item_id": item.id})
    return created


def reconcile(db, subject_code: str) -> dict[str, Any]:
    """Expected (the roll) vs received (scripts): missing, absent, unknown, incomplete."""
    with db.read() as session:
        subject = find_subject(session, subject_code)
        template = json.loads(session.get(CardTemplate, subject.card_template_id).body) \
            if subject.card_template_id else {"pages": []}
        all_pages = {int(p["code"]) for p in template.get("pages", [])}
        expected = dict(session.execute(
            select(Candidate.id, Candidate.candidate_no).join(Registration, Registration.candidate_id == Candidate.id)
            .where(Registration.subject_id == subject.id)).all())
        scripts = session.execute(select(Script).where(Script.subject_id == subject.id)).scalars().all()
        received = {s.candidate_id for s in scripts}
        pages_of: dict[int, set[int]] = {}
        for sid, page in session.execute(select(Card.script_id, Card.page_code).join(Script, Script.id == Card.script_id)
                                         .where(Script.subject_id == subject.id,
                                                Card.status.in_(("agreed", "resolved")))).all():
            pages_of.setdefault(sid, set()).add(page)
        unknown = session.execute(
            select(RegisterEntry.card_id, RegisterEntry.detail).join(Card, Card.id == RegisterEntry.card_id)
            .join(ScanBatch, ScanBatch.id == Card.batch_id)
            .where(ScanBatch.subject_id == subject.id, RegisterEntry.reason_code == "unknown_candidate",
                   RegisterEntry.status.in_(("open", "proposed")))).all()
        duplicates = session.scalar(
            select(func.count()).select_from(PageImage).join(ScanBatch, ScanBatch.id == PageImage.batch_id)
            .where(ScanBatch.subject_id == subject.id, PageImage.status == "duplicate"))
        rejected = session.scalar(
            select(func.count()).select_from(PageImage).join(ScanBatch, ScanBatch.id == PageImage.batch_id)
            .where(ScanBatch.subject_id == subject.id, PageImage.status == "rejected"))
        by_id = {s.id: s for s in scripts}
        return {
            "subject": subject.code,
            "expected": len(expected),
            "received": len(received & set(expected)),
            "missing": sorted(no for cid, no in expected.items() if cid not in received),
            "absent": sorted(expected.get(s.candidate_id, "?") for s in scripts if s.absent),
            "unknown_candidates": [{"card_id": cid, **json.loads(d)} for cid, d in unknown],
            "incomplete": sorted(expected.get(by_id[sid].candidate_id, "?") for sid in by_id
                                 if not by_id[sid].absent and pages_of.get(sid, set()) != all_pages),
            "duplicate_pages": duplicates or 0,
            "rejected_pages": rejected or 0,
        }


def attach_template(db, subject_code: str, body: dict[str, Any], *, actor_id: int | None = None) -> int:
    """Give a subject its card template (refused while a batch of it is live, R-OMR-1)."""
    digest = templates.template_hash(body)

    def work(session: Session) -> int:
        subject = find_subject(session, subject_code)
        row = session.scalar(select(CardTemplate).where(CardTemplate.content_hash == digest))
        if subject.card_template_id is not None and (row is None or row.id != subject.card_template_id):
            check_template_change(session, subject.id)
        row = templates.store_template(session, body)
        if subject.card_template_id != row.id:
            subject.card_template_id = row.id
            ledger.append(session, actor_id=actor_id, action="subject.card_template", entity="subject",
                          entity_id=subject.id, data={"template": row.code, "version": row.version,
                                                      "content_hash": digest})
        return row.id

    return db.run(work, retry_integrity=False)
