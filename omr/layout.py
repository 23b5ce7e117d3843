"""Compiled geometry of a template page: every bubble, mark and region in mm, and
``layout(template, dpi)`` which lists them in pixels (JSON-serialisable)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .template import Template, mm_to_px, page_size_px


@dataclass(frozen=True)
class Group:
    """Bubbles decided together: one objective question, one digit column, ..."""
    name: str            # "q:12", "candidate_number:3", "subject_code:0", "absence", "calibration"
    kind: str            # "single" | "multiple" | "digit" | "flag" | "calibration"
    item: str | None     # objective item code, or None
    labels: tuple[str, ...]
    index: np.ndarray    # bubble indices into PageLayout.bubbles_mm
    block: str           # block id used to pool local shifts

    @property
    def index_list(self) -> list[int]:
        return self.index.tolist()


@dataclass(frozen=True)
class PageLayout:
    template_hash: str
    page_code: int
    bubbles_mm: np.ndarray          # (N, 2)
    bubble_ids: tuple[str, ...]
    bubble_block: np.ndarray        # (N,) int id of the block, for pooling local shifts
    groups: tuple[Group, ...]
    calibration_filled: int         # bubble index
    calibration_blank: int          # bubble index
    fiducials_mm: np.ndarray        # (4, 2) clockwise from top-left
    coded_corner: int               # index 0..3 of the coded fiducial
    timing_mm: np.ndarray           # (M, 2)
    timing_size_mm: np.ndarray      # (M, 2) width, height
    timing_edge: np.ndarray         # (M,) 0 top, 1 bottom, 2 left, 3 right
    timing_along: tuple[np.ndarray, ...]   # per edge: its marks' indices in order along it
    timing_frame: tuple[float, float, float, float]  # mean x of left, right, mean y of top, bottom marks
    page_bits_mm: np.ndarray        # (B, 2)


def _bubble_table(template: Template, page_code: int) -> tuple[list[tuple[str, float, float, str]], list[tuple[str, str, str | None, tuple[str, ...], list[int], str]]]:
    page = template.page(page_code)
    rows: list[tuple[str, float, float, str]] = []
    groups: list[tuple[str, str, str | None, tuple[str, ...], list[int], str]] = []

    def add(bid: str, xy: tuple[float, float], block: str) -> int:
        rows.append((bid, xy[0], xy[1], block))
        return len(rows) - 1

    for grid in (page.candidate_number, page.subject_code):
        if grid is None:
            continue
        for pos in range(grid.digits):
            idx = [add(f"{grid.name}/{pos}/{d}", grid.centre_mm(pos, d), grid.name) for d in range(10)]
            groups.append((f"{grid.name}:{pos}", "digit", None, tuple("0123456789"), idx, grid.name))
    if page.absence_mm is not None:
        groups.append(("absence", "flag", None, ("absent",), [add("absence", page.absence_mm, "absence")], "absence"))
    for block in page.objective_blocks:
        for qi, code in enumerate(block.codes):
            idx = [add(f"q/{code}/{opt}", block.centre_mm(qi, oi), block.id)
                   for oi, opt in enumerate(block.options)]
            groups.append((f"q:{code}", block.kind, code, tuple(block.options), idx, block.id))
    cf = add("calibration/filled", template.calibration_filled_mm, "calibration")
    cb = add("calibration/blank", template.calibration_blank_mm, "calibration")
    groups.append(("calibration", "calibration", None, ("filled", "blank"), [cf, cb], "calibration"))
    return rows, groups


@lru_cache(maxsize=64)
def _page_layout_cached(template: Template, page_code: int) -> PageLayout:
    rows, groups = _bubble_table(template, page_code)
    blocks = sorted({r[3] for r in rows})
    block_id = {b: i for i, b in enumerate(blocks)}
    timing, sizes, edge_idx = [], [], []
    for ei, edge in enumerate(template.timing_edges):
        for c in edge.centres_mm():
            timing.append(c)
            sizes.append(edge.size_mm)
            edge_idx.append(("top", "bottom", "left", "right").index(edge.edge))
    bubbles = np.array([(r[1], r[2]) for r in rows], dtype=np.float64).reshape(-1, 2)
    timing_mm, edges = np.array(timing, dtype=np.float64), np.array(edge_idx, dtype=np.int32)
    along = tuple(np.flatnonzero(edges == e)[np.argsort(timing_mm[edges == e, 0 if e < 2 else 1], kind="stable")]
                  for e in range(4))
    frame = tuple(float(timing_mm[edges == e, axis].mean()) for e, axis in ((2, 0), (3, 0), (0, 1), (1, 1)))
    return PageLayout(
        template_hash=template.content_hash, page_code=page_code,
        bubbles_mm=bubbles, bubble_ids=tuple(r[0] for r in rows),
        bubble_block=np.array([block_id[r[3]] for r in rows], dtype=np.int32),
        groups=tuple(Group(g[0], g[1], g[2], g[3], np.array(g[4], dtype=np.int64), g[5]) for g in groups),
        calibration_filled=len(rows) - 2, calibration_blank=len(rows) - 1,
        fiducials_mm=np.array([f.centre_mm for f in template.fiducials], dtype=np.float64),
        coded_corner=[f.coded for f in template.fiducials].index(True),
        timing_mm=timing_mm, timing_size_mm=np.array(sizes, dtype=np.float64),
        timing_edge=edges, timing_along=along, timing_frame=frame,
        page_bits_mm=np.array(template.page_code_bits_mm, dtype=np.float64))


def page_layout(template: Template, page_code: int) -> PageLayout:
    """Compiled geometry of one page (cached per template and page)."""
    return _page_layout_cached(template, page_code)


def _r(v: float) -> float:
    return round(float(v), 2) + 0.0


def _rect_px(rect_mm: tuple[float, float, float, float], dpi: float) -> list[float]:
    return [_r(mm_to_px(v, dpi)) for v in rect_mm]


def layout(template: Template, dpi: float) -> dict[str, Any]:
    """Every bubble's centre and radius and every region's rectangle, in px at ``dpi``.

    Pixel coordinates follow the usual image convention: (0, 0) is the centre of the
    top-left pixel of the page rendered at ``dpi``.
    """
    def px(xy: tuple[float, float] | np.ndarray) -> list[float]:
        return [_r(mm_to_px(xy[0], dpi)), _r(mm_to_px(xy[1], dpi))]

    w, h = page_size_px(template, dpi)
    out: dict[str, Any] = {
        "template_id": template.id, "template_hash": template.content_hash, "dpi": dpi,
        "page_size_px": [w, h], "bubble_radius_px": _r(mm_to_px(template.bubble_radius_mm, dpi)),
        "fiducials": [{"corner": f.corner, "coded": f.coded, "centre_px": px(f.centre_mm),
                       "size_px": _r(mm_to_px(template.fiducial_size_mm, dpi))} for f in template.fiducials],
        "timing_marks": [{"edge": e.edge, "centre_px": px(c), "size_px": px(e.size_mm)}
                         for e in template.timing_edges for c in e.centres_mm()],
        "page_code_bits": [px(b) for b in template.page_code_bits_mm],
        "pages": [],
    }
    for page in template.pages:
        pl = page_layout(template, page.code)
        radius = _r(mm_to_px(template.bubble_radius_mm, dpi))
        out["pages"].append({
            "code": page.code,
            "bubbles": [{"id": bid, "centre_px": px(pl.bubbles_mm[i]), "radius_px": radius}
                        for i, bid in enumerate(pl.bubble_ids)],
            "barcode_px": _rect_px(page.barcode_rect_mm, dpi) if page.barcode_rect_mm else None,
            "answer_regions": [{"item": r.item, "rect_px": _rect_px(r.rect_mm, dpi)} for r in page.answer_regions],
            "identity_regions": [{"label": r.label, "rect_px": _rect_px(r.rect_mm, dpi)} for r in page.identity_regions],
        })
    return out
