"""Candidate numbers (R-OMR-8) and the roll."""
from __future__ import annotations

SITTINGS = {1: "April", 2: "October", 3: "January", 4: "July"}


def candidate_number_problems(number: str, *, year: int | None = None, sitting: int | None = None) -> list[str]:
    """Why ``number`` is not a valid 12-digit candidate number; empty when valid.

    Digits 1-2 city, 3-4 county, 5-6 exam year, 7 sitting (1 April, 2 October,
    3 January, 4 July), 8-12 sequence (001 art. 14).
    """
    if len(number) != 12 or not number.isdigit():
        return [f"{number!r} is not 12 digits"]
    problems = []
    if number[0:2] == "00":
        problems.append("city code 00 does not exist")
    if int(number[6]) not in SITTINGS:
        problems.append(f"sitting digit {number[6]} is not 1–4")
    if year is not None and number[4:6] != f"{year % 100:02d}":
        problems.append(f"year digits {number[4:6]} do not match the session year {year}")
    if sitting is not None and int(number[6]) in SITTINGS and int(number[6]) != sitting:
        problems.append(f"sitting digit {number[6]} does not match the session's sitting {sitting}")
    if number[7:] == "00000":
        problems.append("sequence number 00000 does not exist")
    return problems


def make_candidate_number(city: int, county: int, year: int, sitting: int, sequence: int) -> str:
    number = f"{city:02d}{county:02d}{year % 100:02d}{sitting:d}{sequence:05d}"
    problems = candidate_number_problems(number)
    if problems:
        raise ValueError("; ".join(problems))
    return number
