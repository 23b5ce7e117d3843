"""Fill decisions calibrated per card.

Each method supplies two values per bubble: ``primary`` (is it a mark?) and ``faint``
(is there any ink at all?). For method A both are the same normalised darkness; for
method B they are dark-pixel shares under a mark cut and a faint cut.

Per card: the blank level and the noise (robust sigma) come from the distribution of
all bubbles (most bubbles on a card are blank) checked against the printed blank
calibration bubble; the mark level is the median of the card's clear marks. A bubble is
* blank     if faint < t_low (= blank level + max(floor, k sigma)),
* filled    if primary >= t_high (= filled_fraction x mark level),
* uncertain otherwise — faint marks, erasure residue, ticks: people decide (R-OMR-7).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import Settings

BLANK, UNCERTAIN, FILLED = 0, 1, 2


def median(a: np.ndarray | list[float]) -> float:
    """``float(np.median(a))`` over all values, without np.median's generic-axis overhead
    (it is called ~10 times per card on a few hundred values). Same value: the middle
    element, or the mean of the two middle ones taken the way np.median takes it."""
    a = np.asarray(a).reshape(-1)
    n = a.size
    if n == 0 or np.isnan(a).any():
        return float(np.median(a))
    h = n // 2
    if n % 2:
        return float(np.partition(a, h)[h])
    return float(np.partition(a, (h - 1, h))[h - 1:h + 1].mean())


@dataclass
class Calibration:
    blank_level: float
    noise: float
    mark_level: float
    t_low: float
    t_high: float
    primary_noise: float
    ok: bool
    low_contrast: bool
    detail: str


def calibrate(primary: np.ndarray, faint: np.ndarray, cal_filled: int, cal_blank: int,
              settings: Settings, noise_floor: float, scale_floor: float) -> Calibration:
    """Thresholds for this card. ``cal_*`` index the printed calibration bubbles, which
    are excluded from the statistics of the candidate's bubbles."""
    mask = np.ones(primary.size, dtype=bool)
    mask[[cal_filled, cal_blank]] = False
    if not mask.any():          # a page with no candidate bubbles (answer-only page)
        mask[cal_blank] = True
    f = faint[mask]
    p = primary[mask]
    blank = median(f)
    mad = median(np.abs(f - blank))
    noise = max(noise_floor, 1.4826 * mad)
    t_low = blank + max(settings.blank_floor * scale_floor, settings.noise_k * noise)
    # one measure for both (method A): its medians once
    p_mad = mad if primary is faint else median(np.abs(p - median(p)))
    p_noise = max(noise_floor, 1.4826 * p_mad)
    # The card's own mark level (candidates press differently): median of everything
    # above the blank band; a handful of faint marks or residues cannot move a median
    # of the ~70 marks of a card.
    marks = p[p > t_low]
    mark_level = median(marks) if marks.size >= 8 else settings.default_mark_level * scale_floor
    mark_level = min(max(mark_level, 0.3 * scale_floor), 1.2 * scale_floor)
    t_high = max(settings.filled_fraction * mark_level, t_low + 2 * p_noise)
    # The printed calibration bubbles must read as printed: solid well above the mark
    # threshold, blank below the faint threshold.
    ok = bool(primary[cal_filled] >= max(t_high, 0.5 * scale_floor) and faint[cal_blank] < t_low
              and abs(blank - faint[cal_blank]) < max(3 * noise, 0.05 * scale_floor))
    detail = "" if ok else (f"calibration filled={primary[cal_filled]:.3f} blank={faint[cal_blank]:.3f} "
                            f"blank level={blank:.3f}")
    # R-OMR faint-mark target: a mark of 25 % of the card's mark level must clear t_low.
    low_contrast = bool(t_low - blank >= settings.max_faint_to_mark * mark_level)
    return Calibration(blank, noise, mark_level, t_low, t_high, p_noise, ok, low_contrast, detail)


def classify(primary: np.ndarray, faint: np.ndarray, cal: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """Per-bubble state and signed margin in noise units (negative = uncertain)."""
    state = np.full(primary.size, UNCERTAIN, dtype=np.int8)
    state[faint < cal.t_low] = BLANK
    state[primary >= cal.t_high] = FILLED
    margin = np.where(state == FILLED, (primary - cal.t_high) / cal.primary_noise,
                      np.where(state == BLANK, (cal.t_low - faint) / cal.noise,
                               -np.minimum(faint - cal.t_low, cal.t_high - primary) / cal.noise))
    return state, margin


@dataclass
class GroupDecision:
    state: str                 # blank | single | multiple | ambiguous
    chosen: list[str]
    uncertain: list[str]
    confidence: float
    reasons: list[str]


def decide_group(kind: str, labels: tuple[str, ...], states: list[int], margins: list[float],
                 min_confidence: float) -> GroupDecision:
    """Decide one question / digit column from its bubbles' states (plain lists: groups
    are small and this runs ~60 times per card)."""
    # most groups are all blank or one clear mark: skip the list scans they do not need
    filled = [labels[i] for i, s in enumerate(states) if s == FILLED] if FILLED in states else []
    unsure = [labels[i] for i, s in enumerate(states) if s == UNCERTAIN] if UNCERTAIN in states else []
    reasons: list[str] = []
    confidence = min(margins) if margins else 0.0
    if unsure:
        if filled:
            reasons.append("erasure_residue")
            # A faint mark beside a full one is never taken as the answer; for a single
            # choice the full mark stands (flagged), otherwise people decide.
            state = "single" if kind in ("single", "digit") and len(filled) == 1 else "ambiguous"
        else:
            reasons.append("faint_mark")
            state = "ambiguous"
    elif not filled:
        state = "blank"
    elif len(filled) == 1:
        state = "single"
    else:
        state = "multiple"
        if kind in ("single", "digit"):
            reasons.append("multi_mark")
    if not unsure and confidence < min_confidence:
        reasons.append("low_confidence")
    return GroupDecision(state, filled, unsure, confidence, reasons)
