"""Debug overlays (on demand only, never on the hot path): bubbles coloured by state
with their fill values, fiducials, and the alignment error."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .layout import page_layout
from .template import Template

# BGR
COLOURS = {"0": (160, 160, 160), "1": (0, 140, 255), "2": (0, 170, 0)}
FLAGGED = (0, 0, 230)


def draw_overlay(image: np.ndarray, template: Template, reading: dict[str, Any]) -> np.ndarray:
    """A BGR copy of the scan with the reading drawn on it."""
    img = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    if reading.get("status") == "error" or "geometry" not in reading:
        msg = f"ERROR {reading.get('error', {}).get('reason', '?')}"
        cv2.putText(img, msg, (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, FLAGGED, 3, cv2.LINE_AA)
        return img
    geo = reading["geometry"]
    layout = page_layout(template, int(reading["page"]["used"]))
    scale = float(reading["dpi"]) / 25.4
    r = int(round(template.bubble_radius_mm * scale))
    flagged_items = {f.get("item") for f in reading["flags"]}
    fills: dict[int, float] = {}
    for code, q in reading["objective"].items():
        g = next(g for g in layout.groups if g.item == code)
        for i, v in zip(g.index_list, q["fill"]):
            fills[i] = v
    font = max(0.3, scale / 16)
    for i, ((x, y), st) in enumerate(zip(geo["bubble_centres_px"], geo["bubble_states"])):
        c = (int(round(x)), int(round(y)))
        bid = layout.bubble_ids[i]
        item = bid.split("/")[1] if bid.startswith("q/") else None
        colour = FLAGGED if item in flagged_items and st != "0" else COLOURS[st]
        cv2.circle(img, c, r + 2, colour, 2 if st != "0" else 1, cv2.LINE_AA)
        if i in fills and st != "0":
            cv2.putText(img, f"{fills[i]:.2f}", (c[0] - r, c[1] - r - 3), cv2.FONT_HERSHEY_SIMPLEX,
                        font, colour, 1, cv2.LINE_AA)
    for x, y in geo["fiducials_px"]:
        c = (int(round(x)), int(round(y)))
        cv2.drawMarker(img, c, (255, 0, 200), cv2.MARKER_CROSS, int(8 * scale), 2)
    al = reading["alignment"]
    text = (f"method {reading['method']}  orientation {reading['orientation']}  "
            f"RMS {al['rms_px']:.2f} px / {al['rms_mm']:.3f} mm  status {reading['status']}")
    cv2.putText(img, text, (int(20 * scale), int(8 * scale)), cv2.FONT_HERSHEY_SIMPLEX, font * 1.3,
                (200, 0, 0), 2, cv2.LINE_AA)
    return img
