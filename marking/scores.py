"""Exact score arithmetic (R-MARK-1, R-MARK-2).

Scores never pass through a binary float. Two representations are used:

* a *mark* (what one marker awards, an objective item's points, a key's points) is
  stored as an integer number of hundredths of a point ("centipoints", ``*_cp``
  columns). Score steps of 0.5, 0.25 or 0.1 are all whole centipoints.
* a *resolved* score (the mean of two or three marks) is an exact rational
  number, held in code as :class:`fractions.Fraction` and stored as a
  numerator/denominator pair. The mean of two half-point marks is a quarter point
  and the mean of three marks can be a third: no fixed decimal unit holds those
  exactly, a fraction does.

Rounding happens once, when a subject total is summed (R-MARK-2), by
:func:`round_total`.
"""
from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Iterable

CP_PER_POINT = 100

ROUNDING_MODES = {
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
    "floor": ROUND_FLOOR,
    "ceiling": ROUND_CEILING,
}

_POINTS_RE = re.compile(r"^\s*(?P<int>\d+)(?:\.(?P<dec>\d+))?\s*$")
_FRACTION_RE = re.compile(r"^\s*(?P<num>-?\d+)\s*/\s*(?P<den>\d+)\s*$")


class ScoreError(ValueError):
    """A score that is malformed, negative, off-step, or out of range."""


def _reject_float(value: object) -> None:
    if isinstance(value, float):
        raise TypeError("binary floats are not allowed in a score path (R-MARK-2)")


def parse_points(value: str | int | Fraction | Decimal) -> Fraction:
    """Parse a score as written by a person: ``"3"``, ``"3.5"``, ``"7/2"``.

    Floats are refused outright: ``parse_points(0.1)`` raises TypeError.
    """
    _reject_float(value)
    if isinstance(value, bool):
        raise TypeError("a boolean is not a score")
    if isinstance(value, Fraction):
        result = value
    elif isinstance(value, int):
        result = Fraction(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ScoreError(f"not a finite score: {value}")
        result = Fraction(value)
    elif isinstance(value, str):
        match = _POINTS_RE.match(value)
        if match:
            decimals = match.group("dec") or ""
            result = Fraction(int(match.group("int") + decimals), 10 ** len(decimals))
        else:
            frac = _FRACTION_RE.match(value)
            if not frac or int(frac.group("den")) == 0:
                raise ScoreError(f"not a score: {value!r}")
            result = Fraction(int(frac.group("num")), int(frac.group("den")))
    else:
        raise TypeError(f"cannot read a score from {type(value).__name__}")
    if result < 0:
        raise ScoreError("a score is the points awarded and cannot be negative (R-MARK-1)")
    return result


def to_cp(points: Fraction | int) -> int:
    """Points → centipoints; refuses values that are not whole centipoints."""
    _reject_float(points)
    scaled = Fraction(points) * CP_PER_POINT
    if scaled.denominator != 1:
        raise ScoreError(f"{format_points(Fraction(points))} is not a whole number of hundredths")
    return int(scaled)


def from_cp(cp: int) -> Fraction:
    _reject_float(cp)
    return Fraction(int(cp), CP_PER_POINT)


def mean(values: Iterable[Fraction | int]) -> Fraction:
    items = [Fraction(v) for v in values]
    for v in items:
        _reject_float(v)
    if not items:
        raise ValueError("mean of no scores")
    return sum(items, Fraction(0)) / len(items)


def check_mark(points: Fraction, *, max_cp: int, step_cp: int) -> int:
    """Validate one marker's score against the item's maximum and step; return cp."""
    cp = to_cp(points)
    if cp < 0 or cp > max_cp:
        raise ScoreError(
            f"score {format_points(points)} is outside 0–{format_points(from_cp(max_cp))}"
        )
    if step_cp <= 0 or cp % step_cp != 0:
        raise ScoreError(
            f"score {format_points(points)} is not a multiple of the step "
            f"{format_points(from_cp(step_cp))}"
        )
    return cp


def round_total(total: Fraction, mode: str = "half_up", places: int = 0) -> Decimal:
    """Round a subject total once (R-MARK-2). Exact: works on the fraction itself."""
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; use one of {sorted(ROUNDING_MODES)}")
    if not 0 <= places <= 2:
        raise ValueError("a total is rounded to 0, 1 or 2 decimal places")
    # Decimal division at a precision far beyond any exam total is exact enough to
    # decide the rounding direction only if we avoid it altogether: scale, then
    # decide on the integer quotient and remainder.
    scale = 10**places
    scaled = total * scale
    quotient, remainder = divmod(scaled.numerator, scaled.denominator)
    rem = Fraction(remainder, scaled.denominator)  # 0 <= rem < 1
    rounding = ROUNDING_MODES[mode]
    if rem == 0:
        result = quotient
    elif rounding == ROUND_FLOOR:
        result = quotient
    elif rounding == ROUND_CEILING:
        result = quotient + 1
    elif rem > Fraction(1, 2):
        result = quotient + 1
    elif rem < Fraction(1, 2):
        result = quotient
    elif rounding == ROUND_HALF_UP:
        result = quotient + 1
    else:  # half even
        result = quotient + (quotient % 2)
    return Decimal(result).scaleb(-places)


def format_points(points: Fraction) -> str:
    """Exact display: a terminating decimal where there is one, else ``a/b``."""
    _reject_float(points)
    points = Fraction(points)
    den = points.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        return f"{points.numerator}/{points.denominator}"
    places = max(twos, fives)
    if places == 0:
        return str(points.numerator)
    scaled = points * 10**places
    text = str(abs(scaled.numerator)).rjust(places + 1, "0")
    sign = "-" if points < 0 else ""
    return f"{sign}{text[:-places]}.{text[-places:]}"


def fraction_to_json(points: Fraction) -> str:
    """Canonical exact text for the ledger and APIs: ``"7/2"`` or ``"3"``."""
    _reject_float(points)
    points = Fraction(points)
    if points.denominator == 1:
        return str(points.numerator)
    return f"{points.numerator}/{points.denominator}"


def fraction_from_json(text: str) -> Fraction:
    return Fraction(text)
