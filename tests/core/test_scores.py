"""Exact score arithmetic (R-MARK-1, R-MARK-2): no floats, one rounding at the total."""
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marking import scores

cps = st.integers(min_value=0, max_value=100_000)


def test_parse_points_is_exact():
    assert scores.parse_points("0.1") + scores.parse_points("0.2") == scores.parse_points("0.3")
    assert scores.parse_points("7/2") == Fraction(7, 2)
    assert scores.parse_points(3) == 3


@pytest.mark.parametrize("bad", [0.5, 1e-3])
def test_floats_are_refused(bad):
    with pytest.raises(TypeError, match="float"):
        scores.parse_points(bad)
    with pytest.raises(TypeError):
        scores.to_cp(bad)


@pytest.mark.parametrize("bad", ["", "abc", "1/0", "-1", "1.2.3", "1e3"])
def test_malformed_or_negative_scores_are_refused(bad):
    with pytest.raises(scores.ScoreError):
        scores.parse_points(bad)


def test_check_mark_validates_max_and_step():
    assert scores.check_mark(Fraction(7, 2), max_cp=1000, step_cp=50) == 350
    with pytest.raises(scores.ScoreError, match="step"):
        scores.check_mark(Fraction(13, 4), max_cp=1000, step_cp=50)
    with pytest.raises(scores.ScoreError, match="outside"):
        scores.check_mark(Fraction(21, 2), max_cp=1000, step_cp=50)


@given(a=cps, b=cps, c=cps)
def test_means_of_marks_stay_exact(a, b, c):
    two = scores.mean([scores.from_cp(a), scores.from_cp(b)])
    three = scores.mean([scores.from_cp(a), scores.from_cp(b), scores.from_cp(c)])
    assert two * 2 == scores.from_cp(a + b)
    assert three * 3 == scores.from_cp(a + b + c)


@given(num=st.integers(min_value=0, max_value=10**9), den=st.integers(min_value=1, max_value=600))
def test_round_total_half_up_matches_decimal(num, den):
    value = Fraction(num, den)
    # Reference: Decimal at a precision far beyond the value's size, then quantize.
    from decimal import ROUND_HALF_UP, localcontext
    with localcontext() as ctx:
        ctx.prec = 60
        ref = (Decimal(num) / Decimal(den)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    # A repeating decimal never lands exactly on .5, so the 60-digit reference is exact enough.
    assert scores.round_total(value) == ref


def test_round_total_modes_and_places():
    assert scores.round_total(Fraction(119, 2)) == Decimal(60)           # 59.5 half-up
    assert scores.round_total(Fraction(119, 2), "half_even") == Decimal(60)
    assert scores.round_total(Fraction(117, 2), "half_even") == Decimal(58)
    assert scores.round_total(Fraction(239, 4), "floor") == Decimal(59)
    assert scores.round_total(Fraction(1, 3), "ceiling") == Decimal(1)
    assert scores.round_total(Fraction(1, 8), places=2) == Decimal("0.13")
    assert str(scores.round_total(Fraction(5, 2), places=1)) == "2.5"


@given(num=st.integers(min_value=0, max_value=10**7), den=st.sampled_from([1, 2, 4, 5, 8, 20, 100, 3, 6, 7]))
def test_format_points_round_trips(num, den):
    value = Fraction(num, den)
    text = scores.format_points(value)
    assert scores.parse_points(text) == value


def test_no_float_in_score_modules():
    """Static guard: the score path source never builds a float."""
    import inspect
    import re
    from marking import scores as mod, ledger, examspec, policy, submission, adjudication, totals
    for module in (mod, ledger, examspec, policy, submission, adjudication, totals):
        source = inspect.getsource(module)
        assert not re.search(r"\bfloat\(", source), module.__name__
