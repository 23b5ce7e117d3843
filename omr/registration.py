"""Registration: find the four orientation-coded corner fiducials on the downscaled
image (connected components + shape test), the timing marks near their predicted
places, and map template millimetres to image pixels.

Two diverse mappings (R-OMR-3 asks for two independent reads):
* method A: RANSAC homography over fiducials + timing marks;
* method B: trimmed least-squares homography over the timing marks only, plus a Coons-patch
  interpolation of the timing-mark residuals (paper fan-out, scanner stretch).
Neither warps the page: template points are mapped into the image and sampled there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .decide import median
from .flags import Reason
from .layout import PageLayout
from .template import Template
from .workimage import WorkImage

_CORNER_DIRS = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)  # TL, TR, BR, BL


@dataclass
class Fiducials:
    points_px: np.ndarray            # (4, 2) full-res image points, ordered as template TL,TR,BR,BL
    found: np.ndarray                # (4,) bool
    orientation: int                 # 0/90/180/270, clockwise turn of the page in the image
    ink_level: float                 # mean grey of the solid fiducials
    paper_level: float


@dataclass
class Registration:
    method: str
    h_mm_to_px: np.ndarray           # 3x3
    orientation: int
    rms_px: float
    max_px: float
    px_per_mm: float
    fiducials_found: int
    timing_found: int
    timing_total: int
    fiducials_px: np.ndarray
    timing_px: np.ndarray            # (M, 2) measured (nan if not found)
    coons: "CoonsResidual | None" = None
    flags: list[tuple[Reason, str]] = field(default_factory=list)

    def map(self, pts_mm: np.ndarray) -> np.ndarray:
        out = apply_h(self.h_mm_to_px, pts_mm)
        if self.coons is not None:
            out = out + self.coons(pts_mm)
        return out

    @property
    def rms_mm(self) -> float:
        return self.rms_px / self.px_per_mm


class RegistrationError(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def apply_h(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    q = p @ h[:, :2].T + h[:, 2]
    return q[:, :2] / q[:, 2:3]


# ------------------------------------------------------------------------- fiducials

def find_fiducials(work: WorkImage, template: Template, dpi_guess: float) -> Fiducials:
    f = work.factor
    hs, ws = work.small_shape
    side = template.fiducial_size_mm * dpi_guess / 25.4 / f
    # Each corner mark is searched for in its own corner window (a third of each side is
    # enough for +-10 degree skew on an enlarged scan canvas): 4x less work than the page.
    wx, wy = int(ws * 0.3), int(hs * 0.3)
    # Most scans put each mark near its corner, so a square of `near` small px at the
    # corner is searched first (5x fewer pixels). Its answer is the whole window's when
    # the mark it picks is nearer the corner than anything reaching outside the square
    # can be (see _pick_mark); otherwise the whole window is searched.
    tf = np.array([fd.centre_mm for fd in template.fiducials])
    pw, ph = template.page_size_mm
    reach_mm = float(np.max(np.minimum(np.abs(tf), np.abs(np.array([pw, ph]) - tf))))
    near = int(np.ceil(4 * reach_mm * dpi_guess / 25.4 / f))
    # Marks are found on row means (a quarter of the pixels; a threshold does not need
    # more) and then measured on exact block means around each mark.
    marks: list[_Mark | None] = []
    for k in range(4):
        if near < min(wx, wy):
            decided, mark = _corner_mark(work, k, near, near, side, bound=near)
            if decided:
                marks.append(mark)
                continue
        marks.append(_corner_mark(work, k, wx, wy, side)[1])
    if sum(m is None for m in marks) > 1:
        raise RegistrationError(Reason.FIDUCIALS_NOT_FOUND,
                                f"corner marks found in {sum(m is not None for m in marks)} of 4 corners")
    pts_small, holes, inks = _measure_marks(work, marks)
    pts = work.to_full(pts_small)
    found = np.array([m is not None for m in marks])
    sides = _sides(pts)
    if found.all() and not _is_rectangle(sides):
        # one wrong or damaged mark: keep the three that make a right angle
        fits = [k for k in range(4) if _completes(pts, k)]
        if len(fits) != 1:
            raise RegistrationError(Reason.FIDUCIALS_NOT_FOUND,
                                    "corner marks do not form a rectangle (wrong marks or page cut off)")
        found[fits[0]] = False
        holes[fits[0]] = False
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        if not _completes(pts, k):
            raise RegistrationError(Reason.FIDUCIALS_NOT_FOUND, "three corner marks without a right angle")
        pts[k] = pts[(k - 1) % 4] + pts[(k + 1) % 4] - pts[(k + 2) % 4]
        sides = _sides(pts)
        # the orientation code survives a lost mark: if no remaining mark has the hole,
        # the lost one was the coded one
        holes[k] = not holes.any()
    top, bottom, left, right = sides
    t_ratio = (tf[1, 0] - tf[0, 0]) / (tf[3, 1] - tf[0, 1])
    ratio = (top + bottom) / (left + right)
    portrait = 0.88 < ratio / t_ratio < 1.13
    landscape = 0.88 < ratio * t_ratio < 1.13
    if not (portrait or landscape):
        raise RegistrationError(Reason.WRONG_PAGE_SIZE,
                                f"corner marks aspect {ratio:.3f} vs template {t_ratio:.3f}")
    if holes.sum() != 1:
        raise RegistrationError(Reason.ORIENTATION_UNKNOWN,
                                f"{int(holes.sum())} coded corner marks found (expected 1)")
    k_img = int(np.flatnonzero(holes)[0])
    k_tpl = [fd.coded for fd in template.fiducials].index(True)
    rot = (k_img - k_tpl) % 4
    if (rot % 2 == 1) != (landscape and not portrait):
        raise RegistrationError(Reason.ORIENTATION_UNKNOWN, "coded mark disagrees with page aspect")
    ordered = np.array([pts[(j + rot) % 4] for j in range(4)])
    found_t = np.array([found[(j + rot) % 4] for j in range(4)])
    paper_level = median(work.paper_sample)
    return Fiducials(ordered, found_t, 90 * rot, median(inks), paper_level)


_Mark = tuple[int, int, int, int, float, float]       # x, y, w, h, cx, cy (small px)


def _corner_mark(work: WorkImage, k: int, w: int, h: int, side: float,
                 bound: int | None = None) -> tuple[bool, _Mark | None]:
    """(decided, mark) for corner k, searched in the w x h window at that corner of the
    small grid (see ``_pick_mark``)."""
    hs, ws = work.small_shape
    ox = 0 if _CORNER_DIRS[k][0] > 0 else ws - w
    oy = 0 if _CORNER_DIRS[k][1] > 0 else hs - h
    win = work.row_window(ox, oy, ox + w, oy + h)
    dark = cv2.compare(win, cv2.multiply(work.paper_window(ox, oy, ox + w, oy + h), 0.55), cv2.CMP_LT)
    _, _, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
        dark, 8, cv2.CV_16U, cv2.CCL_SPAGHETTI)
    comps = [(*st, *ce) for st, ce in zip(stats.tolist()[1:], centroids.tolist()[1:])]
    return _pick_mark(comps, ox, oy, k, w, h, side, bound)


def _pick_mark(comps: list[tuple[int, int, int, int, int, float, float]], ox: int, oy: int, k: int,
               ww: int, hh: int, side: float, bound: int | None
               ) -> tuple[bool, _Mark | None]:
    """(decided, mark): the corner mark among the dark components (x, y, w, h, area, cx,
    cy) of the ww x hh window at (ox, oy) of the small grid, i.e. the component of a
    fiducial's size and solidity furthest towards image corner k, or None.

    With ``bound`` (the window is the bound x bound square at the corner) it is decided
    only when the mark is provably the one any larger corner window gives: every pixel
    outside the square is at least ``bound`` from the corner (|dx| + |dy|), and a
    component cut by the square's inner sides is no nearer than its nearest inside
    bounding-box corner. Otherwise (False, None): search the larger window."""
    # a corner window holds a few dozen components: plain Python on them costs less
    # than a few dozen numpy calls on tiny arrays
    dx, dy = _CORNER_DIRS[k].tolist()
    c0 = 0.0 if dx > 0 else float(ox + ww)         # the image corner (small px)
    c1 = 0.0 if dy > 0 else float(oy + hh)
    lo, hi = 0.55 * side, 1.75 * side
    best, nearest = -1, np.inf
    for i, (x, y, w, h, area, cx, cy) in enumerate(comps):
        if (lo <= w <= hi and lo <= h <= hi and area >= 0.42 * w * h
                and w <= 1.6 * h and h <= 1.6 * w):
            # the corner mark is the candidate furthest towards its image corner
            proj = (cx + ox - c0) * dx + (cy + oy - c1) * dy
            if proj < nearest:
                best, nearest = i, proj
    if best < 0:
        return bound is None, None
    if bound is not None:
        if not nearest < bound:
            return False, None
        for x, y, w, h, *_ in comps:
            if ((x + w >= ww) if dx > 0 else (x <= 0)) or ((y + h >= hh) if dy > 0 else (y <= 0)):
                # cut: its nearest bbox corner bounds its centroid's distance from below
                nx = ox + (x if dx > 0 else x + w - 1)
                ny = oy + (y if dy > 0 else y + h - 1)
                if (nx - c0) * dx + (ny - c1) * dy <= nearest:
                    return False, None
    bx, by, bw, bh, _, cx, cy = comps[best]
    return True, (bx + ox, by + oy, bw, bh, cx + ox, cy + oy)


def _measure_marks(work: WorkImage, marks: list[_Mark | None]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Darkness-weighted centres (small px, (4, 2)), which marks have the hole, and the
    mean grey of the solid marks, on exact block means around the marks found."""
    hs, ws = work.small_shape
    pts = np.zeros((4, 2))
    holes = np.zeros(4, dtype=bool)
    inks: list[float] = []
    for k, mark in enumerate(marks):
        if mark is None:
            continue
        x0, y0, cw, ch, ccx, ccy = mark
        x0, y0 = max(0, x0 - 2), max(0, y0 - 2)
        x1, y1 = min(ws, x0 + cw + 4), min(hs, y0 + ch + 4)
        win = work.small_window(x0, y0, x1, y1)
        pap = work.paper_window(x0, y0, x1, y1)
        wgt = np.maximum(pap * 0.8 - win, 0)
        tot = wgt.sum()
        xs = np.arange(x0, x1, dtype=np.float64)
        ys = np.arange(y0, y1, dtype=np.float64)
        pts[k] = (float(wgt.sum(axis=0) @ xs) / tot, float(wgt.sum(axis=1) @ ys) / tot)
        # the hole: the 3 x 3 block means at the component's centre against the paper there
        cx, cy = int(round(ccx)), int(round(ccy))
        hx0, hy0, hx1, hy1 = max(0, cx - 1), max(0, cy - 1), min(ws, cx + 2), min(hs, cy + 2)
        if x0 <= hx0 and y0 <= hy0 and hx1 <= x1 and hy1 <= y1:
            # contiguous, so float32 sums add in the same order as on a fresh array
            centre = np.ascontiguousarray(win[hy0 - y0:hy1 - y0, hx0 - x0:hx1 - x0]).mean()
        else:
            centre = work.small_window(hx0, hy0, hx1, hy1).mean()
        holes[k] = centre > 0.6 * work.paper_level(cx, cy)
        if not holes[k]:
            inks.append(float(win[win < pap * 0.55].mean()))
    return pts, holes, inks


