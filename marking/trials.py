"""R-OMR-1 trial runs: the record of testing the recognition system before live reading.

The reading itself is image work and lives in :mod:`omr.trial` (``marking`` never
imports ``omr``); this module records what a trial found. A live batch needs a
*passed* trial for exactly its subject, card-template hash, recognition version and
recognition-settings hash (:func:`marking.batches.passed_trial_id`, checked by
:func:`marking.batches.create_batch`).

A trial record is history: it is written once, with a ledger entry
(``omr.trial_run``) carrying the SHA-256 of its full report, and never edited.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import ledger
from .access import active_user, require_role
from .batches import TECH_ROLES, BatchError, find_subject, passed_trial_id
from .models import CardTemplate, OmrTrialRun, Subject
from .models.scanning import TRIAL_SOURCES
from .omr_compare import canonical

@dataclass(frozen=True)
class TrialRecord:
    id: int
    subject: str
    template_hash: str
    recognition_version: str
    settings_hash: str
    source: str
    cards_read: int
    mismatches: int
    cards_failed: int
    passed: bool
    report_sha256: str
    run_by: int
    started_at: dt.datetime
    finished_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _record(row: OmrTrialRun, subject_code: str) -> TrialRecord:
    return TrialRecord(row.id, subject_code, row.template_hash, row.recognition_version, row.settings_hash,
                       row.source, row.cards_read, row.mismatches, row.cards_failed, bool(row.passed),
                       row.report_sha256, row.run_by, row.started_at, row.finished_at)


def subject_template(db, subject_code: str, actor_id: int) -> tuple[str, str, str]:
    """(subject code, card template body JSON, its content hash) for a trial of the subject
    run by ``actor_id`` (a technician: refused before any card is read otherwise)."""
    with db.read() as session:
        require_role(active_user(session, actor_id), *TECH_ROLES)
        subject = find_subject(session, subject_code)
        if subject.card_template_id is None:
            raise BatchError(f"subject {subject.code} has no card template; import one with the exam spec")
        template = session.get(CardTemplate, subject.card_template_id)
        return subject.code, template.body, template.content_hash


def record_trial_run(db, subject_code: str, *, template_hash: str, recognition_version: str, settings_hash: str,
                     source: str, cards: list[dict[str, Any]], actor_id: int, started_at: dt.datetime,
                     finished_at: dt.datetime | None = None) -> TrialRecord:
    """Record one trial run (R-OMR-1) with a ledger entry; returns what was recorded.

    ``cards``: one entry per card of the deck, ``{"card": name, "mismatches": [{...}, …]}``
    (an empty list = read correctly by both methods). The trial passed exactly when no
    card has a mismatch (also a CHECK constraint). The template hash must be the
    subject's current card template: a trial of another template proves nothing.
    """
    if source not in TRIAL_SOURCES:
        raise BatchError(f"trial source must be one of {', '.join(TRIAL_SOURCES)}")
    if not cards:
        raise BatchError("a trial run needs at least one card")
    if len(recognition_version) > 40:
        raise BatchError(f"recognition version {recognition_version!r} is longer than 40 characters")
    finished_at = finished_at or dt.datetime.now(dt.timezone.utc)
    # A card's declared deliberate doubts (checked to be flagged) are part of the record;
    # a card without any keeps the plain form, so earlier reports hash as they did.
    report = canonical({"cards": [{"card": str(c["card"]), "mismatches": list(c.get("mismatches") or []),
                                   **({"doubts": [str(d) for d in c["doubts"]]} if c.get("doubts") else {})}
                                  for c in cards]})
    report_sha = hashlib.sha256(report.encode("utf-8")).hexdigest()
    mismatches = sum(len(c.get("mismatches") or []) for c in cards)
    cards_failed = sum(1 for c in cards if c.get("mismatches"))

    def work(session: Session) -> TrialRecord:
        require_role(active_user(session, actor_id), *TECH_ROLES)
        subject = find_subject(session, subject_code)
        template = session.get(CardTemplate, subject.card_template_id) if subject.card_template_id else None
        if template is None or template.content_hash != template_hash:
            raise BatchError(f"subject {subject.code}'s card template is not the one the trial read "
                             f"({template_hash[:12]}); run the trial again")
        row = OmrTrialRun(subject_id=subject.id, card_template_id=template.id, template_hash=template_hash,
                          recognition_version=recognition_version, settings_hash=settings_hash, source=source,
                          cards_read=len(cards), mismatches=mismatches, cards_failed=cards_failed,
                          passed=mismatches == 0, report=report, report_sha256=report_sha, run_by=actor_id,
                          started_at=started_at, finished_at=finished_at)
        session.add(row)
        session.flush()
        ledger.append(session, actor_id=actor_id, action="omr.trial_run", entity="omr_trial_run", entity_id=row.id,
                      data={"subject": subject.code, "template_hash": template_hash,
                            "recognition_version": recognition_version, "settings_hash": settings_hash,
                            "source": source, "cards_read": len(cards), "mismatches": mismatches,
                            "cards_failed": cards_failed, "passed": mismatches == 0, "report_sha256": report_sha})
        return _record(row, subject.code)

    return db.run(work, retry_integrity=False)


def list_trials(db, subject_code: str) -> list[TrialRecord]:
    with db.read() as session:
        subject = find_subject(session, subject_code)
        rows = session.execute(select(OmrTrialRun).where(OmrTrialRun.subject_id == subject.id)
                               .order_by(OmrTrialRun.id)).scalars().all()
        return [_record(r, subject.code) for r in rows]


def trial_status(db, subject_code: str, *, recognition_version: str, settings_hash: str) -> dict[str, Any]:
    """Whether a live batch of the subject may start now (R-OMR-1): the subject's current
    card-template hash and the latest passed trial for it with these recognition values
    (``passed_trial_id`` None = no live batch until a trial passes)."""
    with db.read() as session:
        subject = find_subject(session, subject_code)
        template = session.get(CardTemplate, subject.card_template_id) if subject.card_template_id else None
        trial_id = None if template is None else passed_trial_id(
            session, subject, template_hash=template.content_hash, recognition_version=recognition_version[:40],
            settings_hash=settings_hash)
        return {"subject": subject.code, "template_hash": template.content_hash if template else None,
                "recognition_version": recognition_version, "settings_hash": settings_hash,
                "passed_trial_id": trial_id}


def trial_report(db, trial_id: int) -> tuple[TrialRecord, list[dict[str, Any]]]:
    """One recorded trial and its per-card report (``{"card", "mismatches"}``, and
    ``"doubts"`` where the deck declared deliberate doubts on the card)."""
    with db.read() as session:
        row = session.get(OmrTrialRun, trial_id)
        if row is None:
            raise BatchError(f"no trial run {trial_id}")
        code = session.get(Subject, row.subject_id).code
        return _record(row, code), json.loads(row.report)["cards"]
