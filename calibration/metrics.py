"""Pure marker-quality statistics (reference/marking.md §4). No database here.

Statistics are floats: they describe markers, they are never a score path. Inputs
are points (ints, Fractions or floats); scores written back anywhere stay exact
elsewhere (R-MARK-2).

Conventions (documented in docs/calibration.md):

* SD is the sample SD (ddof = 1); a sample of one has SD 0.
* SMD = (mean_m − mean_ref) / pooled SD, pooled SD = sqrt((s_m² + s_ref²) / 2);
  positive = lenient. 0 when both SDs are 0 and the means agree, ±inf otherwise.
* Exact = |d| = 0; adjacent = |d| ≤ 1 point; within T = |d| ≤ T.
* QWK over the categories 0, step, …, max: κ = 1 − Σ w·O / Σ w·E with
  w_ij = (i − j)² / (k − 1)²; 1.0 when the expected disagreement is 0 and the
  observed is 0 too.
* Drift: two-sided CUSUM (k, h in SD units) and EWMA (λ, L) on a standardised stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np


def _arr(values) -> np.ndarray:
    return np.asarray([float(v) for v in values], dtype=float)


def mean_sd(values) -> tuple[float | None, float | None]:
    a = _arr(values)
    if a.size == 0:
        return None, None
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def smd(marker_scores, reference_scores) -> float | None:
    """Standardised mean difference, positive = lenient (§4.1)."""
    m, r = _arr(marker_scores), _arr(reference_scores)
    if m.size == 0 or r.size == 0:
        return None
    sm = m.std(ddof=1) if m.size > 1 else 0.0
    sr = r.std(ddof=1) if r.size > 1 else 0.0
    pooled = math.sqrt((sm * sm + sr * sr) / 2)
    diff = float(m.mean() - r.mean())
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / pooled


@dataclass(frozen=True)
class Agreement:
    n: int
    exact: float | None
    adjacent: float | None
    within: float | None


def agreement(a, b, threshold) -> Agreement:
    """Exact / adjacent (≤ 1 point) / within-T (≤ T) agreement rates (§4.2), exact comparisons."""
    pairs = [(Fraction(x), Fraction(y)) for x, y in zip(a, b, strict=True)]
    n = len(pairs)
    if n == 0:
        return Agreement(0, None, None, None)
    t = Fraction(threshold)
    diffs = [abs(x - y) for x, y in pairs]
    return Agreement(n, sum(d == 0 for d in diffs) / n, sum(d <= 1 for d in diffs) / n,
                     sum(d <= t for d in diffs) / n)


def categories(max_points, step) -> int:
    return int(Fraction(max_points) / Fraction(step)) + 1


def to_category(score, step) -> int:
    q = Fraction(score) / Fraction(step)
    if q.denominator != 1:
        raise ValueError(f"score {score} is not on the step {step}")
    return int(q)


def confusion(a, b, max_points, step) -> np.ndarray:
    """k×k matrix of first (rows) × second (columns) reads — the NAEP-style display (§4.2)."""
    k = categories(max_points, step)
    m = np.zeros((k, k), dtype=int)
    for x, y in zip(a, b, strict=True):
        m[to_category(x, step), to_category(y, step)] += 1
    return m


def qwk(a, b, max_points, step) -> float | None:
    """Quadratic weighted kappa (§4.3) over the item's score categories."""
    if len(a) == 0:
        return None
    observed = confusion(a, b, max_points, step).astype(float)
    k = observed.shape[0]
    if k < 2:
        return None
    n = observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / n
    i, j = np.indices((k, k))
    w = (i - j) ** 2 / (k - 1) ** 2
    den = float((w * expected).sum())
    num = float((w * observed).sum())
    if den == 0:
        return 1.0 if num == 0 else None
    return 1.0 - num / den


def validity(errors, tolerances) -> tuple[float | None, float | None]:
    """Seed validity = share |s − definitive| ≤ T_seed; and the signed mean bias (§4.4)."""
    errs = [Fraction(e) for e in errors]
    if not errs:
        return None, None
    within = sum(abs(e) <= Fraction(t) for e, t in zip(errs, tolerances, strict=True)) / len(errs)
    return within, float(sum(errs) / len(errs))


def share_in_band(scores, max_points, band=(0.68, 0.74)) -> float | None:
    """Central tendency (保险分系数, §4.8): share of scores within [lo, hi] × full marks."""
    if not scores:
        return None
    lo, hi = band[0] * float(max_points), band[1] * float(max_points)
    return sum(lo - 1e-9 <= float(s) <= hi + 1e-9 for s in scores) / len(scores)


def median(values) -> float | None:
    a = _arr(values)
    return float(np.median(a)) if a.size else None


# --------------------------------------------------------------------------- drift

@dataclass(frozen=True)
class Alarm:
    method: str
    fired: bool
    index: int | None          # first index (0-based) at which the alarm fired
    direction: str | None      # "lenient" | "severe"
    path_hi: tuple[float, ...]
    path_lo: tuple[float, ...]
    limit: float

    def as_dict(self) -> dict:
        return {"method": self.method, "fired": self.fired, "index": self.index, "direction": self.direction,
                "limit": str(round(self.limit, 4)), "last_hi": str(round(self.path_hi[-1], 4)) if self.path_hi else None,
                "last_lo": str(round(self.path_lo[-1], 4)) if self.path_lo else None}


def cusum(z: Sequence[float], k: float = 0.5, h: float = 8.0) -> Alarm:
    """Two-sided tabular CUSUM on a standardised stream (target 0, SD 1).

    S⁺ᵢ = max(0, S⁺ᵢ₋₁ + zᵢ − k), S⁻ᵢ = max(0, S⁻ᵢ₋₁ − zᵢ − k); alarm when either > h.
    """
    hi = lo = 0.0
    path_hi, path_lo = [], []
    fired_at, direction = None, None
    for i, x in enumerate(z):
        hi = max(0.0, hi + float(x) - k)
        lo = max(0.0, lo - float(x) - k)
        path_hi.append(hi)
        path_lo.append(lo)
        if fired_at is None and (hi > h or lo > h):
            fired_at, direction = i, ("lenient" if hi > h else "severe")
    return Alarm("cusum", fired_at is not None, fired_at, direction, tuple(path_hi), tuple(path_lo), h)


def ewma(z: Sequence[float], lam: float = 0.2, L: float = 3.0) -> Alarm:
    """EWMA Zᵢ = λ zᵢ + (1 − λ) Zᵢ₋₁ with exact time-varying limits ±L·sqrt(λ/(2−λ)·(1−(1−λ)^{2i}))."""
    value = 0.0
    path, limits = [], []
    fired_at, direction = None, None
    for i, x in enumerate(z, start=1):
        value = lam * float(x) + (1 - lam) * value
        limit = L * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * i)))
        path.append(value)
        limits.append(limit)
        if fired_at is None and abs(value) > limit:
            fired_at, direction = i - 1, ("lenient" if value > 0 else "severe")
    asymptote = L * math.sqrt(lam / (2 - lam))
    return Alarm("ewma", fired_at is not None, fired_at, direction, tuple(path), tuple(-v for v in limits),
                 asymptote)


def rolling(values: Sequence[float], window: int) -> list[float]:
    """Rolling mean over ``window`` (shorter at the start)."""
    out, acc = [], []
    for v in values:
        acc.append(float(v))
        if len(acc) > window:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def pearson(x, y) -> float | None:
    a, b = _arr(x), _arr(y)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])
