"""Marker statistics per marker, item and time window (reference/marking.md §4).

Only current live marks count (first/second/third of tasks not cancelled: a mark
superseded by a suspension re-queue is out). The window filters on the time the
marker submitted. See :mod:`calibration.metrics` for the formulas.

The re-check figures (R-MARK-5) count, of the responses a marker read, those the daily
re-check actually re-read (a review mark) and those whose final the team leader then
changed (a score change with reason ``review_decision``, applied or awaiting the
authority): the back-read change rate, the share of a marker's re-checked work the
re-check found wrong.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from marking.models import CalibrationResult, Item, Mark, MarkTask, Resolution, Response, ScoreChange, User
from marking.scores import from_cp

from . import config, metrics
from .common import LIVE_MARK_KINDS, monitoring_start
from .monitor import item_pairs, marker_pair_stream, seed_results, sigma_d


def _f(cp: int) -> float:
    return float(from_cp(cp))


def _r(x: float | None, places: int = 4) -> float | None:
    return None if x is None else round(float(x), places)


def live_marks(session: Session, item_id: int, start: dt.datetime | None = None, end: dt.datetime | None = None):
    q = (select(Mark).join(MarkTask, MarkTask.id == Mark.task_id)
         .where(MarkTask.item_id == item_id, Mark.kind.in_(LIVE_MARK_KINDS), MarkTask.status != "cancelled"))
    if start is not None:
        q = q.where(Mark.submitted_at >= start)
    if end is not None:
        q = q.where(Mark.submitted_at < end)
    return session.execute(q.order_by(Mark.id)).scalars().all()


def recheck_outcomes(session: Session, item_id: int) -> tuple[set[int], set[int]]:
    """(responses of the item re-read by the daily re-check, those of them whose final the
    team leader changed after it) — R-MARK-5, see the module docstring."""
    rechecked = set(session.execute(
        select(Mark.response_id).join(MarkTask, MarkTask.id == Mark.task_id)
        .where(MarkTask.item_id == item_id, Mark.kind == "review", MarkTask.status != "cancelled")).scalars())
    changed = set(session.execute(
        select(ScoreChange.response_id).where(ScoreChange.item_id == item_id,
                                              ScoreChange.reason_code == "review_decision",
                                              ScoreChange.status != "rejected")).scalars())
    return rechecked, changed & rechecked


def marker_statistics(db, item_id: int, *, start: dt.datetime | None = None,
                      end: dt.datetime | None = None) -> dict[str, Any]:
    """{"item": ..., "group": ..., "markers": [per-marker dict]} for team-leader screens."""
    with db.read() as session:
        item = session.get(Item, item_id)
        settings = config.for_item(session, item_id)
        max_p, step, t = from_cp(item.max_cp), from_cp(item.step_cp), from_cp(item.threshold_cp)
        marks = live_marks(session, item_id, start, end)
        names = dict(session.execute(select(User.id, User.username)).all())
        group_scores = [_f(m.score_cp) for m in marks]
        g_mean, g_sd = metrics.mean_sd(group_scores)
        pairs = [p for p in item_pairs(session, item_id)
                 if (start is None or max(p[3], p[6]) >= start) and (end is None or max(p[3], p[6]) < end)]
        # Outcome per response: latest resolution, and whether a third / arbitration happened.
        response_ids = sorted({m.response_id for m in marks})
        outcome: dict[int, str] = {}
        third: set[int] = set()
        arbitration: set[int] = set()
        if response_ids:
            for rid, out in session.execute(select(Resolution.response_id, Resolution.outcome)
                                            .where(Resolution.response_id.in_(response_ids))
                                            .order_by(Resolution.response_id, Resolution.version)).all():
                outcome[rid] = out
            for rid, slot in session.execute(select(MarkTask.response_id, MarkTask.slot)
                                             .where(MarkTask.response_id.in_(response_ids),
                                                    MarkTask.slot.in_(("third", "arbitration")),
                                                    MarkTask.status != "cancelled")).all():
                (third if slot == "third" else arbitration).add(rid)
            for rid, status in session.execute(select(Response.id, Response.status)
                                               .where(Response.id.in_(response_ids))).all():
                if status == "arbitration":
                    arbitration.add(rid)
        by_marker: dict[int, list[Mark]] = defaultdict(list)
        for m in marks:
            by_marker[m.marker_id].append(m)
        rechecked, changed = recheck_outcomes(session, item_id)
        group_dwell = [m.dwell_ms / 1000 for m in marks if m.dwell_ms is not None]
        group_median = metrics.median(group_dwell)
        out = []
        for user_id, own in sorted(by_marker.items()):
            scores = [_f(m.score_cp) for m in own]
            mean, sd = metrics.mean_sd(scores)
            stream = marker_pair_stream(pairs, user_id, None)
            mine = [(s1 if u1 == user_id else s2, s2 if u1 == user_id else s1)
                    for _r0, u1, s1, _a, u2, s2, _b in pairs if user_id in (u1, u2) and u1 != u2]
            a = [from_cp(x) for x, _ in mine]
            b = [from_cp(y) for _, y in mine]
            agree = metrics.agreement(a, b, t)
            seeds = seed_results(session, user_id, item_id, None)
            seeds = [r for r in seeds if (start is None or r.created_at >= start) and (end is None or r.created_at < end)]
            validity, bias = metrics.validity([from_cp(r.score_cp - r.reference_cp) for r in seeds],
                                              [from_cp(r.tolerance_cp) for r in seeds])
            selfc = session.execute(select(CalibrationResult.within).where(
                CalibrationResult.user_id == user_id, CalibrationResult.item_id == item_id,
                CalibrationResult.kind == "self_check")).scalars().all()
            double = [m for m in own if m.kind in ("first", "second")]
            sent = sum(1 for m in double if m.response_id in third)
            finished_two = sum(1 for m in double if m.response_id not in third
                               and outcome.get(m.response_id) in ("agreed", "single"))
            arbitrated = sum(1 for m in own if m.response_id in arbitration or outcome.get(m.response_id) == "arbitrated")
            read = {m.response_id for m in own}
            own_rechecked, own_changed = len(read & rechecked), len(read & changed)
            dwell = [m.dwell_ms / 1000 for m in own if m.dwell_ms is not None]
            med = metrics.median(dwell)
            fast = sum(1 for d in dwell if d * 1000 < settings["fast_ms"])
            out.append({
                "user_id": user_id, "username": names.get(user_id), "count": len(own),
                "mean": _r(mean), "sd": _r(sd),
                "mean_diff_vs_group": _r(None if mean is None or g_mean is None else mean - g_mean),
                "sd_ratio_vs_group": _r(None if not g_sd or sd is None else sd / g_sd),
                "pairs": agree.n,
                "smd": _r(metrics.smd(a, b)) if a else None,
                "exact": _r(agree.exact), "adjacent": _r(agree.adjacent), "within_threshold": _r(agree.within),
                "qwk": _r(metrics.qwk(a, b, max_p, step)) if a else None,
                "seeds": len(seeds), "validity": _r(validity), "seed_bias": _r(bias),
                "self_checks": len(selfc), "self_consistency": _r(sum(selfc) / len(selfc)) if selfc else None,
                "third_rate": _r(sent / (finished_two + sent)) if (finished_two + sent) else None,
                "arbitration_rate": _r(arbitrated / len(own)) if own else None,
                "rechecked": own_rechecked, "recheck_changed": own_changed,
                "recheck_change_rate": _r(own_changed / own_rechecked) if own_rechecked else None,
                "middle_band_share": _r(metrics.share_in_band(scores, max_p, tuple(settings["middle_band"]))),
                "median_seconds": _r(med, 1),
                "marks_per_hour": _r(3600 * len(dwell) / sum(dwell), 1) if dwell and sum(dwell) > 0 else None,
                "too_fast": fast,
                "too_fast_flag": bool(fast) or (med is not None and group_median is not None and med < 0.5 * group_median),
                "pair_stream": len(stream),
            })
        return {"item": {"id": item.id, "code": item.code, "max": str(max_p), "step": str(step), "threshold": str(t)},
                "group": {"count": len(marks), "mean": _r(g_mean), "sd": _r(g_sd), "pairs": len(pairs),
                          "median_seconds": _r(group_median, 1),
                          "exact": _r(metrics.agreement([from_cp(p[2]) for p in pairs], [from_cp(p[5]) for p in pairs], t).exact),
                          "qwk": _r(metrics.qwk([from_cp(p[2]) for p in pairs], [from_cp(p[5]) for p in pairs], max_p, step))
                          if pairs else None},
                "markers": out}


def agreement_matrix(db, item_id: int) -> dict[str, Any]:
    """The NAEP-style first × second read matrix of the item (current marks)."""
    with db.read() as session:
        item = session.get(Item, item_id)
        pairs = item_pairs(session, item_id)
        m = metrics.confusion([from_cp(p[2]) for p in pairs], [from_cp(p[5]) for p in pairs],
                              from_cp(item.max_cp), from_cp(item.step_cp))
        labels = [str(from_cp(item.step_cp) * i) for i in range(m.shape[0])]
        return {"labels": labels, "matrix": m.tolist()}


def drift_series(db, user_id: int, item_id: int) -> dict[str, Any]:
    """Standardised streams and their CUSUM / EWMA paths for one marker (drift plot data)."""
    with db.read() as session:
        item = session.get(Item, item_id)
        settings = config.for_item(session, item_id)
        since = monitoring_start(session, user_id, item_id)
        pairs = item_pairs(session, item_id)
        sd = sigma_d(session, item, pairs)
        stream = marker_pair_stream(pairs, user_id, since)
        seeds = seed_results(session, user_id, item_id, since)
    z_pairs = [d / sd for _at, d in stream]
    z_seeds = [float(from_cp(r.score_cp - r.reference_cp)) / (sd / 2 ** 0.5) for r in seeds]
    return {"sigma_d": sd, "pairs": z_pairs, "seeds": z_seeds,
            "cusum_pairs": metrics.cusum(z_pairs, settings["cusum_k"], settings["cusum_h"]),
            "ewma_pairs": metrics.ewma(z_pairs, settings["ewma_lambda"], settings["ewma_L"]),
            "cusum_seeds": metrics.cusum(z_seeds, settings["cusum_k"], settings["cusum_h"]),
            "seed_within": [bool(r.within) for r in seeds],
            "validity_threshold": settings["validity_threshold_pm"] / 1000,
            "validity_window": settings["validity_window"]}
