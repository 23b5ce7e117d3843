"""Policy what-if (★ reference/marking.md §6.1): predict third-marking and arbitration rates.

From pilot double marks (s1, s2) of an item, for each candidate threshold T and
policy variant (parameter overrides of ``marking.policy.default_params()``):

* third-marking rate — exact: the share of pairs for which ``marking.policy.decide``
  asks for a third mark;
* extra-read rate — exact likewise (zero / full-mark extra reads of the variant);
* arbitration rate — simulated: for each pair that needs a third mark, a third
  reader is drawn ``reps`` times. The third mark is one of the two earlier marks
  (chosen with equal probability) plus a signed difference: |d| drawn from the
  empirical distribution of |s1 − s2| over all pilot pairs, the sign ± with equal
  probability, clipped to [0, max] (the model: a third reader disagrees with either
  earlier reader as much as readers disagreed in the pilot). ``decide`` with the
  third mark says whether arbitration follows. Extra reads that follow a provisional
  0/full are simulated the same way around the provisional score (snapped to step).
  ``random.Random(seed)``: the same seed gives the same prediction.

Scores stay exact (Fractions) through ``decide``; only the rates are floats.
The suggestion is the smallest candidate T whose predicted third-marking rate is at
most ``target_third_rate`` under the item's own policy.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

from marking import policy as pol
from marking.scores import from_cp

from .monitor import item_pairs


@dataclass(frozen=True)
class Pilot:
    pairs: list[tuple[Fraction, Fraction]]
    max_points: Fraction
    step: Fraction


def _snap(x: Fraction, step: Fraction, max_points: Fraction) -> Fraction:
    x = min(max(x, Fraction(0)), max_points)
    return (x / step).__round__() * step if (x / step).denominator != 1 else x


def predict(pilot: Pilot, thresholds: Sequence[Fraction], variants: dict[str, dict[str, Any]], *,
            reps: int = 200, seed: int = 0, double_marked: bool = True) -> list[dict[str, Any]]:
    diffs = [abs(a - b) for a, b in pilot.pairs]
    if not diffs:
        return []
    rows = []
    for name, overrides in variants.items():
        params = pol.normalise(overrides)
        for t in thresholds:
            t = Fraction(t)
            rng = random.Random(f"{seed}|{name}|{t}")
            thirds = extras = 0
            arbitrations = 0.0
            for a, b in pilot.pairs:
                d = pol.decide(params, pol.MarkSet(first=a, second=b), threshold=t, max_score=pilot.max_points,
                               double_marked=double_marked)
                if d.action == "third":
                    thirds += 1
                    hits = 0
                    for _ in range(reps):
                        anchor = a if rng.random() < 0.5 else b
                        c = _snap(anchor + rng.choice(diffs) * (1 if rng.random() < 0.5 else -1), pilot.step,
                                  pilot.max_points)
                        d3 = pol.decide(params, pol.MarkSet(first=a, second=b, third=c), threshold=t,
                                        max_score=pilot.max_points, double_marked=double_marked)
                        if d3.action == "extra":
                            e = _snap(d3.provisional + rng.choice(diffs) * (1 if rng.random() < 0.5 else -1),
                                      pilot.step, pilot.max_points)
                            d3 = pol.decide(params, pol.MarkSet(first=a, second=b, third=c, extra=e), threshold=t,
                                            max_score=pilot.max_points, double_marked=double_marked)
                        hits += d3.action == "arbitration"
                    arbitrations += hits / reps
                elif d.action == "extra":
                    extras += 1
                    hits = 0
                    for _ in range(reps):
                        e = _snap(d.provisional + rng.choice(diffs) * (1 if rng.random() < 0.5 else -1), pilot.step,
                                  pilot.max_points)
                        d2 = pol.decide(params, pol.MarkSet(first=a, second=b, extra=e), threshold=t,
                                        max_score=pilot.max_points, double_marked=double_marked)
                        hits += d2.action == "arbitration"
                    arbitrations += hits / reps
            n = len(pilot.pairs)
            rows.append({"variant": name, "threshold": str(t), "pairs": n, "third_rate": thirds / n,
                         "extra_rate": extras / n, "arbitration_rate": arbitrations / n})
    return rows


def suggest(rows: list[dict[str, Any]], variant: str, target_third_rate: float = 0.10) -> str | None:
    ok = [r for r in rows if r["variant"] == variant and r["third_rate"] <= target_third_rate]
    return min(ok, key=lambda r: Fraction(r["threshold"]))["threshold"] if ok else None


def pilot_from_db(db, item_id: int) -> Pilot:
    from marking.models import Item
    with db.read() as session:
        item = session.get(Item, item_id)
        pairs = [(from_cp(p[2]), from_cp(p[5])) for p in item_pairs(session, item_id)]
        return Pilot(pairs, from_cp(item.max_cp), from_cp(item.step_cp))


DEFAULT_VARIANTS = {
    "A (item policy)": {},
    "B (lt)": {"agreement": "lt"},
    "C (within both)": {"third_rule": "within_both"},
    "A without extra reads": {"extra_read_zero": False, "extra_read_full": False},
}


def run(db, item_id: int, *, thresholds: Sequence[Fraction] | None = None,
        variants: dict[str, dict[str, Any]] | None = None, reps: int = 200, seed: int = 0,
        target_third_rate: float = 0.10) -> dict[str, Any]:
    """What-if on the item's current double marks; variants default to A/B/C around the item's policy."""
    from marking.models import Item
    pilot = pilot_from_db(db, item_id)
    with db.read() as session:
        item = session.get(Item, item_id)
        _row, item_params = pol.policy_for_item(session, item)
    if thresholds is None:
        steps = int(pilot.max_points / pilot.step)
        thresholds = [pilot.step * k for k in range(0, min(steps, 12) + 1)]
    base = {k: v for k, v in item_params.items()}
    variants = variants or {name: {**base, **over} for name, over in DEFAULT_VARIANTS.items()}
    rows = predict(pilot, thresholds, variants, reps=reps, seed=seed)
    first = next(iter(variants))
    diffs = sorted(abs(a - b) for a, b in pilot.pairs)
    p90 = diffs[min(len(diffs) - 1, int(0.9 * len(diffs)))] if diffs else None
    return {"item_id": item_id, "pairs": len(pilot.pairs), "rows": rows, "seed": seed, "reps": reps,
            "suggested_threshold": suggest(rows, first, target_third_rate),
            "p90_abs_difference": str(p90) if p90 is not None else None,
            "target_third_rate": target_third_rate}
