"""Validity and drift monitoring that *holds* dispatch (★ reference/marking.md §6.4).

Two standardised streams per marker and item, from the marker's current licence
(their latest passed qualification) on:

* seed errors  zᵢ = (score − definitive) / σ_r
* co-marker differences zᵢ = (own − other) / σ_d, in the order the marker marked

σ_d is the SD of all first−second differences on the item (floored at one step·√2;
the item threshold when fewer than 10 pairs exist) and σ_r = σ_d / √2 (one rater's
error SD). Alarms: validity below ``validity_threshold_pm`` over the last
``validity_window`` seeds (once ``validity_min_seeds`` exist), or a CUSUM / EWMA
alarm on either stream (the pair stream once ``drift_min_pairs`` exist).
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased

from marking.models import CalibrationResult, Item, ItemDuty, Mark, MarkTask
from marking.scores import from_cp

from . import config, metrics
from .common import monitoring_start


@dataclass
class Check:
    user_id: int
    item_id: int
    seeds: int
    validity: float | None
    pairs: int
    alarms: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cause(self) -> str | None:
        if not self.alarms:
            return None
        return "validity" if any(a["kind"] == "validity" for a in self.alarms) else "drift"


def item_pairs(session: Session, item_id: int) -> list[tuple]:
    """(response_id, first marker, first cp, first at, second marker, second cp, second at), current marks only."""
    m1, m2 = aliased(Mark), aliased(Mark)
    t1, t2 = aliased(MarkTask), aliased(MarkTask)
    return session.execute(
        select(m1.response_id, m1.marker_id, m1.score_cp, m1.submitted_at, m2.marker_id, m2.score_cp, m2.submitted_at)
        .join(t1, t1.id == m1.task_id).join(m2, and_(m2.response_id == m1.response_id, m2.kind == "second"))
        .join(t2, t2.id == m2.task_id)
        .where(t1.item_id == item_id, m1.kind == "first", t1.status != "cancelled", t2.status != "cancelled")
        .order_by(m1.response_id)
    ).all()


def sigma_d(session: Session, item: Item, pairs=None) -> float:
    pairs = item_pairs(session, item.id) if pairs is None else pairs
    floor = float(from_cp(item.step_cp)) * math.sqrt(2)
    if len(pairs) < 10:
        return max(float(from_cp(item.threshold_cp)) or floor, floor)
    _m, sd = metrics.mean_sd([float(from_cp(a - b)) for _r, _u, a, _t, _v, b, _s in pairs])
    return max(sd or 0.0, floor)


def marker_pair_stream(pairs, user_id: int, since: dt.datetime | None) -> list[tuple[dt.datetime, float]]:
    """(when the marker marked, own − other in points) for each pair the marker is part of."""
    out = []
    for _rid, u1, s1, at1, u2, s2, at2 in pairs:
        if u1 == user_id and u2 != user_id:
            out.append((at1, float(from_cp(s1 - s2))))
        elif u2 == user_id and u1 != user_id:
            out.append((at2, float(from_cp(s2 - s1))))
    out = [p for p in out if since is None or p[0] >= since]
    out.sort(key=lambda p: p[0])
    return out


def seed_results(session: Session, user_id: int, item_id: int, since: dt.datetime | None) -> list[CalibrationResult]:
    q = select(CalibrationResult).where(CalibrationResult.user_id == user_id, CalibrationResult.item_id == item_id,
                                        CalibrationResult.kind == "seed")
    if since is not None:
        q = q.where(CalibrationResult.created_at >= since)
    return list(session.execute(q.order_by(CalibrationResult.id)).scalars())


def _alarms(settings: dict, z: list[float]) -> list[metrics.Alarm]:
    method = settings["drift_method"]
    out = []
    if method in ("cusum", "both"):
        out.append(metrics.cusum(z, settings["cusum_k"], settings["cusum_h"]))
    if method in ("ewma", "both"):
        out.append(metrics.ewma(z, settings["ewma_lambda"], settings["ewma_L"]))
    return [a for a in out if a.fired]


def evaluate(session: Session, user_id: int, item_id: int) -> Check:
    item = session.get(Item, item_id)
    settings = config.for_item(session, item_id)
    since = monitoring_start(session, user_id, item_id)
    seeds = seed_results(session, user_id, item_id, since)
    pairs_all = item_pairs(session, item_id)
    sd = sigma_d(session, item, pairs_all)
    stream = marker_pair_stream(pairs_all, user_id, since)
    window = seeds[-int(settings["validity_window"]):]
    validity = (sum(r.within for r in window) / len(window)) if window else None
    check = Check(user_id, item_id, len(seeds), validity, len(stream))
    if len(seeds) >= int(settings["validity_min_seeds"]) and validity is not None and \
            validity * 1000 < int(settings["validity_threshold_pm"]):
        check.alarms.append({"kind": "validity", "validity_pm": str(int(validity * 1000)),
                             "window": str(len(window))})
    if seeds:
        sigma_r = sd / math.sqrt(2)
        z = [float(from_cp(r.score_cp - r.reference_cp)) / sigma_r for r in seeds]
        for alarm in _alarms(settings, z):
            check.alarms.append({"kind": "drift_seeds", **alarm.as_dict()})
    if len(stream) >= int(settings["drift_min_pairs"]):
        z = [d / sd for _at, d in stream]
        for alarm in _alarms(settings, z):
            check.alarms.append({"kind": "drift_pairs", **alarm.as_dict()})
    return check


def check_in_session(session: Session, user_id: int, item_id: int, now: dt.datetime) -> Check:
    """Evaluate one marker; suspend (same transaction) when an alarm fires and auto-suspend is on."""
    check = evaluate(session, user_id, item_id)
    if check.cause and config.for_item(session, item_id)["auto_suspend"]:
        active = session.execute(select(ItemDuty.id).where(ItemDuty.user_id == user_id, ItemDuty.item_id == item_id,
                                                           ItemDuty.duty == "marker", ItemDuty.status == "active")).first()
        if active:
            from .suspension import suspend_in_session
            suspend_in_session(session, user_id, item_id, cause=check.cause,
                               detail={"alarms": check.alarms, "seeds": str(check.seeds), "pairs": str(check.pairs)},
                               actor_id=None, now=now)
    return check


def check_item(db, item_id: int, *, now: dt.datetime | None = None) -> list[Check]:
    """Periodic job: evaluate every active marker of the item; suspends where alarms fire."""
    from marking.centre_time import now_or
    now = now_or(now)

    def fn(session: Session) -> list[Check]:
        users = session.execute(select(ItemDuty.user_id).where(ItemDuty.item_id == item_id, ItemDuty.duty == "marker",
                                                              ItemDuty.status == "active")
                                .order_by(ItemDuty.user_id)).scalars().all()
        return [check_in_session(session, u, item_id, now) for u in users]

    return db.run(fn)
