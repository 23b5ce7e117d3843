"""Candidate-number rules (R-OMR-8) and the barcode reader for the label area."""
from __future__ import annotations

from typing import Any

import numpy as np
import zxingcpp

SITTINGS = {"1": "April", "2": "October", "3": "January", "4": "July"}


def validate_candidate_number(number: str | None) -> list[str]:
    """Problems with a candidate number under R-OMR-8 (empty list = valid).

    12 digits: 1-2 city, 3-4 county, 5-6 exam year, 7 sitting (1 April, 2 October,
    3 January, 4 July), 8-12 sequence number.
    """
    if number is None:
        return ["missing"]
    problems = []
    if len(number) != 12:
        problems.append(f"has {len(number)} characters, expected 12")
    if not number.isdigit() or not number.isascii():
        problems.append("not all digits")
        return problems
    if len(number) == 12:
        if number[6] not in SITTINGS:
            problems.append(f"sitting digit {number[6]} not in 1-4")
        if number[0:2] == "00":
            problems.append("city code 00")
        if number[7:12] == "00000":
            problems.append("sequence number 00000")
    return problems


def describe_candidate_number(number: str) -> dict[str, Any]:
    return {"city": number[0:2], "county": number[2:4], "year": number[4:6],
            "sitting": number[6], "sitting_name": SITTINGS.get(number[6]), "sequence": number[7:12]}


def read_code128(grey: np.ndarray, corners_px: np.ndarray, margin_px: float,
                 upright: bool | None = None) -> list[str]:
    """Code128 texts found in the axis-aligned box around ``corners_px`` (sorted).
    ``upright``: the bars run vertically in the image (page turned 0 or 180 degrees), so
    zxing need not try the 90-degree rotation."""
    h, w = grey.shape
    x0 = int(max(0, np.floor(corners_px[:, 0].min() - margin_px)))
    x1 = int(min(w, np.ceil(corners_px[:, 0].max() + margin_px)))
    y0 = int(max(0, np.floor(corners_px[:, 1].min() - margin_px)))
    y1 = int(min(h, np.ceil(corners_px[:, 1].max() + margin_px)))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return []
    crop = np.ascontiguousarray(grey[y0:y1, x0:x1])
    found = zxingcpp.read_barcodes(crop, formats=zxingcpp.BarcodeFormat.Code128, try_invert=False,
                                   try_rotate=upright is not True, try_downscale=False)
    return sorted({b.text for b in found if b.valid})
