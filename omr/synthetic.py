"""Synthetic filled and scanned cards with ground truth, for tests, the benchmark and
demos. Everything is seeded (numpy Generator) and reproducible.

Typical use::

    rng = np.random.default_rng(7)
    answers = random_answers(template, rng)
    card, truth = fill_card(template, answers, candidate_number="450126100042",
                            subject_code="00015", rng=rng, dpi=200)
    scan = degrade(card, ScanParams(rotation_deg=3, jpeg_quality=85), rng)
    data = encode(scan, "jpeg", 85)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

import cv2
import numpy as np

from .layout import page_layout
from .render import add_barcode, render_card
from .template import Template, mm_to_px


@dataclass(frozen=True)
class MarkStyle:
    darkness: float = 0.78      # a full pencil mark darkens paper by this share
    coverage: float = 0.95      # mark radius / bubble radius
    jitter_mm: float = 0.25     # random offset of the mark's centre
    grain: float = 0.15         # graphite texture: darkness varies by up to this share


@dataclass(frozen=True)
class Special:
    """A non-standard mark on one bubble. kind: "faint" (a real answer drawn at
    ``level`` x full darkness), "erasure" (residue of ``level`` x full darkness, NOT an
    answer), "tick" (a tick stroke instead of a fill, an answer)."""
    kind: str
    item: str
    option: str
    level: float = 0.3


@dataclass
class CardTruth:
    page: int
    candidate_number: str | None
    subject_code: str | None
    absent: bool
    answers: dict[str, str]                 # objective item -> chosen options, "" = blank
    specials: list[Special] = field(default_factory=list)

    def expected_flagged(self) -> set[str]:
        """Items a correct reader must flag (faint marks, erasures, ticks may also read)."""
        return {s.item for s in self.specials}


@dataclass(frozen=True)
class ScanParams:
    rotation_deg: float = 0.0
    perspective: float = 0.0        # max corner displacement as a share of the page size
    scale: float = 1.0
    turn: int = 0                   # 0/90/180/270 clockwise
    blur_sigma: float = 0.0         # px
    noise_sigma: float = 2.0        # grey levels
    illumination: float = 0.0       # depth of a smooth lighting gradient (0.2 = 20 % darker)
    streaks: tuple[tuple[float, float, float], ...] = ()   # (x share, width px, darkness)
    paper: float = 0.93             # paper white as a share of 255
    colour: bool = False            # BGR output with a slight paper tint


def random_candidate_number(rng: np.random.Generator) -> str:
    """A valid R-OMR-8 number: city, county, year, sitting 1-4, sequence."""
    return (f"{rng.integers(10, 100):02d}{rng.integers(1, 100):02d}{rng.integers(20, 30):02d}"
            f"{rng.integers(1, 5)}{rng.integers(1, 100000):05d}")


def random_answers(template: Template, rng: np.random.Generator, page: int | None = None,
                   blank_rate: float = 0.03) -> dict[str, str]:
    """One option per single-choice item, 1..n options per multiple-choice item."""
    out: dict[str, str] = {}
    pages = template.pages if page is None else [template.page(page)]
    for pg in pages:
        for block in pg.objective_blocks:
            for code in block.codes:
                if rng.random() < blank_rate:
                    out[code] = ""
                elif block.kind == "single":
                    out[code] = block.options[int(rng.integers(len(block.options)))]
                else:
                    k = int(rng.integers(1, len(block.options) + 1))
                    pick = sorted(rng.choice(len(block.options), size=k, replace=False).tolist())
                    out[code] = "".join(block.options[i] for i in pick)
    return out


@lru_cache(maxsize=16)
def _blank_page(template: Template, dpi: float, page: int) -> np.ndarray:
    img = render_card(template, dpi, page)
    img.setflags(write=False)
    return img


def _stamp(refl: np.ndarray, cx: float, cy: float, mask: np.ndarray, x0: int, y0: int,
           darkness: np.ndarray) -> None:
    h, w = mask.shape
    H, W = refl.shape
    xa, ya = max(0, x0), max(0, y0)
    xb, yb = min(W, x0 + w), min(H, y0 + h)
    if xa >= xb or ya >= yb:
        return
    sub = (slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
    refl[ya:yb, xa:xb] *= 1.0 - (mask * darkness)[sub]


def _fill_mark(refl: np.ndarray, cx: float, cy: float, r: float, darkness: float,
               style: MarkStyle, rng: np.random.Generator, ppmm: float, patchy: bool = False) -> None:
    jx, jy = rng.normal(0, style.jitter_mm * ppmm, 2)
    rx = r * style.coverage * rng.uniform(0.95, 1.08)
    ry = r * style.coverage * rng.uniform(0.95, 1.08)
    size = int(np.ceil(max(rx, ry) + abs(jx) + abs(jy) + 3))
    x0, y0 = int(round(cx)) - size, int(round(cy)) - size
    yy, xx = np.mgrid[0:2 * size + 1, 0:2 * size + 1].astype(np.float32)
    dx, dy = xx + x0 - (cx + jx), yy + y0 - (cy + jy)
    dist = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    mask = np.clip((1.0 - dist) * min(rx, ry) + 0.5, 0, 1).astype(np.float32)
    tex = 1.0 - style.grain * rng.random(mask.shape, dtype=np.float32)
    if patchy:  # erased graphite: blotchy, with holes
        blot = cv2.GaussianBlur(rng.random(mask.shape, dtype=np.float32), (0, 0), max(1.0, r / 4))
        blot = (blot - blot.min()) / max(1e-6, float(blot.max() - blot.min()))
        tex *= 0.5 + blot
    _stamp(refl, cx, cy, mask, x0, y0, np.float32(darkness) * tex)


def _stroke(refl: np.ndarray, pts: np.ndarray, width_px: float, darkness: float,
            rng: np.random.Generator) -> None:
    x0, y0 = np.floor(pts.min(axis=0) - width_px - 2).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + width_px + 2).astype(int)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    shifted = np.rint((pts - [x0, y0]) * 16).astype(np.int32)
    cv2.polylines(mask, [shifted], False, 255, max(1, int(round(width_px))), cv2.LINE_AA, 4)
    m = mask.astype(np.float32) / 255.0
    tex = 1.0 - 0.15 * rng.random(m.shape, dtype=np.float32)
    _stamp(refl, 0, 0, m, x0, y0, np.float32(darkness) * tex)


def fill_card(template: Template, answers: dict[str, str], *, candidate_number: str | None = None,
              subject_code: str | None = None, absent: bool = False, page: int | None = None,
              dpi: float = 200, rng: np.random.Generator | None = None, style: MarkStyle = MarkStyle(),
              specials: Iterable[Special] = (), stray_marks: int = 0,
              barcode: str | None | bool = True) -> tuple[np.ndarray, CardTruth]:
    """A printed page filled in by a candidate, as a float32 reflectance image (1 = paper).

    ``barcode``: True = a label with the candidate number, a string = a label with that
    (possibly different) number, False/None = no label.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    page_code = template.pages[0].code if page is None else page
    pg = template.page(page_code)
    img = _blank_page(template, dpi, page_code)
    label = candidate_number if barcode is True else (barcode or None)
    if label and pg.barcode_rect_mm is not None:
        img = add_barcode(img, template, page_code, label, dpi)
    refl = img.astype(np.float32) * np.float32(1 / 255)
    layout = page_layout(template, page_code)
    ppmm = mm_to_px(1, dpi)
    r = template.bubble_radius_mm * ppmm
    centre = {bid: (mm_to_px(x, dpi) - 0.5, mm_to_px(y, dpi) - 0.5)
              for bid, (x, y) in zip(layout.bubble_ids, layout.bubbles_mm.tolist())}
    specials = list(specials)
    special_at = {(s.item, s.option): s for s in specials}

    def mark(bid: str) -> None:
        cx, cy = centre[bid]
        _fill_mark(refl, cx, cy, r, style.darkness * rng.uniform(0.92, 1.05), style, rng, ppmm)

    for grid, value in ((pg.candidate_number, candidate_number), (pg.subject_code, subject_code)):
        if grid is not None and value:
            for pos, ch in enumerate(value[:grid.digits]):
                mark(f"{grid.name}/{pos}/{ch}")
    if absent and pg.absence_mm is not None:
        mark("absence")
    truth_answers: dict[str, str] = {}
    for block in pg.objective_blocks:
        for code in block.codes:
            chosen = answers.get(code, "")
            truth_answers[code] = "".join(o for o in block.options if o in chosen)
            for opt in truth_answers[code]:
                s = special_at.get((code, opt))
                cx, cy = centre[f"q/{code}/{opt}"]
                if s is None:
                    mark(f"q/{code}/{opt}")
                elif s.kind == "faint":
                    _fill_mark(refl, cx, cy, r, style.darkness * s.level, style, rng, ppmm)
                elif s.kind == "tick":
                    pts = np.array([[cx - 0.7 * r, cy - 0.05 * r], [cx - 0.2 * r, cy + 0.6 * r],
                                    [cx + 0.85 * r, cy - 0.85 * r]])
                    _stroke(refl, pts, 0.45 * ppmm, style.darkness, rng)
            for s in specials:
                if s.item == code and s.kind == "erasure":
                    if s.option in truth_answers[code]:
                        raise ValueError(f"erasure on the chosen option {code}{s.option}")
                    cx, cy = centre[f"q/{code}/{s.option}"]
                    _fill_mark(refl, cx, cy, r, style.darkness * s.level, style, rng, ppmm, patchy=True)
    for _ in range(stray_marks):
        _stray(refl, layout.bubbles_mm * ppmm, template, rng, ppmm)
    return refl, CardTruth(page_code, candidate_number, subject_code, absent, truth_answers, specials)


