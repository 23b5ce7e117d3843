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
    paper = work.paper_small
    f = work.factor
    hs, ws = work.small_shape
    side = template.fiducial_size_mm * dpi_guess / 25.4 / f
    # Each corner mark is searched for in its own corner window (a third of each side is
    # enough for +-10 degree skew on an enlarged scan canvas): 4x less work than the page.
    wx, wy = int(ws * 0.3), int(hs * 0.3)
    corner_origin = np.array([[0, 0], [ws, 0], [ws, hs], [0, hs]], dtype=np.float64)
    # Most scans put each mark near its corner, so a square of `near` small px at the
    # corner is searched first (5x fewer pixels). Its answer is the whole window's when
    # the mark it picks is nearer the corner than anything reaching outside the square
    # can be (see _corner_mark); otherwise the whole window is searched.
    tf = np.array([fd.centre_mm for fd in template.fiducials])
    pw, ph = template.page_size_mm
    reach_mm = float(np.max(np.minimum(np.abs(tf), np.abs(np.array([pw, ph]) - tf))))
    near = int(np.ceil(4 * reach_mm * dpi_guess / 25.4 / f))
    comps: list[tuple[int, int, int, int, float, float] | None] = []   # x, y, w, h, cx, cy (small px)
    windows: list[tuple[int, int, np.ndarray]] = []
    for k in range(4):
        dx, dy = _CORNER_DIRS[k]
        if near < min(wx, wy):
            ox, oy = (0 if dx > 0 else ws - near), (0 if dy > 0 else hs - near)
            win = work.small_window(ox, oy, ox + near, oy + near)
            decided, comp = _corner_mark(win, paper[oy:oy + near, ox:ox + near], ox, oy, k,
                                         corner_origin[k], side, bound=near)
            if decided:
                windows.append((ox, oy, win))
                comps.append(comp)
                continue
        ox, oy = (0 if dx > 0 else ws - wx), (0 if dy > 0 else hs - wy)
        win = work.small_window(ox, oy, ox + wx, oy + wy)
        windows.append((ox, oy, win))
        comps.append(_corner_mark(win, paper[oy:oy + wy, ox:ox + wx], ox, oy, k, corner_origin[k],
                                  side)[1])

    def small(k: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Small-image block means, cut from corner window k when inside it."""
        ox, oy, win = windows[k]
        if ox <= x0 and oy <= y0 and x1 <= ox + win.shape[1] and y1 <= oy + win.shape[0]:
            # contiguous, so float32 sums add in the same order as on a fresh array
            return np.ascontiguousarray(win[y0 - oy:y1 - oy, x0 - ox:x1 - ox])
        return work.small_window(x0, y0, x1, y1)

    if sum(c is None for c in comps) > 1:
        raise RegistrationError(Reason.FIDUCIALS_NOT_FOUND,
                                f"corner marks found in {sum(c is not None for c in comps)} of 4 corners")
    pts_small = np.zeros((4, 2))
    holes = np.zeros(4, dtype=bool)
    inks: list[float] = []
    for k, comp in enumerate(comps):
        if comp is None:
            continue
        x0, y0, cw, ch, ccx, ccy = comp
        x0, y0 = max(0, x0 - 2), max(0, y0 - 2)
        win = small(k, x0, y0, min(ws, x0 + cw + 4), min(hs, y0 + ch + 4))
        pap = paper[y0:y0 + ch + 4, x0:x0 + cw + 4]
        wgt = np.clip(pap * 0.8 - win, 0, None)
        tot = wgt.sum()
        xs = np.arange(x0, x0 + win.shape[1], dtype=np.float64)
        ys = np.arange(y0, y0 + win.shape[0], dtype=np.float64)
        pts_small[k] = (float(wgt.sum(axis=0) @ xs) / tot, float(wgt.sum(axis=1) @ ys) / tot)
        cx, cy = int(round(ccx)), int(round(ccy))
        centre = small(k, max(0, cx - 1), max(0, cy - 1), min(ws, cx + 2), min(hs, cy + 2)).mean()
        holes[k] = centre > 0.6 * paper[cy, cx]
        if not holes[k]:
            inks.append(float(win[win < pap * 0.55].mean()))
    pts = work.to_full(pts_small)
    found = np.array([c is not None for c in comps])
    if found.all() and not _is_rectangle(pts):
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
        # the orientation code survives a lost mark: if no remaining mark has the hole,
        # the lost one was the coded one
        holes[k] = not holes.any()
    top, bottom = np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[2] - pts[3])
    left, right = np.linalg.norm(pts[3] - pts[0]), np.linalg.norm(pts[2] - pts[1])
    tf = np.array([fd.centre_mm for fd in template.fiducials])
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
    paper_level = median(paper[::8, ::8])
    return Fiducials(ordered, found_t, 90 * rot, median(inks), paper_level)


def _corner_mark(win: np.ndarray, paper: np.ndarray, ox: int, oy: int, k: int,
                 corner: np.ndarray, side: float, bound: int | None = None
                 ) -> tuple[bool, tuple[int, int, int, int, float, float] | None]:
    """(decided, mark): the corner mark in a window at (ox, oy) of the small image, i.e.
    the dark component of a fiducial's size and solidity furthest towards image corner
    k, as (x, y, w, h, cx, cy), or None.

    With ``bound`` (the window is the bound x bound square at the corner) it is decided
    only when the mark is provably the one any larger corner window gives: every pixel
    outside the square is at least ``bound`` from the corner (|dx| + |dy|), and a
    component cut by the square's inner sides is no nearer than its nearest inside
    bounding-box corner. Otherwise (False, None): search the larger window."""
    dark = cv2.compare(win, cv2.multiply(paper, 0.55), cv2.CMP_LT)
    _, _, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
        dark, 8, cv2.CV_16U, cv2.CCL_SPAGHETTI)
    x, y, w, h, area = (stats[1:, i].astype(np.float64) for i in range(5))
    ok = ((w >= 0.55 * side) & (w <= 1.75 * side) & (h >= 0.55 * side) & (h <= 1.75 * side)
          & (area >= 0.42 * w * h) & (w <= 1.6 * h) & (h <= 1.6 * w))
    cand = np.flatnonzero(ok)
    if cand.size == 0:
        return bound is None, None
    direction = _CORNER_DIRS[k]
    cxy = centroids[1:][cand] + (ox, oy)
    # the corner mark is the candidate furthest towards its image corner
    proj = ((cxy - corner) * direction).sum(axis=1)
    i = int(np.argmin(proj))
    best = cand[i]
    if bound is not None:
        if not proj[i] < bound:
            return False, None
        dx, dy = direction
        hh, ww = win.shape
        cut = ((x + w >= ww) if dx > 0 else (x <= 0)) | ((y + h >= hh) if dy > 0 else (y <= 0))
        if cut.any():
            # nearest bbox corner of each cut component (a lower bound of its centroid's)
            nx = ox + np.where(dx > 0, x, x + w - 1)
            ny = oy + np.where(dy > 0, y, y + h - 1)
            lower = (nx - corner[0]) * dx + (ny - corner[1]) * dy
            if (lower[cut] <= proj[i]).any():
                return False, None
    bx, by, bw, bh = (int(v) for v in stats[best + 1, :4])
    return True, (bx + ox, by + oy, bw, bh, float(centroids[best + 1][0] + ox),
                  float(centroids[best + 1][1] + oy))


def _is_rectangle(pts: np.ndarray) -> bool:
    top, bottom = np.linalg.norm(pts[1] - pts[0]), np.linalg.norm(pts[2] - pts[3])
    left, right = np.linalg.norm(pts[3] - pts[0]), np.linalg.norm(pts[2] - pts[1])
    return bool(0.9 < top / bottom < 1.11 and 0.9 < left / right < 1.11)


def _completes(pts: np.ndarray, missing: int) -> bool:
    """The three marks other than ``missing`` make a right angle at the opposite corner."""
    o = pts[(missing + 2) % 4]
    u, v = pts[(missing + 1) % 4] - o, pts[(missing + 3) % 4] - o
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return bool(nu > 0 and nv > 0 and abs(float(u @ v)) / (nu * nv) < 0.08)


# ---------------------------------------------------------------------- timing marks

def _weighted_centroids(work: WorkImage, centres_small: np.ndarray, half: int,
                        outer: tuple[np.ndarray, np.ndarray] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Darkness-weighted centroids in square windows (vectorised over windows). Returns
    centroids, masses and (top-left corners, windows) for reuse: ``outer`` windows from
    an earlier pass that contain the new ones are cut instead of gathered again."""
    paper = work.paper_small
    hs, ws = work.small_shape
    S = 2 * half + 1
    c = np.rint(centres_small).astype(np.int64)
    base = c - half
    if outer is not None and outer[1].shape[1] >= S:
        obase, owin = outer
        d = base - obase
        span = owin.shape[1] - S
        if d.min() >= 0 and d.max() <= span:
            # every window lies in its earlier, larger one (the usual case)
            m, So = owin.shape[0], owin.shape[1]
            offs = np.arange(S)
            idx = ((np.arange(m) * (So * So) + d[:, 1] * So + d[:, 0])[:, None, None]
                   + (offs * So)[None, :, None] + offs[None, None, :])
            win = owin.reshape(-1).take(idx)
        else:
            win = work.small_windows(base[:, 0], base[:, 1], S)
    else:
        win = work.small_windows(base[:, 0], base[:, 1], S)             # (M, S, S)
    offs = np.arange(S)
    xs = np.clip(base[:, 0:1] + offs[None, :], 0, ws - 1)            # (M, S)
    ys = np.clip(base[:, 1:2] + offs[None, :], 0, hs - 1)
    c = np.clip(c, 0, [ws - 1, hs - 1])
    pap = paper[c[:, 1], c[:, 0]][:, None, None]                      # lighting is smooth
    # weights: darkness beyond a noise floor of 12 % of the paper level
    wgt = pap * 0.88 - win
    np.maximum(wgt, 0, out=wgt)
    mass = wgt.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (wgt.sum(axis=1) * xs).sum(axis=1) / mass
        cy = (wgt.sum(axis=2) * ys).sum(axis=1) / mass
    return np.stack([cx, cy], axis=1), mass, (base, win)


def find_timing_marks(work: WorkImage, layout: PageLayout, h0: np.ndarray, ppmm: float,
                      ink: float, paper: float, step: int = 1) -> np.ndarray:
    """Measured centres (full-res px) of the timing marks, nan where not found (and
    where skipped: only every ``step``-th mark is looked for)."""
    sel = np.arange(0, len(layout.timing_mm), step)
    pred = work.to_small(apply_h(h0, layout.timing_mm[sel]))
    ppmm_small = ppmm / work.factor
    size = layout.timing_size_mm[sel]
    half1 = int(np.ceil((size.max() / 2 + 2.2) * ppmm_small))
    c1, _, windows = _weighted_centroids(work, pred, half1)
    c1 = np.where(np.isfinite(c1), c1, pred)
    half2 = int(np.ceil((size.max() / 2 + 0.9) * ppmm_small))
    c2, mass, _ = _weighted_centroids(work, c1, half2, windows)
    expected = size[:, 0] * size[:, 1] * ppmm_small ** 2 * max(1.0, (paper * 0.88 - ink))
    ok = (mass > 0.45 * expected) & (mass < 1.8 * expected) & np.isfinite(c2).all(axis=1)
    ok &= np.linalg.norm(c2 - pred, axis=1) < 2.0 * ppmm_small
    out = np.full((len(layout.timing_mm), 2), np.nan)
    found = work.to_full(c2)
    found[~ok] = np.nan
    out[sel] = found
    return out


# ---------------------------------------------------------------------- the two maps

def _rms(h: np.ndarray, src: np.ndarray, dst: np.ndarray) -> tuple[float, float, np.ndarray]:
    err = np.linalg.norm(apply_h(h, src) - dst, axis=1)
    return float(np.sqrt(np.mean(err ** 2))), float(err.max()), err


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
    rms, mx, _ = _rms(h, src[inl], dst[inl])
    reg = Registration("a", h, fid.orientation, rms, mx, _scale(h, layout), int(fid.found.sum()),
                       int(ok.sum()), len(range(0, len(ok), 2)), fid.points_px, timing)
    _quality_flags(reg, max_rms_mm, min_timing_fraction, int((~inl).sum()))
    return reg


class CoonsResidual:
    """Coons-patch interpolation of the timing-mark residuals of a homography: each edge
    residual is interpolated along its edge and blended into the interior, so paper
    fan-out or scanner stretch measured at the edges moves the bubbles in between."""

    def __init__(self, layout: PageLayout, residual: np.ndarray, ok: np.ndarray) -> None:
        e = layout.timing_edge
        t = layout.timing_mm
        self.x_left = float(t[e == 2, 0].mean())
        self.x_right = float(t[e == 3, 0].mean())
        self.y_top = float(t[e == 0, 1].mean())
        self.y_bottom = float(t[e == 1, 1].mean())
        self.edges = []
        for edge in range(4):
            sel = (e == edge) & ok
            param = t[sel, 0] if edge < 2 else t[sel, 1]
            order = np.argsort(param)
            r = residual[sel][order]
            # contiguous columns: interpolated on every map() call
            self.edges.append((param[order], r[:, 0].copy(), r[:, 1].copy()))

        # corner residuals: mean of the two edges meeting there (precomputed once)
        xl, xr = np.array([self.x_left]), np.array([self.x_right])
        yt, yb = np.array([self.y_top]), np.array([self.y_bottom])
        self.c00 = (self._edge(0, xl) + self._edge(2, yt)) / 2
        self.c10 = (self._edge(0, xr) + self._edge(3, yt)) / 2
        self.c01 = (self._edge(1, xl) + self._edge(2, yb)) / 2
        self.c11 = (self._edge(1, xr) + self._edge(3, yb)) / 2

    def _edge(self, k: int, s: np.ndarray) -> np.ndarray:
        p, r0, r1 = self.edges[k]
        if not p.size:
            return np.zeros((s.size, 2))
        out = np.empty((s.size, 2))
        out[:, 0] = np.interp(s, p, r0)
        out[:, 1] = np.interp(s, p, r1)
        return out

    def __call__(self, pts_mm: np.ndarray) -> np.ndarray:
        x, y = pts_mm[:, 0], pts_mm[:, 1]
        u = np.minimum(np.maximum((x - self.x_left) / (self.x_right - self.x_left), 0), 1)[:, None]
        v = np.minimum(np.maximum((y - self.y_top) / (self.y_bottom - self.y_top), 0), 1)[:, None]
        top, bottom = self._edge(0, x), self._edge(1, x)
        left, right = self._edge(2, y), self._edge(3, y)
        iu, iv = 1 - u, 1 - v
        return ((iv * top + v * bottom + iu * left + u * right)
                - (iu * iv * self.c00 + u * iv * self.c10 + iu * v * self.c01 + u * v * self.c11))


def _trimmed_homography(src: np.ndarray, dst: np.ndarray, floor_px: float,
                        rounds: int = 3) -> tuple[np.ndarray | None, np.ndarray]:
    """Least squares, then refits without points beyond 3x the median residual (at
    least ``floor_px``): a deterministic robust fit, deliberately not method A's RANSAC."""
    keep = np.ones(len(src), dtype=bool)
    h = None
    for _ in range(rounds):
        if keep.sum() < 8:
            break
        h, _ = cv2.findHomography(src[keep], dst[keep], 0)
        if h is None:
            break
        err = np.linalg.norm(apply_h(h, src) - dst, axis=1)
        new_keep = err <= max(floor_px, 3.0 * median(err[keep]))
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return h, keep


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
    edges_ok = all(((layout.timing_edge == e) & ok).sum() >= 2 for e in range(4))
    if ok.sum() < 8 or not edges_ok:
        reg = Registration("b", h0, fid.orientation, 0.0, 0.0, ppmm, int(fid.found.sum()), int(ok.sum()),
                           len(ok), fid.points_px, timing)
        reg.flags.append((Reason.MISREGISTRATION, f"only {int(ok.sum())} timing marks found"))
        return reg
    src, dst = layout.timing_mm[ok], timing[ok]
    h, inl = _trimmed_homography(src, dst, 0.3 * ppmm)
    if h is None:
        h, inl = h0, np.ones(len(src), dtype=bool)
    rms, mx, _ = _rms(h, src[inl], dst[inl])
    resid = np.zeros_like(timing)
    resid[ok] = dst - apply_h(h, src)
    good = ok.copy()
    good[np.flatnonzero(ok)[~inl]] = False
    reg = Registration("b", h, fid.orientation, rms, mx, _scale(h, layout), int(fid.found.sum()),
                       int(ok.sum()), len(ok), fid.points_px, timing,
                       coons=CoonsResidual(layout, resid, good))
    _quality_flags(reg, max_rms_mm, min_timing_fraction, int((~inl).sum()))
    return reg


def _scale(h: np.ndarray, layout: PageLayout) -> float:
    f = layout.fiducials_mm
    p = apply_h(h, f)
    return float((np.linalg.norm(p[1] - p[0]) + np.linalg.norm(p[2] - p[3])) /
                 (np.linalg.norm(f[1] - f[0]) + np.linalg.norm(f[2] - f[3])))


def _quality_flags(reg: Registration, max_rms_mm: float, min_fraction: float, outliers: int) -> None:
    if reg.rms_mm > max_rms_mm:
        reg.flags.append((Reason.MISREGISTRATION, f"alignment RMS {reg.rms_mm:.2f} mm"))
    elif reg.timing_found < min_fraction * reg.timing_total:
        reg.flags.append((Reason.MISREGISTRATION,
                          f"{reg.timing_found} of {reg.timing_total} timing marks found"))
    elif outliers > 0.1 * reg.timing_total:
        reg.flags.append((Reason.MISREGISTRATION, f"{outliers} timing marks off their places"))
