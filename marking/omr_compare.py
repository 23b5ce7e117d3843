"""Comparison of a card's two reads (R-OMR-3) and the OMR exception register entries.

A card is *agreed* only when both reads are clean (no flag, no error) and say the same
thing: page code, candidate number, subject code, absence and, per objective item, the
same state and the same options. Everything else goes to people (R-OMR-7): a
``register_entry`` in the ``omr_exception`` register with the differences and flags,
resolved by one technician's proposal and a second technician's confirmation
(:mod:`marking.batches`). The reads themselves are never altered.

The accepted reading (``card.accepted_reading``) is canonical JSON::

    {"source": "double_read" | "resolution", "page": 1, "candidate_number": "…",
     "subject_code": "00015", "absent": false, "answers": {"1": "A", "26": "AC"},
     "states": {"1": "single", …}, "reads": [<sha256 of read 1>, <sha256 of read 2>]}
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import events
from .models import Card, OmrRead, RegisterEntry


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """What a reading says about the candidate's card, without measurements."""
    if result.get("status") == "error":
        return {"error": (result.get("error") or {}).get("reason", "error")}
    page = result.get("page") or {}
    cand = result.get("candidate_number") or {}
    subj = result.get("subject_code") or {}
    absence = result.get("absence")
    objective = result.get("objective") or {}
    return {
        "page": page.get("code") if page.get("code") is not None else page.get("used"),
        "candidate_number": cand.get("value"),
        "subject_code": subj.get("value"),
        "absent": bool(absence and absence.get("absent")),
        "answers": {k: "".join(v.get("chosen") or []) for k, v in objective.items()},
        "states": {k: v.get("state") for k, v in objective.items()},
    }


def compare(result_a: dict[str, Any], result_b: dict[str, Any]) -> tuple[bool, list[dict[str, Any]], list[dict]]:
    """(agreed, differences, flags). Differences are per field / per item."""
    a, b = summarise(result_a), summarise(result_b)
    flags = [dict(f, read=n) for n, r in ((1, result_a), (2, result_b)) for f in (r.get("flags") or [])]
    diffs: list[dict[str, Any]] = []
    if "error" in a or "error" in b:
        diffs.append({"field": "status", "read1": a.get("error", "ok"), "read2": b.get("error", "ok")})
        return False, diffs, flags
    for field in ("page", "candidate_number", "subject_code", "absent"):
        if a[field] != b[field]:
            diffs.append({"field": field, "read1": a[field], "read2": b[field]})
    for item in sorted(set(a["answers"]) | set(b["answers"]), key=_item_key):
        va, vb = a["answers"].get(item), b["answers"].get(item)
        sa, sb = a["states"].get(item), b["states"].get(item)
        if va != vb or sa != sb:
            diffs.append({"field": "item", "item": item, "read1": va, "read2": vb, "state1": sa, "state2": sb})
    clean = result_a.get("status") == "ok" and result_b.get("status") == "ok" and not flags
    return (clean and not diffs), diffs, flags


def _item_key(code: str) -> tuple[int, str]:
    return (int(code), code) if code.isdigit() else (10**9, code)


def accepted_from(result_a: dict[str, Any], result_b: dict[str, Any], shas: list[str]) -> dict[str, Any]:
    summary = summarise(result_a)
    summary.update({"source": "double_read", "reads": shas})
    return summary


def raise_exception(session: Session, card: Card, reason: str, detail: dict[str, Any],
                    before: dict[str, Any] | None = None) -> RegisterEntry:
    card.status = "exception"
    entry = RegisterEntry(register="omr_exception", status="open", reason_code=reason[:40], card_id=card.id,
                          detail=canonical(detail), before=canonical(before) if before is not None else None)
    session.add(entry)
    session.flush()
    events.publish(session, f"batch:{card.batch_id}", "card.exception",
                   {"card_id": card.id, "entry_id": entry.id, "reason": reason})
    return entry


def exception_reason(diffs: list[dict[str, Any]], flags: list[dict[str, Any]]) -> str:
    if any(d["field"] == "status" for d in diffs):
        return "unreadable"
    if diffs:
        return "read_disagreement"
    codes = sorted({f.get("code", "flag") for f in flags})
    return "flagged:" + ",".join(codes)[:32]


def settle_card(session: Session, card: Card, reads: list[OmrRead], *, now: dt.datetime) -> str:
    """Called with the card row locked when its second read is done. Returns the outcome."""
    by_no = {r.read_no: r for r in reads}
    ra, rb = json.loads(by_no[1].result), json.loads(by_no[2].result)
    agreed, diffs, flags = compare(ra, rb)
    if agreed:
        card.accepted_reading = canonical(accepted_from(ra, rb, [by_no[1].result_sha256, by_no[2].result_sha256]))
        card.status = "agreed"
        page = summarise(ra).get("page")
        if page is not None:
            card.page_code = page
        events.publish(session, f"batch:{card.batch_id}", "card.agreed", {"card_id": card.id})
        return "agreed"
    base = summarise(ra) if "error" not in summarise(ra) else summarise(rb)
    if "error" not in base and base.get("page") is not None:
        card.page_code = base["page"]
    raise_exception(session, card, exception_reason(diffs, flags),
                    {"differences": diffs, "flags": flags, "read1": summarise(ra), "read2": summarise(rb)},
                    before=None)
    return "exception"


def card_reads(session: Session, card_id: int) -> list[OmrRead]:
    return list(session.execute(select(OmrRead).where(OmrRead.card_id == card_id).order_by(OmrRead.read_no)).scalars())
