"""Subjective answer regions: cut each item's region(s) out of a registered scan, with
identity regions blanked (R-SEC-1: item images shown to markers carry no identity),
plus an ink-density measure (near-empty pre-flag) and "writing outside the region"
detection. Pure: image in, arrays out (``png_bytes`` to encode)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .template import Template

WHITE = 255


@dataclass
class RegionCut:
    item: str
    page: int
    index: int                  # n-th region of the item on this page
    rect_mm: tuple[float, float, float, float]
    image: np.ndarray           # uint8 grey, upright, identity regions blanked
    ink_share: float            # share of dark pixels inside (border and label excluded)
    near_empty: bool
    outside_ink_share: float    # share of dark pixels in a band just outside the region
    writing_outside: bool

    def summary(self) -> dict[str, Any]:
        return {"item": self.item, "page": self.page, "index": self.index,
                "rect_mm": list(self.rect_mm), "size_px": [int(self.image.shape[1]), int(self.image.shape[0])],
                "ink_share": round(self.ink_share, 5), "near_empty": self.near_empty,
                "outside_ink_share": round(self.outside_ink_share, 5),
                "writing_outside": self.writing_outside}


def _warp(grey: np.ndarray, h_mm_to_px: np.ndarray, rect_mm: tuple[float, float, float, float],
          dpi: float) -> np.ndarray:
    x, y, w, h = rect_mm
    p = dpi / 25.4
    out_w, out_h = max(1, int(round(w * p))), max(1, int(round(h * p)))
    # output pixel (u, v) -> mm -> scan pixel; never warp the whole page, only this box
    a = np.array([[1 / p, 0, x + 0.5 / p], [0, 1 / p, y + 0.5 / p], [0, 0, 1]])
    m = h_mm_to_px @ a
    src_scale = np.sqrt(abs(np.linalg.det(h_mm_to_px[:2, :2]))) / p
    src = grey
    if src_scale > 1.5:  # anti-alias when shrinking (blur only the needed box)
        corners = np.array([[0, 0, 1], [out_w, 0, 1], [out_w, out_h, 1], [0, out_h, 1]], float) @ m.T
        corners = corners[:, :2] / corners[:, 2:]
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 4
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 4
        x0, y0 = max(0, x0), max(0, y0)
        box = cv2.GaussianBlur(grey[y0:y1, x0:x1], (0, 0), 0.4 * src_scale)
        src = box
        m = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float) @ m
    return cv2.warpPerspective(src, m, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=WHITE)


def _intersect(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> tuple[float, float, float, float] | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def _dark_mask(img: np.ndarray) -> np.ndarray:
    paper = float(np.percentile(img, 90)) if img.size else 255.0
    return img < 0.6 * max(paper, 60.0)


def cut_regions(image: np.ndarray, template: Template, reading: dict[str, Any], *, dpi: float = 100,
                near_empty_share: float = 0.0015, outside_share: float = 0.004,
                band_mm: float = 2.5, label_box_mm: tuple[float, float] = (12.0, 6.0)) -> list[RegionCut]:
    """Cut the subjective regions of the page a reading was made from.

    ``image`` is the same scan (grey or BGR array) the reading came from; the reading
    must be a successful one (it carries the homography under ``geometry``).
    """
    if reading.get("status") == "error" or "geometry" not in reading:
        raise ValueError("cut_regions needs a successful reading with geometry")
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    hmat = np.array(reading["geometry"]["h_mm_to_px"], dtype=np.float64)
    page_code = int(reading["page"]["used"])
    page = template.page(page_code)
    p = dpi / 25.4
    out: list[RegionCut] = []
    counts: dict[str, int] = {}
    for region in page.answer_regions:
        item = region.item or ""
        idx = counts.get(item, 0)
        counts[item] = idx + 1
        rect = region.rect_mm
        img = _warp(grey, hmat, rect, dpi)
        for ident in page.identity_regions:
            inter = _intersect(rect, ident.rect_mm)
            if inter is not None:
                x0 = int(np.floor((inter[0] - rect[0]) * p)); y0 = int(np.floor((inter[1] - rect[1]) * p))
                x1 = int(np.ceil((inter[0] + inter[2] - rect[0]) * p)); y1 = int(np.ceil((inter[1] + inter[3] - rect[1]) * p))
                img[max(0, y0):y1, max(0, x0):x1] = WHITE
        # ink inside: skip the printed border (1 mm) and the printed item label
        dark = _dark_mask(img)
        inner = np.zeros_like(dark)
        b = int(np.ceil(1.0 * p))
        inner[b:-b or None, b:-b or None] = True
        inner[:int(label_box_mm[1] * p), :int(label_box_mm[0] * p)] = False
        ink = float(dark[inner].mean()) if inner.any() else 0.0
        # a band just outside the region, minus other regions of the page
        big = (rect[0] - band_mm - 1, rect[1] - band_mm - 1, rect[2] + 2 * band_mm + 2, rect[3] + 2 * band_mm + 2)
        around = _warp(grey, hmat, big, dpi)
        band = np.ones(around.shape, dtype=bool)
        g = int(np.floor(band_mm * p))        # keep clear of the printed border (1 mm)
        band[g:-g or None, g:-g or None] = False
        for other in list(page.answer_regions) + list(page.identity_regions):
            inter = _intersect(big, (other.rect_mm[0] - 1, other.rect_mm[1] - 1,
                                     other.rect_mm[2] + 2, other.rect_mm[3] + 2))
            if inter is not None and other is not region:
                x0 = int((inter[0] - big[0]) * p); y0 = int((inter[1] - big[1]) * p)
                x1 = int(np.ceil((inter[0] + inter[2] - big[0]) * p)); y1 = int(np.ceil((inter[1] + inter[3] - big[1]) * p))
                band[max(0, y0):y1, max(0, x0):x1] = False
        outside = float(_dark_mask(around)[band].mean()) if band.any() else 0.0
        out.append(RegionCut(item, page_code, idx, rect, img, ink, ink < near_empty_share,
                             outside, outside > outside_share))
    return out


def png_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
