"""Daily re-check sample (R-MARK-5) and post-final reads.

* Each local day, per item, at least ``rate_pm`` ‰ (default 100 ‰ = 10 %) of the
  responses finalised that day are sampled, rounded up: the uniform floor. The
  choice is reproducible: responses are ordered by SHA-256(day | response id | seed)
  and the lowest are taken; re-running the same day adds only what newly finalised
  responses require, and never drops one.
* Risk-weighted on top (★ §6.4): responses with an extreme final (0 or full marks),
  ones that needed a third mark or arbitration, ones marked fast (dwell below
  ``fast_ms``) and ones read by a low-agreement marker (third-mark rate above
  ``low_agreement_pm`` that day) are added with probability ``risk_pm`` ‰, again
  decided by a hash, so the floor stays an unbiased estimate.
* Samples are stored (ReviewSample) and a ``review`` task is dealt to a reviewer or
  the team leader who did not read the response before (mark_assignment UNIQUE).
* A review mark (or a pass-band extra read) that does not agree with the final score
  opens a ``review_dispute`` register entry for the team leader, whose decision is
  applied through :mod:`marking.changes` (reason ``review_decision``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
from fractions import Fraction
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import events, ledger
from .access import NotAllowed, active_user, require_leader_or_role, require_role
from .adjudication import final_of, lock_response
from .centre_time import day_bounds, now_or
from .dispatch import ensure_task
from .models import Item, Mark, RegisterEntry, Response, ReviewSample
from .policy import agrees, policy_for_item
from .scores import from_cp, parse_points

DEFAULT_RATE_PM = 100
DEFAULT_RISK_PM = 500
DEFAULT_FAST_MS = 5_000
DEFAULT_LOW_AGREEMENT_PM = 300


def sample_key(day: dt.date, response_id: int, seed: str, salt: str = "") -> int:
    digest = hashlib.sha256(f"{day.isoformat()}|{response_id}|{seed}{salt}".encode()).hexdigest()
    return int(digest[:16], 16)


def _per_mille(key: int) -> int:
    return key % 1000


def choose(day: dt.date, seed: str, finalised: list[int], already: set[int], risk: dict[int, str], *,
           rate_pm: int = DEFAULT_RATE_PM, risk_pm: int = DEFAULT_RISK_PM) -> list[tuple[int, str]]:
    """Pure choice: (response id, reason) to add so the day's sample meets the floor."""
    target = math.ceil(len(finalised) * rate_pm / 1000)
    ordered = sorted(finalised, key=lambda rid: (sample_key(day, rid, seed), rid))
    chosen: list[tuple[int, str]] = []
    have = len([r for r in finalised if r in already])
    for rid in ordered:
        if have >= target:
            break
        if rid not in already:
            chosen.append((rid, "uniform"))
            have += 1
    taken = already | {rid for rid, _ in chosen}
    for rid in ordered:
        if rid in taken or rid not in risk:
            continue
        if _per_mille(sample_key(day, rid, seed, "|risk")) < risk_pm:
            chosen.append((rid, f"risk:{risk[rid]}"))
    return chosen


def _risk_reasons(session: Session, item: Item, response_ids: list[int], *, fast_ms: int,
                  low_agreement_pm: int) -> dict[int, str]:
    if not response_ids:
        return {}
    reasons: dict[int, str] = {}
    marks: list[Mark] = []
    finals: dict[int, Fraction] = {}
    for start in range(0, len(response_ids), 5000):
        chunk = response_ids[start:start + 5000]
        marks.extend(session.execute(select(Mark).where(Mark.response_id.in_(chunk))).scalars())
        finals.update({rid: Fraction(num, den) for rid, num, den in session.execute(
            select(Response.id, Response.final_num, Response.final_den).where(Response.id.in_(chunk))
        ).all() if num is not None})
    by_response: dict[int, list[Mark]] = defaultdict(list)
    for m in marks:
        by_response[m.response_id].append(m)
    reads: dict[int, int] = defaultdict(int)
    thirds: dict[int, int] = defaultdict(int)
    for rid, ms in by_response.items():
        needed_third = any(m.kind in ("third", "arbitration") for m in ms)
        for m in ms:
            if m.kind in ("first", "second"):
                reads[m.marker_id] += 1
                thirds[m.marker_id] += needed_third
    low = {mid for mid, n in reads.items() if n and thirds[mid] * 1000 > low_agreement_pm * n}
    max_points = from_cp(item.max_cp)
    for rid in response_ids:
        final = finals.get(rid)
        ms = by_response.get(rid, [])
        if final is not None and (final == 0 or final == max_points):
            reasons[rid] = "extreme"
        elif any(m.kind in ("third", "arbitration") for m in ms):
            reasons[rid] = "low_agreement"
        elif any(m.dwell_ms is not None and m.dwell_ms < fast_ms for m in ms):
            reasons[rid] = "fast_marker"
        elif any(m.marker_id in low for m in ms if m.kind in ("first", "second")):
            reasons[rid] = "low_agreement_marker"
    return reasons