def _sides(pts: np.ndarray) -> list[float]:
    """Lengths of the top, bottom, left and right sides of the quadrilateral TL, TR, BR, BL."""
    d = pts[[1, 2, 3, 2]] - pts[[0, 3, 0, 1]]
    return np.sqrt((d * d).sum(axis=1)).tolist()


def _is_rectangle(sides: list[float]) -> bool:
    top, bottom, left, right = sides
    return 0.9 < top / bottom < 1.11 and 0.9 < left / right < 1.11


def _completes(pts: np.ndarray, missing: int) -> bool:
    """The three marks other than ``missing`` make a right angle at the opposite corner."""
    o = pts[(missing + 2) % 4]
    u, v = pts[(missing + 1) % 4] - o, pts[(missing + 3) % 4] - o
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return bool(nu > 0 and nv > 0 and abs(float(u @ v)) / (nu * nv) < 0.08)


# ---------------------------------------------------------------------- timing marks

def _weighted_centroids(work: WorkImage, centres_small: np.ndarray, half: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Darkness-weighted centroids, masses and "inside" (no weight on the window's
    border: everything dark lies within) in square windows (vectorised over windows)."""
    hs, ws = work.small_shape
    S = 2 * half + 1
    c = np.rint(centres_small).astype(np.int64)
    base = c - half
    win = work.small_windows(base[:, 0], base[:, 1], S)              # (M, S, S)
    offs = np.arange(S)
    xs = (base[:, 0:1] + offs).clip(0, ws - 1)                         # (M, S)
    ys = (base[:, 1:2] + offs).clip(0, hs - 1)
    pap = work.paper_small_at(c[:, 0], c[:, 1])[:, None, None]        # lighting is smooth
    # weights: darkness beyond a noise floor of 12 % of the paper level
    wgt = pap * 0.88 - win
    np.maximum(wgt, 0, out=wgt)
    cols, rows = wgt.sum(axis=1), wgt.sum(axis=2)
    mass = cols.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (cols * xs).sum(axis=1) / mass
        cy = (rows * ys).sum(axis=1) / mass
    inside = (cols[:, 0] + cols[:, -1] + rows[:, 0] + rows[:, -1]) == 0
    return np.stack([cx, cy], axis=1), mass, inside


def find_timing_marks(work: WorkImage, layout: PageLayout, h0: np.ndarray, ppmm: float,
                      ink: float, paper: float, step: int = 1) -> np.ndarray:
    """Measured centres (full-res px) of the timing marks, nan where not found (and
    where skipped: only every ``step``-th mark is looked for)."""
    sel = np.arange(0, len(layout.timing_mm), step)
    pred = work.to_small(apply_h(h0, layout.timing_mm[sel]))
    ppmm_small = ppmm / work.factor
    size = layout.timing_size_mm[sel]
    expected = size[:, 0] * size[:, 1] * ppmm_small ** 2 * max(1.0, (paper * 0.88 - ink))
    # Each mark is measured in a window 0.9 mm wider than the mark around where the
    # fiducials put it. The fiducials predict a mark to a fraction of a millimetre, so
    # that window nearly always holds the whole mark; where it does not (something dark
    # on its border, or not a mark's darkness), the mark is first looked for 2.2 mm
    # around its place and then measured there.
    half2 = int(np.ceil((size.max() / 2 + 0.9) * ppmm_small))
    c2, mass, inside = _weighted_centroids(work, pred, half2)
    redo = ~(inside & (mass > 0.45 * expected) & (mass < 1.8 * expected))
    if redo.any():
        half1 = int(np.ceil((size.max() / 2 + 2.2) * ppmm_small))
        c1 = _weighted_centroids(work, pred[redo], half1)[0]
        c1 = np.where(np.isfinite(c1), c1, pred[redo])
        c2[redo], mass[redo] = _weighted_centroids(work, c1, half2)[:2]
    ok = (mass > 0.45 * expected) & (mass < 1.8 * expected) & np.isfinite(c2).all(axis=1)
    ok &= np.linalg.norm(c2 - pred, axis=1) < 2.0 * ppmm_small
    out = np.full((len(layout.timing_mm), 2), np.nan)
    found = work.to_full(c2)
    found[~ok] = np.nan
    out[sel] = found
    return out


# ---------------------------------------------------------------------- the two maps

def _errors(h: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals dst - h(src) and their lengths."""
    resid = dst - apply_h(h, src)
    return resid, np.sqrt((resid * resid).sum(axis=1))


def _rms(err: np.ndarray) -> tuple[float, float]:
    return float(np.sqrt(np.mean(err ** 2))), float(err.max())


def register_a(work: WorkImage, template: Template, layout: PageLayout, fid: Fiducials,
               max_rms_mm: float, min_timing_fraction: float) -> Registration:
    """Method A: homography (RANSAC) over the fiducials and all found timing marks."""
    h0 = cv2.getPerspectiveTransform(layout.fiducials_mm.astype(np.float32),
                                     fid.points_px.astype(np.float32)).astype(np.float64)
    ppmm = _scale(h0, layout)
    # A anchors on the fiducials and checks/refines with every other timing mark (B
    # uses them all): half the work, and the two reads share fewer measurements.
    timing = find_timing_marks(work, layout, h0, ppmm, fid.ink_level, fid.paper_level, step=2)
    ok = np.isfinite(timing).all(axis=1)
    src = np.concatenate([layout.fiducials_mm[fid.found], layout.timing_mm[ok]])
    dst = np.concatenate([fid.points_px[fid.found], timing[ok]])
    h, inl = cv2.findHomography(src, dst, cv2.RANSAC, 0.5 * ppmm, maxIters=500, confidence=0.995)
    if h is None:
        h, inl = h0, np.ones((len(src), 1), np.uint8)
    inl = inl.ravel().astype(bool)
    rms, mx = _rms(_errors(h, src[inl], dst[inl])[1])
    reg = Registration("a", h, fid.orientation, rms, mx, _scale(h, layout), int(fid.found.sum()),
                       int(ok.sum()), len(range(0, len(ok), 2)), fid.points_px, timing)
    _quality_flags(reg, max_rms_mm, min_timing_fraction, int((~inl).sum()))
    return reg


class CoonsResidual:
    """Coons-patch interpolation of the timing-mark residuals of a homography: each edge
    residual is interpolated along its edge and blended into the interior, so paper
    fan-out or scanner stretch measured at the edges moves the bubbles in between."""

    def __init__(self, layout: PageLayout, residual: np.ndarray, ok: np.ndarray) -> None:
        self.x_left, self.x_right, self.y_top, self.y_bottom = layout.timing_frame
        # residuals as x + iy: one interpolation and one blend move both components
        resid = residual[:, 0] + 1j * residual[:, 1]
        self.edges = []
        for k, along in enumerate(layout.timing_along):
            idx = along[ok[along]]
            self.edges.append((layout.timing_mm[idx, 0 if k < 2 else 1], resid[idx]))
        # corner residuals: mean of the two edges meeting there (precomputed once), and
        # their bilinear blend c00 (1-u)(1-v) + c10 u (1-v) + c01 (1-u) v + c11 u v
        # written as c00 + u (c10 - c00) + v ((c01 - c00) + u (c00 - c10 - c01 + c11))
        xs = np.array([self.x_left, self.x_right])
        ys = np.array([self.y_top, self.y_bottom])
        (t0, t1), (b0, b1) = self._edge(0, xs), self._edge(1, xs)
        (l0, l1), (r0, r1) = self._edge(2, ys), self._edge(3, ys)
        c00, c10, c01, c11 = (t0 + l0) / 2, (t1 + r0) / 2, (b0 + l1) / 2, (b1 + r1) / 2
        self.corner = (c00, c10 - c00, c01 - c00, c00 - c10 - c01 + c11)

    def _edge(self, k: int, s: np.ndarray) -> np.ndarray:
        """Edge k's residual (x + iy) interpolated at parameters s along it."""
        p, r = self.edges[k]
        return np.interp(s, p, r) if p.size else np.zeros(s.size, dtype=complex)

    def __call__(self, pts_mm: np.ndarray) -> np.ndarray:
        x, y = pts_mm[:, 0], pts_mm[:, 1]
        u = ((x - self.x_left) / (self.x_right - self.x_left)).clip(0, 1)
        v = ((y - self.y_top) / (self.y_bottom - self.y_top)).clip(0, 1)
        edges = ((1 - v) * self._edge(0, x) + v * self._edge(1, x)
                 + (1 - u) * self._edge(2, y) + u * self._edge(3, y))
        c00, du, dv, duv = self.corner
        out = edges - (c00 + u * du + v * (dv + u * duv))
        return out.view(np.float64).reshape(-1, 2)


def _trimmed_homography(src: np.ndarray, dst: np.ndarray, floor_px: float, rounds: int = 3
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(h, points kept, residuals and their lengths for h), or None when no fit: least
    squares, then refits without points beyond 3x the median residual (at least
    ``floor_px``): a deterministic robust fit, deliberately not method A's RANSAC."""
    keep = np.ones(len(src), dtype=bool)
    fit = None
    for _ in range(rounds):
        if keep.sum() < 8:
            break
        h, _ = cv2.findHomography(src[keep], dst[keep], 0)
        if h is None:
            return None
        fit = (h, *_errors(h, src, dst))
        new_keep = fit[2] <= max(floor_px, 3.0 * median(fit[2][keep]))
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return None if fit is None else (fit[0], keep, fit[1], fit[2])


def register_b(work: WorkImage, template: Template, layout: PageLayout, fid: Fiducials,
               max_rms_mm: float, min_timing_fraction: float) -> Registration:
    """Method B: trimmed least-squares homography over the timing marks only (the
    fiducials only give orientation and a first guess), then a Coons patch of the
    residuals."""
    h0 = cv2.getPerspectiveTransform(layout.fiducials_mm.astype(np.float32),
                                     fid.points_px.astype(np.float32)).astype(np.float64)
    ppmm = _scale(h0, layout)
    timing = find_timing_marks(work, layout, h0, ppmm, fid.ink_level, fid.paper_level)
    ok = np.isfinite(timing).all(axis=1)
    edges_ok = np.bincount(layout.timing_edge[ok], minlength=4).min() >= 2
    if ok.sum() < 8 or not edges_ok:
        reg = Registration("b", h0, fid.orientation, 0.0, 0.0, ppmm, int(fid.found.sum()), int(ok.sum()),
                           len(ok), fid.points_px, timing)
        reg.flags.append((Reason.MISREGISTRATION, f"only {int(ok.sum())} timing marks found"))
        return reg
    src, dst = layout.timing_mm[ok], timing[ok]
    fit = _trimmed_homography(src, dst, 0.3 * ppmm)
    if fit is None:
        h, inl, (r, err) = h0, np.ones(len(src), dtype=bool), _errors(h0, src, dst)
    else:
        h, inl, r, err = fit
    rms, mx = _rms(err[inl])
    resid = np.zeros_like(timing)
    resid[ok] = r
    good = ok.copy()
    good[np.flatnonzero(ok)[~inl]] = False
    reg = Registration("b", h, fid.orientation, rms, mx, _scale(h, layout), int(fid.found.sum()),
                       int(ok.sum()), len(ok), fid.points_px, timing,
                       coons=CoonsResidual(layout, resid, good))
    _quality_flags(reg, max_rms_mm, min_timing_fraction, int((~inl).sum()))
    return reg


def _scale(h: np.ndarray, layout: PageLayout) -> float:
    """Pixels per mm of h along the top and bottom fiducial sides."""
    f = layout.fiducials_mm
    sides = np.stack([apply_h(h, f), f])                   # image px, template mm
    d = sides[:, [1, 2]] - sides[:, [0, 3]]
    px, mm = np.sqrt((d * d).sum(axis=2)).sum(axis=1).tolist()
    return px / mm


def _quality_flags(reg: Registration, max_rms_mm: float, min_fraction: float, outliers: int) -> None:
    if reg.rms_mm > max_rms_mm:
        reg.flags.append((Reason.MISREGISTRATION, f"alignment RMS {reg.rms_mm:.2f} mm"))
    elif reg.timing_found < min_fraction * reg.timing_total:
        reg.flags.append((Reason.MISREGISTRATION,
                          f"{reg.timing_found} of {reg.timing_total} timing marks found"))
    elif outliers > 0.1 * reg.timing_total:
        reg.flags.append((Reason.MISREGISTRATION, f"{outliers} timing marks off their places"))
