"""Per-bubble measurements, each from a few vectorised gathers of pixel windows (no page
warp, no integral image, no per-pixel loops).

* ``local_search``: per-bubble shift (within ~±1 mm) that best aligns the printed
  outline (or a filled disk) with the bubble's edges, from 1-D edge profiles.
* ``fill_a``: method A measure — mean darkness of an inner square relative to the local
  paper level (the printed outline baseline is removed later by the blank calibration).
* ``dark_share``: method B measure — share of dark pixels in an inner disk under two per-card
  cuts (a "mark" cut and a lighter "faint" cut).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .workimage import WorkImage, pixel_windows, window_view


@dataclass(frozen=True)
class Patches:
    """Square pixel windows around the bubbles, read from the image once: the local
    search takes its profiles from them and the fill measures cut their boxes from them
    at the refined centres (copying each bubble's pixels once costs less than three
    smaller gathers from the page)."""
    pixels: np.ndarray      # (N, S, S) uint8; pixels off the image read 0
    corner: np.ndarray      # (N, 2) int64 full-resolution x, y of each window's top-left pixel
    inside: bool            # every window lies wholly inside the image

    def cut(self, centres: np.ndarray, half: int) -> np.ndarray | None:
        """(N, 2 half + 1, 2 half + 1) pixels around the rounded centres, or None when a
        box would reach out of its bubble's window."""
        n, size = len(self.pixels), self.pixels.shape[1]
        side = 2 * half + 1
        off = np.rint(centres).astype(np.int64) - half - self.corner
        if off.min() < 0 or off.max() > size - side:
            return None
        st = self.pixels.strides
        view = as_strided(self.pixels, (n, size - side + 1, size - side + 1, side, side),
                          (st[0], st[1], st[2], st[1], st[2]), writeable=False)
        return view[np.arange(n), off[:, 1], off[:, 0]]


def search_reach(radius_px: float, line_px: float, search_px: int) -> int:
    """How far (px) from a bubble's centre the local search reads: its patch half-size."""
    return int(round(radius_px)) + search_px + max(1, int(round(line_px))) + 2


def bubble_patches(work: WorkImage, centres: np.ndarray, reach: int) -> Patches:
    """The (2 reach + 1)^2 patches around the rounded centres."""
    corner = np.rint(centres).astype(np.int64) - reach
    h, w = work.grey.shape
    side = 2 * reach + 1
    inside = bool(corner.min() >= 0 and corner[:, 0].max() + side <= w and corner[:, 1].max() + side <= h)
    return Patches(pixel_windows(work.grey, corner[:, 0], corner[:, 1], side, side), corner, inside)


def _profiles(patches: Patches, radius: float, shape: tuple[int, int]) -> np.ndarray:
    """Darkness profiles across each bubble, (S, 2N) int32: column i < N along x (pixel
    columns of the patch summed over a band of half the radius around its centre row),
    column N + i along y likewise; row j is offset j - reach. Pixels off the image (of
    ``shape``) count as black."""
    win = patches.pixels
    reach = win.shape[1] // 2
    band = max(1, int(radius * 0.5))
    lo, hi = reach - band, reach + band + 1
    # numpy sums over a middle axis slowly: row by row is several times faster
    along_x = win[:, lo].astype(np.int32)
    for i in range(lo + 1, hi):
        along_x += win[:, i]
    # cv2.reduce sums every row of the band columns in one call (a strided view, no copy)
    along_y = cv2.reduce(win[:, :, lo:hi].reshape(-1, hi - lo), 1, cv2.REDUCE_SUM,
                         dtype=cv2.CV_32S).reshape(len(win), -1)
    # band pixels inside the image (all of them but at the page edge)
    x, y = patches.corner[:, 0] + reach, patches.corner[:, 1] + reach
    h, w = shape
    in_x = np.minimum(y + band + 1, h) - np.maximum(y - band, 0)
    in_y = np.minimum(x + band + 1, w) - np.maximum(x - band, 0)
    inside = np.concatenate([in_x, in_y]).astype(np.int32) * 255
    return inside - np.concatenate([along_x.T, along_y.T], axis=1)


@lru_cache(maxsize=16)
def _candidates(search: int) -> tuple[np.ndarray, np.ndarray]:
    """Shifts -search .. search ordered by |d| (ties resolve to the smallest shift), and
    their tie-break keys: 2 search .. 0 (read-only)."""
    cand = np.array(sorted(range(-search, search + 1), key=lambda d: (abs(d), d)))
    tie = np.arange(len(cand) - 1, -1, -1)[:, None]
    cand.flags.writeable = False
    tie.flags.writeable = False
    return cand, tie