def select_daily_sample(db, day: dt.date, *, seed: str, actor_id: int | None = None,
                        rate_pm: int = DEFAULT_RATE_PM, risk_pm: int = DEFAULT_RISK_PM,
                        fast_ms: int = DEFAULT_FAST_MS, low_agreement_pm: int = DEFAULT_LOW_AGREEMENT_PM,
                        item_ids: list[int] | None = None, now: dt.datetime | None = None) -> dict[int, list[int]]:
    """R-MARK-5: store the day's sample per item and open review tasks; item id → response ids added.

    ``actor_id`` None means the scheduled job; a person must be a team leader,
    authority officer or admin. ``rate_pm`` below 100 is refused.
    """
    if rate_pm < DEFAULT_RATE_PM:
        raise ValueError("R-MARK-5: the daily re-check rate is at least 10 % (100 ‰)")
    now = now_or(now)
    start, end = day_bounds(day)

    def fn(session: Session) -> dict[int, list[int]]:
        if actor_id is not None:
            require_role(active_user(session, actor_id), "team_leader", "authority_officer", "admin")
        query = select(Item).where(Item.kind == "subjective").order_by(Item.id)
        if item_ids:
            query = query.where(Item.id.in_(item_ids))
        added: dict[int, list[int]] = {}
        for item in session.execute(query).scalars().all():
            finalised = session.execute(
                select(Response.id).where(Response.item_id == item.id, Response.status == "resolved",
                                          Response.resolved_at >= start, Response.resolved_at < end)
            ).scalars().all()
            if not finalised:
                continue
            already = set(session.execute(
                select(ReviewSample.response_id).where(ReviewSample.item_id == item.id,
                                                       ReviewSample.day == day)
            ).scalars())
            risk = _risk_reasons(session, item, [r for r in finalised if r not in already],
                                 fast_ms=fast_ms, low_agreement_pm=low_agreement_pm)
            picks = choose(day, seed, list(finalised), already, risk, rate_pm=rate_pm, risk_pm=risk_pm)
            if not picks:
                continue
            for rid, reason in picks:
                session.add(ReviewSample(day=day, item_id=item.id, response_id=rid, reason=reason,
                                         seed=seed, created_at=now))
                ensure_task(session, session.get(Response, rid), "review")
            ledger.append(session, actor_id=actor_id, action="review.sampled", entity="item",
                          entity_id=item.id,
                          data={"day": day.isoformat(), "seed": seed, "rate_pm": rate_pm,
                                "finalised": len(finalised),
                                "added": [[rid, reason] for rid, reason in picks]}, at=now)
            events.publish(session, events.item_topic(item.id), "review.sampled",
                           {"item_id": item.id, "count": len(picks)})
            added[item.id] = [rid for rid, _ in picks]
        return added

    return db.run(fn)


def after_post_final_read(session: Session, response: Response, item: Item, mark: Mark, *,
                          now: dt.datetime) -> RegisterEntry | None:
    """A review (or pass-band extra) read of a final response: agree, or open a dispute."""
    _row, params = policy_for_item(session, item)
    final = final_of(response)
    score = from_cp(mark.score_cp)
    data: dict[str, Any] = {"mark_id": mark.id, "slot": mark.kind, "score": ledger.score_text(score),
                            "final": ledger.score_text(final)}
    if agrees(score, final, from_cp(item.threshold_cp), params["agreement"]):
        ledger.append(session, actor_id=mark.marker_id, action=f"{mark.kind}.agreed", entity="response",
                      entity_id=response.id, data=data, at=now)
        return None
    entry = RegisterEntry(register="review_dispute", status="open",
                          reason_code="review_disagrees" if mark.kind == "review" else "extra_read_disagrees",
                          script_id=response.script_id, response_id=response.id, raised_by=mark.marker_id,
                          detail=ledger.canonical_json(data), created_at=now)
    session.add(entry)
    session.flush()
    data["entry_id"] = entry.id
    ledger.append(session, actor_id=mark.marker_id, action=f"{mark.kind}.disputed", entity="response",
                  entity_id=response.id, data=data, at=now)
    events.publish(session, events.leader_topic(item.id), "review_dispute.opened",
                   {"item_id": item.id, "entry_id": entry.id})
    return entry


def decide_dispute(db, leader_id: int, entry_id: int, *, score=None, note: str = "",
                   now: dt.datetime | None = None) -> int | None:
    """R-MARK-5: the team leader decides; ``score`` None keeps the final. Returns a ScoreChange id."""
    now = now_or(now)

    def fn(session: Session) -> int | None:
        from .changes import change_in_session

        leader = active_user(session, leader_id)
        entry = session.execute(select(RegisterEntry).where(RegisterEntry.id == entry_id).with_for_update()
                                .execution_options(populate_existing=True)).scalar_one_or_none()
        if entry is None or entry.register != "review_dispute":
            raise LookupError(f"no review dispute {entry_id}")
        if entry.status != "open":
            raise ValueError(f"review dispute {entry_id} is already {entry.status}")
        response = lock_response(session, entry.response_id)
        require_leader_or_role(session, leader, response.item_id)
        if "team_leader" not in leader.role_names:
            raise NotAllowed("review disputes are decided by the team leader (R-MARK-5)")
        if entry.raised_by == leader.id:
            raise NotAllowed("the re-checker cannot decide their own dispute")
        change_id = None
        final = final_of(response)
        decided = final
        if score is not None:
            decided = score if isinstance(score, Fraction) else parse_points(score)
            if decided != final:
                change_id = change_in_session(session, leader, response, decided, "review_decision",
                                              note=note, now=now).id
        entry.status, entry.decided_by, entry.decided_at = "decided", leader.id, now
        ledger.append(session, actor_id=leader.id, action="review_dispute.decided", entity="response",
                      entity_id=response.id, reason="review_decision",
                      data={"entry_id": entry.id, "final_before": ledger.score_text(final),
                            "decision": ledger.score_text(decided),
                            "change_id": change_id, "note": note[:400]}, at=now)
        return change_id

    return db.run(fn, retry_integrity=False)


def samples_for_day(db, day: dt.date) -> list[tuple[int, int, str]]:
    with db.read() as session:
        return [tuple(r) for r in session.execute(
            select(ReviewSample.item_id, ReviewSample.response_id, ReviewSample.reason)
            .where(ReviewSample.day == day).order_by(ReviewSample.item_id, ReviewSample.response_id)).all()]

