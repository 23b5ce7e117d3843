"""R-MARK-3 resolution rules and variants as properties (pure: no database)."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marking import policy
from marking.policy import MarkSet, decide

MAX = Fraction(20)
STEP = Fraction(1, 2)
points = st.integers(min_value=0, max_value=40).map(lambda n: n * STEP)
thresholds = st.integers(min_value=0, max_value=8).map(lambda n: n * STEP)
ties = st.sampled_from(policy.TIE_RULES)
agreements = st.sampled_from(policy.AGREEMENT)
SETTINGS = settings(max_examples=300, deadline=None)


def P(**kw):
    base = {"extra_read_zero": False, "extra_read_full": False}
    base.update(kw)
    return policy.normalise(base)


def within(a, b, t, agreement):
    return abs(a - b) <= t if agreement == "le" else abs(a - b) < t


@SETTINGS
@given(a=points, b=points, t=thresholds, agreement=agreements)
def test_two_marks_agree_iff_within_threshold(a, b, t, agreement):
    d = decide(P(agreement=agreement), MarkSet(first=a, second=b), threshold=t, max_score=MAX)
    if within(a, b, t, agreement):
        assert (d.action, d.final, d.outcome) == ("final", (a + b) / 2, "agreed")
        assert isinstance(d.final, Fraction)
    else:
        assert d.action == "third"


@SETTINGS
@given(a=points, b=points, c=points, t=thresholds, tie=ties, agreement=agreements)
def test_rule_a_nearest(a, b, c, t, tie, agreement):
    """Default (A): within T of one → mean with it; of both → nearer (tie rule); neither → arbitration."""
    params = P(tie=tie, agreement=agreement)
    d = decide(params, MarkSet(first=a, second=b, third=c), threshold=t, max_score=MAX)
    if within(a, b, t, agreement):
        assert d.outcome == "agreed"
        return
    near_a, near_b = within(c, a, t, agreement), within(c, b, t, agreement)
    if not near_a and not near_b:
        assert d.action == "arbitration"
        return
    assert d.action == "final" and d.outcome == "third_resolved"
    if near_a and near_b:
        if abs(c - a) != abs(c - b):
            nearer = a if abs(c - a) < abs(c - b) else b
            assert d.final == (c + nearer) / 2
        elif tie == "mean_all":
            assert d.final == (a + b + c) / 3
        else:
            pick = max(a, b) if tie == "higher" else min(a, b)
            assert d.final == (c + pick) / 2
    else:
        assert d.final == (c + (a if near_a else b)) / 2
    # The final always lies between the lowest and highest mark, exactly.
    assert min(a, b, c) <= d.final <= max(a, b, c)


@SETTINGS
@given(a=points, b=points, c=points, t=thresholds)
def test_rule_c_requires_both(a, b, c, t):
    d = decide(P(third_rule="within_both"), MarkSet(first=a, second=b, third=c), threshold=t, max_score=MAX)
    if abs(a - b) <= t:
        return
    if abs(c - a) <= t and abs(c - b) <= t:
        assert d.action == "final"
    else:
        assert d.action == "arbitration"


@SETTINGS
@given(a=points, b=points, c=points, t=thresholds)
def test_rule_d_third_is_final(a, b, c, t):
    d = decide(P(third_rule="third_final"), MarkSet(first=a, second=b, third=c), threshold=t, max_score=MAX)
    if abs(a - b) > t:
        assert (d.action, d.final, d.used) == ("final", c, ("third",))


@SETTINGS
@given(a=points, b=points, c=points, x=points, t=thresholds)
def test_arbitration_is_final(a, b, c, x, t):
    d = decide(P(), MarkSet(first=a, second=b, third=c, arbitration=x), threshold=t, max_score=MAX)
    assert (d.action, d.final, d.outcome) == ("final", x, "arbitrated")


@SETTINGS
@given(a=points, t=thresholds)
def test_single_marked_first_is_final(a, t):
    d = decide(P(), MarkSet(first=a), threshold=t, max_score=MAX, double_marked=False)
    assert (d.action, d.final, d.outcome) == ("final", a, "single")
    assert decide(P(), MarkSet(), threshold=t, max_score=MAX, double_marked=False).action == "wait"


@SETTINGS
@given(a=points, b=points, e=points, t=thresholds)
def test_extra_read_for_zero_and_full(a, b, e, t):
    params = policy.default_params()
    d = decide(params, MarkSet(first=a, second=b), threshold=t, max_score=MAX)
    if d.action != "final" and d.action != "extra":
        return
    provisional = (a + b) / 2
    if provisional in (0, MAX):
        assert d.action == "extra" and d.provisional == provisional
        d2 = decide(params, MarkSet(first=a, second=b, extra=e), threshold=t, max_score=MAX)
        if abs(e - provisional) <= t:
            assert (d2.action, d2.final) == ("final", provisional) and "extra" in d2.used
        else:
            assert d2.action == "arbitration"
    else:
        assert d.action == "final"


def test_tie_rules_worked_example():
    a, b, c, t = Fraction(4), Fraction(8), Fraction(6), Fraction(2)
    assert decide(P(tie="higher"), MarkSet(a, b, c), threshold=t, max_score=MAX).final == 7
    assert decide(P(tie="lower"), MarkSet(a, b, c), threshold=t, max_score=MAX).final == 5
    assert decide(P(tie="mean_all"), MarkSet(a, b, c), threshold=t, max_score=MAX).final == 6
    # Rule B: "达到或超过阈值" — a gap of exactly T escalates.
    assert decide(P(agreement="lt"), MarkSet(Fraction(4), Fraction(6)), threshold=t, max_score=MAX).action == "third"
    assert decide(P(), MarkSet(Fraction(4), Fraction(6)), threshold=t, max_score=MAX).final == 5
    # Mean of three is exact (a third of a point is not a decimal).
    assert decide(P(tie="mean_all"), MarkSet(Fraction(1), Fraction(5), Fraction(3)), threshold=t,
                  max_score=MAX).final == Fraction(3)


def test_params_validated_and_hashed():
    with pytest.raises(policy.PolicyError):
        policy.normalise({"tie": "random"})
    with pytest.raises(policy.PolicyError):
        policy.normalise({"bogus": 1})
    assert policy.content_hash({}) == policy.content_hash(policy.default_params())
    assert policy.content_hash({"tie": "lower"}) != policy.content_hash({})


def test_floats_never_enter():
    with pytest.raises(TypeError):
        decide(P(), MarkSet(first=0.5, second=Fraction(1)), threshold=Fraction(1), max_score=MAX)


def test_ensure_policy_versions(db):
    with db.write() as s:
        v1 = policy.ensure_policy(s, "essay", {"tie": "lower"})
        again = policy.ensure_policy(s, "essay", {"tie": "lower"})
        v2 = policy.ensure_policy(s, "essay", {"tie": "mean_all"})
        assert (v1.id, v1.version) == (again.id, 1) and v2.version == 2
        assert policy.params_of(v2)["tie"] == "mean_all"