def local_search(work: WorkImage, patches: Patches, radius_px: float, line_px: float,
                 search_px: int, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refined centres and the per-bubble shift actually applied, searched around the
    centres of ``patches`` (``bubble_patches`` of half-size ``search_reach``).

    The edge score of a shift is darkness just inside the bubble's outer edge minus
    darkness just outside it, the smaller of the two sides; it peaks when the printed outline (empty
    bubble) or the filled disk sits where expected. Shifts are pooled per block (median)
    because one bubble's profile is noisy; a bubble keeps its own shift only when it is
    within 1 px of its block's. Both axes are scored together, shift by shift (rows),
    all bubbles' x then y profiles side by side (columns).
    """
    R = int(round(radius_px))
    t = max(1, int(round(line_px)))
    reach = search_reach(radius_px, line_px, search_px)
    n = 2 * search_px + 1
    cand, tie = _candidates(search_px)
    prof = _profiles(patches, radius_px, work.shape)
    # wt[j]: sum of the t profile rows from j (every edge band is t wide)
    wt = prof[:len(prof) - t + 1].copy()
    for i in range(1, t):
        wt += prof[i:len(prof) - t + 1 + i]
    # Row of offset o is o + reach; over shifts d = -s .. s each band start moves by one.
    ia = -R - search_px + reach                 # inside, left edge:   -R + d
    oa = ia - t - 1                             # outside, left:       -R + d - t - 1
    ib = R - search_px - t + 1 + reach          # inside, right edge:   R + d - t + 1
    ob = R - search_px + 2 + reach              # outside, right:       R + d + 2
    # Both edges must match at once (min, not sum): otherwise a shift that puts one
    # edge band on the outline's dark peak wins although the other edge falls off.
    ordered = np.minimum(wt[ia:ia + n] - wt[oa:oa + n], wt[ib:ib + n] - wt[ob:ob + n])  # by shift
    # the best candidate: highest score, then earliest in candidate order (one max of
    # score * n + tie-break key down the rows, exact in int64)
    key = (ordered[cand + search_px].astype(np.int64) * n + tie).max(axis=0)
    best = cand[n - 1 - key % n]
    # sub-pixel: parabola through the scores at best-1, best, best+1
    k = np.minimum(np.maximum(best + search_px, 1), 2 * search_px - 1)
    cols = np.arange(len(best))
    y0, y1, y2 = (ordered[k + i, cols].astype(np.float64) for i in (-1, 0, 1))
    den = y0 - 2 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(den < 0, 0.5 * (y0 - y2) / den, 0.0)
    frac = np.minimum(np.maximum(delta + (k - search_px) - best, -0.5), 0.5)
    # Per-block median of the integer shifts, from a histogram (one vectorised pass
    # over both axes: the y shifts of block b count as block b + n_blocks). Blocks of a
    # few bubbles (calibration, absence) keep their own shifts.
    n_blocks = int(blocks.max()) + 1
    group = np.concatenate([blocks, blocks + n_blocks])
    hist = np.bincount(group * n + (best + search_px), minlength=2 * n_blocks * n).reshape(-1, n)
    cum = np.cumsum(hist, axis=1)
    med = (np.argmax(cum * 2 >= cum[:, -1:], axis=1) - search_px)[group]
    big = np.tile(np.bincount(blocks, minlength=n_blocks)[blocks] >= 5, 2)
    pooled = np.where((np.abs(best - med) > 1) & big, med, best + frac).reshape(2, -1).T
    return patches.corner + reach + pooled, pooled


def fill_a(work: WorkImage, patches: Patches, centres: np.ndarray, radius_px: float) -> np.ndarray:
    """Mean darkness (0 = paper, 1 = black) of the inner square of each bubble."""
    a = max(1, int(radius_px * 0.55))
    win = patches.cut(centres, a)
    sums = _square_sums(work.grey, centres, a) if win is None else _row_sums(win.reshape(len(win), -1))
    mean = sums / float((2 * a + 1) ** 2)
    return 1.0 - mean / work.paper_at(centres)


def _square_sums(grey: np.ndarray, centres: np.ndarray, a: int) -> np.ndarray:
    """Pixel sums of the (2a + 1)^2 squares around the rounded centres (the part inside
    the image)."""
    c = np.rint(centres).astype(np.int64) - a
    win = pixel_windows(grey, c[:, 0], c[:, 1], 2 * a + 1, 2 * a + 1)
    return _row_sums(win.reshape(len(c), -1))


@lru_cache(maxsize=16)
def disk_offsets(radius: float) -> np.ndarray:
    """(K, 2) integer x, y offsets of the pixels of a disk (cached: same for every card
    of a template at one scale; read-only)."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = xx ** 2 + yy ** 2 <= radius ** 2
    out = np.stack([xx[keep], yy[keep]], axis=1)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=16)
def _outside_disk(radius: float) -> tuple[np.ndarray, int]:
    """(2r+1)^2 flat uint8 mask of a disk's square (row-major, the ``disk_offsets``
    order; read-only): 255 outside the disk, 0 in it; and the disk's pixel count."""
    r = int(np.ceil(radius))
    offs = disk_offsets(radius)
    mask = np.full((2 * r + 1, 2 * r + 1), 255, dtype=np.uint8)
    mask[offs[:, 1] + r, offs[:, 0] + r] = 0
    mask = mask.reshape(-1)
    mask.flags.writeable = False
    return mask, len(offs)


