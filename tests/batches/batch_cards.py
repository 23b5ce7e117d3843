"""Small card templates and synthetic scans for the batch tests (few, small cards: fast)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BASE = json.loads((REPO / "examples" / "cards" / "zikao-a4.json").read_text(encoding="utf-8"))


def small_template() -> dict:
    """One page: 8 single-choice (1-8), 2 multiple-choice (9-10), subjective 11 and 12."""
    body = copy.deepcopy(BASE)
    body["id"] = "test-small"
    body["version"] = "1"
    page = copy.deepcopy(BASE["pages"][0])
    page.pop("barcode", None)
    page["identity_regions"] = [r for r in page["identity_regions"] if "barcode" not in r["label"]]
    page["objective_blocks"] = [
        {"id": "s", "kind": "single", "first": 1, "count": 8, "options": "ABCD", "origin_mm": [28, 117],
         "option_pitch_mm": 7, "question_pitch_mm": 5.5},
        {"id": "m", "kind": "multiple", "first": 9, "count": 2, "options": "ABCDE", "origin_mm": [112, 117],
         "option_pitch_mm": 7, "question_pitch_mm": 5.5},
    ]
    page["answer_regions"] = [{"item": "11", "rect_mm": [18, 178, 174, 44]},
                              {"item": "12", "rect_mm": [18, 226, 174, 44]}]
    body["pages"] = [page]
    return body


def two_page_template() -> dict:
    """Page 1 as small_template (items 1-10, 11); page 2 (no identity grid) carries item 12."""
    body = small_template()
    body["id"] = "test-two-page"
    p1 = body["pages"][0]
    p1["answer_regions"] = [{"item": "11", "rect_mm": [18, 178, 174, 44]}]
    p2 = copy.deepcopy(BASE["pages"][1])
    p2["answer_regions"] = [{"item": "12", "rect_mm": [18, 34, 174, 74]}]
    body["pages"] = [p1, p2]
    return body


def scan(template, answers, *, candidate, subject="00015", seed=0, dpi=100, page=1, absent=False,
         specials=(), fmt="png", writing=None, rotation=0.5):
    """Encoded scan bytes of a filled card (optionally with handwriting in regions)."""
    from omr.synthetic import ScanParams, degrade, encode, fill_card
    from omr.template import mm_to_px
    rng = np.random.default_rng(seed)
    pg = template.page(page)
    refl, truth = fill_card(template, answers, candidate_number=candidate if pg.candidate_number else None,
                            subject_code=subject if pg.subject_code else None, absent=absent, page=page, dpi=dpi,
                            rng=rng, specials=specials, barcode=False)
    for item in (writing or []):
        for region in pg.answer_regions:
            if region.item == item:
                x, y, w, h = region.rect_mm
                for line in range(3):
                    y0 = int(mm_to_px(y + 10 + line * 8, dpi))
                    x0, x1 = int(mm_to_px(x + 10, dpi)), int(mm_to_px(x + w * 0.7, dpi))
                    refl[y0:y0 + 2, x0:x1] *= 0.2
    img = degrade(refl, ScanParams(rotation_deg=rotation, noise_sigma=1.5), rng, dpi)
    return encode(img, fmt, 90), truth
