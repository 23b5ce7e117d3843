"""Read-only queries the screens need and the marking services do not (yet) offer.

Nothing here changes data or decides anything: lists, counts and statistics for
display. Each function is a candidate to move into ``marking/`` (see docs/web.md,
"Gaps"). R-SEC-1: nothing returned to a marker names a candidate or another
marker's score.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select

from marking.centre_time import centre_day, day_bounds
from marking import submission
from marking.dispatch import DEFAULT_DAILY_CAP, dealt_today
from marking.models import (Item, ItemDuty, Mark, MarkTask, RegisterEntry, Response, ScanBatch, Subject,
                            User)
from marking.models.base import utcnow
from marking.scores import format_points, from_cp


def duty_items(db, user_id: int, duty: str, *, active_only: bool = False) -> list[dict[str, Any]]:
    with db.read() as s:
        q = (select(Item, Subject, ItemDuty.status).join(ItemDuty, ItemDuty.item_id == Item.id)
             .join(Subject, Subject.id == Item.subject_id)
             .where(ItemDuty.user_id == user_id, ItemDuty.duty == duty).order_by(Subject.code, Item.ordinal))
        if active_only:
            q = q.where(ItemDuty.status == "active")
        return [{"id": i.id, "code": i.code, "title": i.title, "subject_code": sub.code, "subject_name": sub.name,
                 "max": format_points(from_cp(i.max_cp)), "step": format_points(from_cp(i.step_cp or 100)),
                 "duty_status": status} for i, sub, status in s.execute(q).all()]


def item_info(db, item_id: int) -> dict[str, Any] | None:
    with db.read() as s:
        row = s.execute(select(Item, Subject).join(Subject).where(Item.id == item_id)).first()
        if row is None:
            return None
        i, sub = row
        return {"id": i.id, "code": i.code, "title": i.title, "subject_code": sub.code, "subject_name": sub.name,
                "max": format_points(from_cp(i.max_cp)), "step": format_points(from_cp(i.step_cp or 100)),
                "threshold": format_points(from_cp(i.threshold_cp or 0)), "double_marked": i.double_marked,
                "daily_cap": i.daily_cap or DEFAULT_DAILY_CAP, "kind": i.kind}


def has_item_duty(db, user_id: int, item_id: int, *duties: str, active: bool = True) -> bool:
    with db.read() as s:
        q = select(ItemDuty.id).where(ItemDuty.user_id == user_id, ItemDuty.item_id == item_id,
                                      ItemDuty.duty.in_(duties))
        if active:
            q = q.where(ItemDuty.status == "active")
        return s.execute(q.limit(1)).first() is not None


def marker_progress(db, user_id: int, item_id: int, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The marker's own day: done today, daily cap, speed (per hour) and median seconds."""
    now = now or utcnow()
    day = centre_day(now)
    start, end = day_bounds(day)
    with db.read() as s:
        item = s.get(Item, item_id)
        marks = s.execute(select(Mark.submitted_at, Mark.dwell_ms)
                          .join(MarkTask, MarkTask.id == Mark.task_id)
                          .where(Mark.marker_id == user_id, MarkTask.item_id == item_id,
                                 Mark.submitted_at >= start, Mark.submitted_at < end)).all()
        dealt = dealt_today(s, user_id, item_id, day)
    last_hour = sum(1 for at, _ in marks if at >= now - dt.timedelta(hours=1))
    dwell = sorted(d for _, d in marks if d is not None)
    median = round(dwell[len(dwell) // 2] / 1000, 1) if dwell else None
    return {"done_today": len(marks), "dealt_today": dealt, "cap": (item.daily_cap if item else None) or DEFAULT_DAILY_CAP,
            "per_hour": last_hour, "median_seconds": median}


def recent_marks(db, user_id: int, item_id: int, limit: int = 10) -> list[dict[str, Any]]:
    """The marker's own latest marks on the item. Never the outcome or others' marks (R-SEC-1).

    No slot is shown and ``revisable`` comes from the engine's rule, so seeds and
    self-checks look exactly like live marks (issue 7)."""
    with db.read() as s:
        item = s.get(Item, item_id)
        rows = s.execute(select(Mark, Response).join(Response, Response.id == Mark.response_id)
                         .where(Mark.marker_id == user_id, Response.item_id == item_id)
                         .order_by(Mark.id.desc()).limit(limit)).all()
        return [{"mark_id": m.id, "score": format_points(from_cp(m.score_cp)),
                 "condition_code": m.condition_code, "submitted_at": m.submitted_at.isoformat(),
                 "revisable": submission.is_revisable(s, m, response, item)} for m, response in rows]


def own_lease(db, user_id: int, token: str, *, now: dt.datetime | None = None) -> MarkTask | None:
    """The caller's live lease with this token, or None (R-SEC-1 / ASVS 8.2.2: no IDOR)."""
    now = now or utcnow()
    with db.read() as s:
        task = s.execute(select(MarkTask).where(MarkTask.lease_token == token)).scalar_one_or_none()
        if task is None or task.status != "leased" or task.marker_id != user_id or \
                task.leased_until is None or task.leased_until < now:
            return None
        return task


def response_image(db, response_id: int) -> str | None:
    with db.read() as s:
        return s.execute(select(Response.image_sha256).where(Response.id == response_id)).scalar()


def leader_summary(db, item_id: int) -> dict[str, Any]:
    """Queue counts for the team leader's dashboard (正常卷/三评卷/仲裁卷/问题卷/异常/复核)."""
    with db.read() as s:
        tasks = dict(((slot, status), n) for slot, status, n in s.execute(
            select(MarkTask.slot, MarkTask.status, func.count())
            .where(MarkTask.item_id == item_id, MarkTask.status.in_(("open", "leased")))
            .group_by(MarkTask.slot, MarkTask.status)).all())
        responses = dict(s.execute(select(Response.status, func.count()).where(Response.item_id == item_id)
                                   .group_by(Response.status)).all())
        registers = dict(s.execute(
            select(RegisterEntry.register, func.count()).join(Response, Response.id == RegisterEntry.response_id)
            .where(Response.item_id == item_id, RegisterEntry.status == "open")
            .group_by(RegisterEntry.register)).all())

    def open_of(slot: str) -> int:
        return tasks.get((slot, "open"), 0) + tasks.get((slot, "leased"), 0)

    total = sum(responses.values())
    return {
        "responses": total,
        "resolved": responses.get("resolved", 0),
        "normal": open_of("first") + open_of("second"),
        "third": open_of("third"),
        "arbitration": open_of("arbitration"),
        "review": open_of("review") + open_of("extra"),
        "problem": registers.get("problem", 0),
        "abnormal": registers.get("abnormal", 0),
        "disputes": registers.get("review_dispute", 0),
        "progress_pm": (responses.get("resolved", 0) * 1000 // total) if total else 0,
    }


def marker_table(db, item_id: int, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per marker on the item: status, marks today/total, speed, agreement, third-marking rate."""
    now = now or utcnow()
    start, end = day_bounds(centre_day(now))
    with db.read() as s:
        item = s.get(Item, item_id)
        duties = s.execute(select(ItemDuty, User).join(User, User.id == ItemDuty.user_id)
                           .where(ItemDuty.item_id == item_id, ItemDuty.duty == "marker")
                           .order_by(User.username)).all()
        marks = s.execute(select(Mark.response_id, Mark.marker_id, Mark.kind, Mark.score_cp, Mark.submitted_at)
                          .join(Response, Response.id == Mark.response_id)
                          .where(Response.item_id == item_id)).all()
    threshold = item.threshold_cp or 0 if item else 0
    by_response: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    for rid, mid, kind, cp, _at in marks:
        by_response[rid][kind] = (mid, cp)
    stats: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rid, m in by_response.items():
        went_third = "third" in m or "arbitration" in m
        pair = "first" in m and "second" in m
        for kind in ("first", "second"):
            if kind not in m:
                continue
            mid = m[kind][0]
            if pair:
                stats[mid]["pairs"] += 1
                stats[mid]["agree"] += abs(m["first"][1] - m["second"][1]) <= threshold
                stats[mid]["thirds"] += went_third
    for _rid, mid, kind, _cp, at in marks:
        stats[mid]["total"] += 1
        if start <= at < end:
            stats[mid]["today"] += 1
        if at >= now - dt.timedelta(hours=1):
            stats[mid]["hour"] += 1
    table = []
    for duty, user in duties:
        st = stats.get(user.id, {})
        pairs = st.get("pairs", 0)
        table.append({"user_id": user.id, "username": user.username, "display_name": user.display_name,
                      "status": duty.status, "today": st.get("today", 0), "total": st.get("total", 0),
                      "per_hour": st.get("hour", 0),
                      "agreement_pct": round(100 * st.get("agree", 0) / pairs) if pairs else None,
                      "third_rate_pct": round(100 * st.get("thirds", 0) / pairs) if pairs else None})
    return table


def batches(db) -> list[dict[str, Any]]:
    from marking.models import Card, OmrRead

    with db.read() as s:
        rows = s.execute(select(ScanBatch, Subject.code).join(Subject).order_by(ScanBatch.id.desc())).all()
        out = []
        for b, subject_code in rows:
            cards = dict(s.execute(select(Card.status, func.count()).where(Card.batch_id == b.id)
                                   .group_by(Card.status)).all())
            reads = dict(s.execute(select(OmrRead.status, func.count()).join(Card, Card.id == OmrRead.card_id)
                                   .where(Card.batch_id == b.id).group_by(OmrRead.status)).all())
            n_cards = sum(cards.values())
            n_reads = sum(reads.values())
            out.append({"id": b.id, "code": b.code, "subject": subject_code, "status": b.status,
                        "cards": n_cards, "card_status": cards,
                        "reads_done": reads.get("done", 0), "reads_total": n_reads,
                        "read_pct": (100 * reads.get("done", 0) // n_reads) if n_reads else 0,
                        "exceptions": cards.get("exception", 0)})
        return out