@dataclass(frozen=True)
class Disks:
    """Each bubble's inner disk as the square around it with the pixels outside the disk
    set to 255: never darker than a cut and a known amount in a sum (picking the disk
    pixels out of the squares would cost more than everything done with them)."""
    squares: np.ndarray     # (N, (2r + 1)^2) uint8
    size: int               # pixels in a disk
    paper: np.ndarray       # (N,) float32 local paper level


def disks(work: WorkImage, centres: np.ndarray, radius: float, patches: Patches | None = None) -> Disks:
    """The inner disks of the given radius around the rounded centres (cut from
    ``patches`` when they hold them; pixels off the image repeat the edge pixel)."""
    c = np.rint(centres).astype(np.int64)
    h, w = work.grey.shape
    r = int(np.ceil(radius))
    squares = patches.cut(centres, r) if patches is not None and patches.inside else None
    if squares is None:
        if c.min() >= r and c[:, 0].max() < w - r and c[:, 1].max() < h - r:
            # every disk inside (the usual case): copy each bubble's square
            squares = window_view(work.grey, 2 * r + 1, 2 * r + 1)[c[:, 1] - r, c[:, 0] - r]
        else:
            offs = np.arange(-r, r + 1)
            xs = (c[:, 0:1] + offs).clip(0, w - 1)
            ys = (c[:, 1:2] + offs).clip(0, h - 1)
            squares = work.grey[ys[:, :, None], xs[:, None, :]]
    outside, size = _outside_disk(radius)
    return Disks(squares.reshape(len(c), -1) | outside, size, work.paper_at(centres).astype(np.float32))


def dark_share(d: Disks, cut: float) -> np.ndarray:
    """Method B measure: share of each bubble's disk pixels darker than ``cut`` (a
    reflectance relative to the local paper level)."""
    # For integer pixels, p < t exactly when p < ceil(t): a uint8 threshold per bubble
    # makes the comparison a byte compare. t = paper * cut lies in 0..255 (paper <= 255,
    # cut <= 1), so the 255 outside the disks is never below it.
    t = np.ceil(d.paper * cut).clip(0, 255).astype(np.uint8)
    return _row_sums((d.squares < t[:, None]).view(np.uint8)) / float(d.size)


def _row_sums(a: np.ndarray) -> np.ndarray:
    """Exact int32 sums of the rows of a uint8 matrix (cv2.reduce: one pass, where
    numpy's sum over short rows is several times slower)."""
    return cv2.reduce(a, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0]


def disk_darkness(d: Disks) -> np.ndarray:
    """Mean darkness (0 = paper) of each disk; an integer sum is exact and cheaper than
    a float mean."""
    sums = _row_sums(d.squares) - 255 * (d.squares.shape[1] - d.size)
    return 1.0 - (sums / float(d.size)) / d.paper


def square_darkness(work: WorkImage, centres: np.ndarray, half_px: float) -> np.ndarray:
    """Mean darkness of squares (page-code bits)."""
    a = max(1, int(half_px))
    return 1.0 - (_square_sums(work.grey, centres, a) / float((2 * a + 1) ** 2)) / work.paper_at(centres)


def find_streaks(work: WorkImage, contrast: float, coverage: float, strips: int = 32) -> list[tuple[int, int]]:
    """Dark vertical scanner streaks: columns darker than their neighbourhood in nearly
    every one of ``strips`` horizontal strips of the image (printed lines never span the
    whole height). Returns [(x_first, x_last), ...] in full-resolution columns.

    A strip is a stripe of the paper map (column sums of 4 pixel rows 1/50 inch apart,
    all but the last few columns of the image): already summed, and no pixel row read
    again."""
    stripes = work.stripes
    # sums of 4 rows: the test below is scale-free, so they need not become means
    col = stripes[_strip_rows(len(stripes), strips)].astype(np.float32)     # (strips, W)
    k = 2 * max(4, int(work.grey.shape[1] / 400)) + 1
    bg = cv2.dilate(col, np.ones((1, k), np.uint8))
    dark = (bg - col) > contrast * bg
    frac = cv2.reduce(dark.view(np.uint8), 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0] / strips
    hit = np.flatnonzero(frac >= coverage)
    out: list[tuple[int, int]] = []
    for x in hit.tolist():
        if out and x <= out[-1][1] + 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out


@lru_cache(maxsize=8)
def _strip_rows(n: int, strips: int) -> np.ndarray:
    """The middle one of ``n`` stripes in each of ``strips`` equal parts (read-only)."""
    out = ((np.arange(strips) + 0.5) * n / strips).astype(np.int64)
    out.flags.writeable = False
    return out
