"""Statistic formulas against independent computations; drift alarms; what-if; plots."""
from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration import metrics, plots, whatif
from marking import policy


def qwk_direct(a, b, k):
    """Textbook O/E implementation with explicit loops (independent of metrics.qwk)."""
    n = len(a)
    O = [[0.0] * k for _ in range(k)]
    for x, y in zip(a, b):
        O[x][y] += 1
    ra = [sum(O[i]) for i in range(k)]
    cb = [sum(O[i][j] for i in range(k)) for j in range(k)]
    num = den = 0.0
    for i in range(k):
        for j in range(k):
            w = (i - j) ** 2 / (k - 1) ** 2
            num += w * O[i][j]
            den += w * ra[i] * cb[j] / n
    return 1 - num / den


def test_qwk_matches_direct_and_known_value():
    a = [0, 1, 2, 2, 3, 4, 4, 1]
    b = [0, 2, 2, 1, 3, 4, 3, 1]
    assert math.isclose(metrics.qwk(a, b, 4, 1), qwk_direct(a, b, 5), rel_tol=1e-12)
    # A hand-checked value: perfect reversal on 3 categories gives κ_w = −1.
    assert math.isclose(metrics.qwk([0, 1, 2], [2, 1, 0], 2, 1), -1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10), min_size=2, max_size=40))
def test_qwk_is_one_for_identical_ratings(values):
    if len(set(values)) < 2:
        return
    scores = [Fraction(v, 2) for v in values]   # 0 … 5 points in half-point steps
    assert math.isclose(metrics.qwk(scores, scores, 5, Fraction(1, 2)), 1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=3, max_size=40))
def test_qwk_symmetric_and_matches_direct(pairs):
    a, b = [p[0] for p in pairs], [p[1] for p in pairs]
    q = metrics.qwk(a, b, 6, 1)
    if q is None:
        return
    assert math.isclose(q, metrics.qwk(b, a, 6, 1), abs_tol=1e-12)
    k_expected = sum((i - j) ** 2 for i in a for j in b)
    if k_expected:
        assert math.isclose(q, qwk_direct(a, b, 7), abs_tol=1e-9)


def test_smd_and_agreement_by_hand():
    m = [4, 5, 6, 7]          # mean 5.5, sample var 5/3
    r = [3, 4, 5, 6]          # mean 4.5, sample var 5/3
    assert math.isclose(metrics.smd(m, r), 1 / math.sqrt(5 / 3))
    a = metrics.agreement([Fraction(x) for x in (2, 3, 4, 5)], [Fraction(x) for x in (2, 4, Fraction(11, 2), 8)], 2)
    assert (a.n, a.exact, a.adjacent, a.within) == (4, 0.25, 0.5, 0.75)
    validity, bias = metrics.validity([0, 1, -3, Fraction(1, 2)], [1, 1, 1, 1])
    assert validity == 0.75 and bias == float(Fraction(-3, 2) / 4)
    assert metrics.share_in_band([7, 7.1, 5, 10], 10) == 0.5


def test_qwk_against_scipy_free_formula_with_numpy():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 9, 200)
    b = np.clip(a + rng.integers(-2, 3, 200), 0, 8)
    assert math.isclose(metrics.qwk(a.tolist(), b.tolist(), 8, 1), qwk_direct(a.tolist(), b.tolist(), 9), rel_tol=1e-12)


def test_cusum_fires_on_drift_not_on_steady():
    rng = random.Random(11)
    steady = [rng.gauss(0, 1) for _ in range(300)]
    drifting = [rng.gauss(0, 1) + (0.0 if i < 50 else 1.2) for i in range(150)]
    assert not metrics.cusum(steady, 0.5, 8.0).fired
    alarm = metrics.cusum(drifting, 0.5, 8.0)
    assert alarm.fired and alarm.index >= 50 and alarm.direction == "lenient"
    assert not metrics.ewma(steady, 0.1, 3.5).fired
    assert metrics.ewma(drifting, 0.2, 3.0).fired


def test_whatif_third_rate_exact_and_seeded():
    pilot = whatif.Pilot([(Fraction(a), Fraction(b)) for a, b in [(5, 5), (4, 6), (2, 7), (3, 3), (8, 5), (6, 6)]],
                         Fraction(10), Fraction(1, 2))
    rows = whatif.predict(pilot, [Fraction(1), Fraction(2), Fraction(3)],
                          {"A": {"extra_read_zero": False, "extra_read_full": False},
                           "B": {"agreement": "lt", "extra_read_zero": False, "extra_read_full": False}},
                          reps=50, seed=3)
    by = {(r["variant"], r["threshold"]): r for r in rows}
    # |d| = 0, 2, 5, 0, 3, 0 → A(≤T): T=1 → 3/6 third; T=2 → 2/6; T=3 → 1/6. B(<T): T=2 → 3/6; T=3 → 2/6.
    assert by[("A", "1")]["third_rate"] == 0.5
    assert by[("A", "2")]["third_rate"] == 2 / 6
    assert by[("A", "3")]["third_rate"] == 1 / 6
    assert by[("B", "2")]["third_rate"] == 0.5 and by[("B", "3")]["third_rate"] == 2 / 6
    again = whatif.predict(pilot, [Fraction(1), Fraction(2), Fraction(3)],
                           {"A": {"extra_read_zero": False, "extra_read_full": False},
                            "B": {"agreement": "lt", "extra_read_zero": False, "extra_read_full": False}},
                           reps=50, seed=3)
    assert rows == again
    assert all(0 <= r["arbitration_rate"] <= r["third_rate"] for r in rows)
    assert whatif.suggest(rows, "A", 0.2) == "3"
    # Cross-check one decision with the engine directly.
    assert policy.decide(policy.normalise({}), policy.MarkSet(first=Fraction(4), second=Fraction(6)),
                         threshold=Fraction(2), max_score=Fraction(10)).action == "final"


def test_plots_are_png():
    png = plots.validity_plot([True, True, False, True, False, False], 0.8, 4)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    alarm = metrics.cusum([0.1, 2, 2, 2, 2, 2], 0.5, 4)
    assert plots.drift_plot([0.1, 2, 2, 2, 2, 2], alarm)[:4] == b"\x89PNG"
    assert plots.matrix_plot([[1, 0], [2, 3]], ["0", "1"])[:4] == b"\x89PNG"
