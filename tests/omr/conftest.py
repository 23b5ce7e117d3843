"""Shared fixtures for the OMR tests: the example template and seeded synthetic scans."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omr.synthetic import ScanParams, degrade, encode, fill_card, random_answers
from omr.template import Template, load_template

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cards" / "zikao-a4.json"
CANDIDATE = "450126100042"   # R-OMR-8: city 45, county 01, year 26, sitting 1, sequence 00042
SUBJECT = "00015"


@pytest.fixture(scope="session")
def template() -> Template:
    return load_template(EXAMPLE)


@pytest.fixture(scope="session")
def answers(template: Template) -> dict[str, str]:
    return random_answers(template, np.random.default_rng(11), blank_rate=0.05)


def make_refl(template: Template, answers: dict[str, str], seed: int = 0, dpi: float = 200, **kw):
    kw.setdefault("candidate_number", CANDIDATE)
    kw.setdefault("subject_code", SUBJECT)
    return fill_card(template, answers, rng=np.random.default_rng(seed), dpi=dpi, **kw)


def scan(refl: np.ndarray, params: ScanParams = ScanParams(), seed: int = 0, dpi: float = 200,
         fmt: str = "jpeg", quality: int = 90) -> bytes:
    return encode(degrade(refl, params, np.random.default_rng(seed + 1), dpi), fmt, quality)


def wrong_items(reading: dict, truth) -> list[str]:
    return [q for q, v in reading["objective"].items() if "".join(v["chosen"]) != truth.answers[q]]


def flag_codes(reading: dict) -> set[str]:
    return {f["code"] for f in reading["flags"]}


@pytest.fixture(scope="session")
def clean_card(template: Template, answers: dict[str, str]):
    refl, truth = make_refl(template, answers, seed=1)
    return refl, truth, scan(refl, ScanParams(rotation_deg=0.8), seed=1)
