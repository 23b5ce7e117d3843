"""Spot check of objective results (R-OMR-6).

After objective marking, a sample of each subject's accepted cards is checked by eye
against the card image. Default: 2 % of the subject's cards, at least 20 (all of them
when there are fewer). The sample is reproducible: cards are ordered by
sha256(seed:card id:page sha256) and the first n taken; the seed and the sample go to
the ledger. Outcomes (confirmed / discrepancy) are recorded with who and when; a
discrepancy opens an ``omr_exception`` entry for the two-person resolution (R-OMR-7).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import ledger
from .access import active_user, require_role
from .batches import BatchError, find_subject
from .models import Card, PageImage, Script, SpotCheck
from .omr_compare import raise_exception

DEFAULT_RATE_PM = 20     # 2 %
DEFAULT_MINIMUM = 20
CHECK_ROLES = ("technician", "authority_officer", "key_officer", "admin")


def _now(now):
    return now or dt.datetime.now(dt.timezone.utc)


def sample_size(n_cards: int, rate_pm: int = DEFAULT_RATE_PM, minimum: int = DEFAULT_MINIMUM) -> int:
    return min(n_cards, max(minimum, math.ceil(n_cards * rate_pm / 1000)))


def sample_spot_check(db, subject_code: str, *, actor_id: int | None = None, rate_pm: int = DEFAULT_RATE_PM,
                      minimum: int = DEFAULT_MINIMUM, seed: str | None = None) -> dict[str, Any]:
    """Draw (or re-draw idempotently) the subject's spot-check sample."""
    if not 0 < rate_pm <= 1000:
        raise BatchError("rate is in per-mille, 1-1000 (20 = 2 %)")

    def work(session: Session) -> dict[str, Any]:
        subject = find_subject(session, subject_code)
        seed_text = seed if seed is not None else f"spotcheck:{subject.code}"
        rows = session.execute(
            select(Card.id, PageImage.sha256).join(PageImage, PageImage.id == Card.page_image_id)
            .join(Script, Script.id == Card.script_id)
            .where(Script.subject_id == subject.id, Card.status.in_(("agreed", "resolved")))).all()
        n = sample_size(len(rows), rate_pm, minimum)
        ranked = sorted(rows, key=lambda r: hashlib.sha256(f"{seed_text}:{r[0]}:{r[1]}".encode()).hexdigest())
        chosen = sorted(card_id for card_id, _ in ranked[:n])
        have = set(session.execute(select(SpotCheck.card_id).where(SpotCheck.card_id.in_(chosen or [0]))).scalars())
        for card_id in chosen:
            if card_id not in have:
                session.add(SpotCheck(card_id=card_id, outcome="pending"))
        ledger.append(session, actor_id=actor_id, action="spotcheck.sampled", entity="subject", entity_id=subject.id,
                      data={"seed": seed_text, "rate_pm": rate_pm, "minimum": minimum, "population": len(rows),
                            "cards": chosen})
        return {"subject": subject.code, "seed": seed_text, "population": len(rows), "sample": chosen}

    return db.run(work)


def record_spot_check(db, card_id: int, user_id: int, outcome: str, *, note: str = "",
                      now: dt.datetime | None = None) -> None:
    if outcome not in ("confirmed", "discrepancy"):
        raise BatchError("outcome is 'confirmed' or 'discrepancy'")
    if outcome == "discrepancy" and not note.strip():
        raise BatchError("describe the discrepancy (which item, what the image shows)")
    now = _now(now)

    def work(session: Session) -> None:
        user = active_user(session, user_id)
        require_role(user, *CHECK_ROLES)
        check = session.execute(select(SpotCheck).where(SpotCheck.card_id == card_id).with_for_update()).scalar_one_or_none()
        if check is None:
            raise BatchError(f"card {card_id} is not in a spot-check sample")
        if check.outcome != "pending":
            raise BatchError(f"card {card_id} was already checked ({check.outcome})")
        check.outcome = outcome
        check.checked_by = user.id
        check.checked_at = now
        check.note = note[:400]
        if outcome == "discrepancy":
            card = session.get(Card, card_id)
            raise_exception(session, card, "spot_check_discrepancy", {"note": note[:400], "checked_by": user.id})
        ledger.append(session, actor_id=user.id, action="spotcheck.recorded", entity="card", entity_id=card_id,
                      data={"outcome": outcome, "note": note[:400]})

    db.run(work, retry_integrity=False)


def spot_check_status(db, subject_code: str) -> dict[str, Any]:
    with db.read() as session:
        subject = find_subject(session, subject_code)
        rows = session.execute(
            select(SpotCheck.card_id, SpotCheck.outcome, SpotCheck.checked_by, SpotCheck.note, PageImage.sha256)
            .join(Card, Card.id == SpotCheck.card_id).join(PageImage, PageImage.id == Card.page_image_id)
            .join(Script, Script.id == Card.script_id).where(Script.subject_id == subject.id)
            .order_by(SpotCheck.card_id)).all()
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.outcome] = counts.get(r.outcome, 0) + 1
        return {"subject": subject.code, "counts": counts,
                "checks": [{"card_id": r.card_id, "outcome": r.outcome, "checked_by": r.checked_by, "note": r.note,
                            "page_sha256": r.sha256} for r in rows]}