def _stray(refl: np.ndarray, bubbles_px: np.ndarray, template: Template, rng: np.random.Generator,
           ppmm: float) -> None:
    """A pencil stroke 3-10 mm long well away from every bubble and the edge marks."""
    w_mm, h_mm = template.page_size_mm
    for _ in range(200):
        p = np.array([rng.uniform(25, w_mm - 25), rng.uniform(30, h_mm - 30)]) * ppmm
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(3, 10) * ppmm
        q = p + length * np.array([np.cos(ang), np.sin(ang)])
        seg = np.linspace(p, q, 12)
        d = np.linalg.norm(seg[:, None, :] - bubbles_px[None, :, :], axis=2).min()
        if d > (template.bubble_radius_mm + 2.5) * ppmm:
            _stroke(refl, seg[[0, -1]], 0.4 * ppmm, 0.6, rng)
            return


def degrade(refl: np.ndarray, params: ScanParams, rng: np.random.Generator, dpi: float = 200) -> np.ndarray:
    """Scan a reflectance page: geometry (skew, perspective, scale, turns), blur, lighting,
    streaks, noise. Returns uint8 grey (or BGR if ``params.colour``)."""
    h, w = refl.shape
    ppmm = mm_to_px(1, dpi)
    c = np.array([w / 2, h / 2])
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    moved = corners.copy()
    if params.perspective:
        moved += rng.uniform(-1, 1, (4, 2)) * params.perspective * np.array([w, h])
    moved = (moved - c) * params.scale
    a = np.deg2rad(params.rotation_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = moved @ rot.T
    lo, hi = moved.min(axis=0), moved.max(axis=0)
    out_w = int(max(w, np.ceil(hi[0] - lo[0] + 4 * ppmm)))
    out_h = int(max(h, np.ceil(hi[1] - lo[1] + 4 * ppmm)))
    moved += np.array([out_w / 2, out_h / 2])
    background = params.paper * 255 * 0.97
    page = refl * np.float32(params.paper * 255)
    if np.allclose(moved, corners) and (out_w, out_h) == (w, h):
        img = page
    else:
        H = cv2.getPerspectiveTransform(corners.astype(np.float32), moved.astype(np.float32))
        img = cv2.warpPerspective(page, H, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=background)
    if params.blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), params.blur_sigma)
    if params.illumination:
        yy = np.linspace(0, 1, out_h, dtype=np.float32)[:, None]
        xx = np.linspace(0, 1, out_w, dtype=np.float32)[None, :]
        ph = rng.uniform(0, 2 * np.pi, 2)
        field_ = 1 - params.illumination * 0.5 * (1 + np.sin(ph[0] + 2.5 * xx) * np.cos(ph[1] + 2.0 * yy))
        img = img * field_.astype(np.float32)
    for xs, width, dark in params.streaks:
        x = int(xs * out_w)
        img[:, x:x + max(1, int(width))] *= np.float32(1 - dark)
    if params.noise_sigma > 0:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(params.noise_sigma)
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    k = (params.turn // 90) % 4
    if k:
        out = np.ascontiguousarray(np.rot90(out, -k))   # clockwise turn
    if params.colour:
        tint = np.array([0.97, 0.99, 1.0], dtype=np.float32)  # BGR: warm paper
        out = np.clip(out[:, :, None].astype(np.float32) * tint, 0, 255).astype(np.uint8)
    return out


def encode(img: np.ndarray, fmt: str = "jpeg", quality: int = 90, dpi: float | None = None) -> bytes:
    """Encode like a scanner would (JPEG quality or PNG)."""
    if fmt in ("jpeg", "jpg"):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    else:
        raise ValueError(f"unknown format {fmt!r}")
    if not ok:
        raise RuntimeError("encoding failed")
    return buf.tobytes()


def scan_card(template: Template, answers: dict[str, str], params: ScanParams = ScanParams(), *,
              seed: int = 0, dpi: float = 200, fmt: str = "jpeg", quality: int = 90,
              **fill_kwargs: object) -> tuple[bytes, CardTruth]:
    """Fill, scan and encode one card in one call (seeded)."""
    rng = np.random.default_rng(seed)
    refl, truth = fill_card(template, answers, dpi=dpi, rng=rng, **fill_kwargs)  # type: ignore[arg-type]
    return encode(degrade(refl, params, rng, dpi), fmt, quality), truth
