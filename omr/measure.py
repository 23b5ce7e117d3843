"""Per-bubble measurements from the integral image (no page warp, no per-pixel loops).

* ``local_search``: per-bubble shift (within ~±1 mm) that best aligns the printed
  outline (or a filled disk) with the bubble's edges, from 1-D edge profiles.
* ``fill_a``: method A measure — mean darkness of an inner square relative to the local
  paper level (the printed outline baseline is removed later by the blank calibration).
* ``dark_share``: method B measure — share of dark pixels in an inner disk under two per-card
  cuts (a "mark" cut and a lighter "faint" cut).
"""
from __future__ import annotations

import numpy as np

from .workimage import WorkImage, box_sums


def _profiles(integral: np.ndarray, centres: np.ndarray, radius: float, reach: int,
              axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Darkness profiles across each bubble along ``axis`` (0 = x, 1 = y), summed over
    a band of half the radius across the other axis. Returns (profiles, offsets).

    A band's cumulative sums along the profile are a difference of two integral-image
    rows (or columns), so each profile costs two gathers and a diff."""
    offs = np.arange(-reach - 1, reach + 1)
    hh, ww = integral.shape[0] - 1, integral.shape[1] - 1
    c = np.rint(centres).astype(np.int64)
    band = max(1, int(radius * 0.5))
    limit = (ww, hh)[axis]
    along = np.clip(c[:, axis:axis + 1] + 1 + offs[None, :], 0, limit)        # (N, K+1)
    a0 = np.clip(c[:, 1 - axis] - band, 0, (hh, ww)[axis])[:, None]
    a1 = np.clip(c[:, 1 - axis] + band + 1, 0, (hh, ww)[axis])[:, None]
    flat = integral.reshape(-1)
    stride = ww + 1
    if axis == 0:
        cum = flat.take(a1 * stride + along) - flat.take(a0 * stride + along)
    else:
        cum = flat.take(along * stride + a1) - flat.take(along * stride + a0)
    s = np.diff(cum, axis=1).astype(np.int64)
    return (a1 - a0) * 255 - s, offs[1:]


def local_search(work: WorkImage, centres: np.ndarray, radius_px: float, line_px: float,
                 search_px: int, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Refined centres and the per-bubble shift actually applied.

    The edge score of a shift is darkness just inside the bubble's outer edge minus
    darkness just outside it, the smaller of the two sides; it peaks when the printed outline (empty
    bubble) or the filled disk sits where expected. Shifts are pooled per block (median)
    because one bubble's profile is noisy; a bubble keeps its own shift only when it is
    within 1 px of its block's.
    """
    R = int(round(radius_px))
    t = max(1, int(round(line_px)))
    reach = R + search_px + t + 2
    # candidate shifts ordered by |d| so that ties resolve to the smallest shift
    cand = np.array(sorted(range(-search_px, search_px + 1), key=lambda d: (abs(d), d)))
    lo, hi = -R + cand, R + cand
    # profile index of offset o is o + reach; cs has a leading zero column
    ia0, ia1 = lo + reach, lo + t + reach                      # inside, left edge
    ib0, ib1 = hi - t + 1 + reach, hi + 1 + reach              # inside, right edge
    oa0, oa1 = lo - t - 1 + reach, lo - 1 + reach             # outside, left
    ob0, ob1 = hi + 2 + reach, hi + t + 2 + reach             # outside, right
    base = np.rint(centres)                     # profiles are sampled around these
    shifts = np.zeros(centres.shape, dtype=np.int64)
    frac = np.zeros(centres.shape)
    rows = np.arange(len(centres))
    order = np.argsort(cand)                    # candidate index of shift -s .. +s
    for axis in (0, 1):
        prof, _ = _profiles(work.integral, centres, radius_px, reach, axis)
        cs = np.zeros((prof.shape[0], prof.shape[1] + 1), dtype=np.int64)
        np.cumsum(prof, axis=1, out=cs[:, 1:])
        # Both edges must match at once (min, not sum): otherwise a shift that puts one
        # edge band on the outline's dark peak wins although the other edge falls off.
        left = (cs[:, ia1] - cs[:, ia0]) - (cs[:, oa1] - cs[:, oa0])
        right = (cs[:, ib1] - cs[:, ib0]) - (cs[:, ob1] - cs[:, ob0])
        score = np.minimum(left, right).astype(np.float64)
        best = cand[np.argmax(score, axis=1)]
        shifts[:, axis] = best
        # sub-pixel: parabola through the scores at best-1, best, best+1
        ordered = score[:, order]                                   # by shift value
        k = np.clip(best + search_px, 1, 2 * search_px - 1)
        y0, y1, y2 = ordered[rows, k - 1], ordered[rows, k], ordered[rows, k + 1]
        den = y0 - 2 * y1 + y2
        with np.errstate(divide="ignore", invalid="ignore"):
            delta = np.where(den < 0, 0.5 * (y0 - y2) / den, 0.0)
        frac[:, axis] = np.clip(delta + (k - search_px) - best, -0.5, 0.5)
    # Per-block median of the integer shifts, from a histogram (one vectorised pass).
    # Blocks of a few bubbles (calibration, absence) keep their own shifts.
    n_blocks = int(blocks.max()) + 1
    width = 2 * search_px + 1
    sizes = np.bincount(blocks, minlength=n_blocks)
    pooled = shifts.astype(np.float64) + frac
    for axis in (0, 1):
        hist = np.bincount(blocks * width + (shifts[:, axis] + search_px),
                           minlength=n_blocks * width).reshape(n_blocks, width)
        cum = np.cumsum(hist, axis=1)
        med = np.argmax(cum * 2 >= cum[:, -1:], axis=1) - search_px
        m = med[blocks]
        far = (np.abs(shifts[:, axis] - m) > 1) & (sizes[blocks] >= 5)
        pooled[:, axis] = np.where(far, m, pooled[:, axis])
    return base + pooled, pooled


def fill_a(work: WorkImage, centres: np.ndarray, radius_px: float) -> np.ndarray:
    """Mean darkness (0 = paper, 1 = black) of the inner square of each bubble."""
    a = max(1, int(radius_px * 0.55))
    c = np.rint(centres).astype(np.int64)
    s = box_sums(work.integral, c[:, 0] - a, c[:, 1] - a, c[:, 0] + a + 1, c[:, 1] + a + 1)
    mean = s / float((2 * a + 1) ** 2)
    return 1.0 - mean / work.paper_at(centres)


def disk_offsets(radius: float) -> np.ndarray:
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = xx ** 2 + yy ** 2 <= radius ** 2
    return np.stack([xx[keep], yy[keep]], axis=1)


def disk_pixels(work: WorkImage, centres: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) uint8 pixels of an inner disk of each bubble and the (N,) local paper level."""
    offs = disk_offsets(radius)
    c = np.rint(centres).astype(np.int64)
    h, w = work.grey.shape
    xs = np.clip(c[:, 0:1] + offs[None, :, 0], 0, w - 1)
    ys = np.clip(c[:, 1:2] + offs[None, :, 1], 0, h - 1)
    return work.grey.reshape(-1).take(ys * w + xs), work.paper_at(centres).astype(np.float32)


def dark_share(pixels: np.ndarray, paper: np.ndarray, cut: float) -> np.ndarray:
    """Method B measure: share of each bubble's disk pixels darker than ``cut`` (a
    reflectance relative to the local paper level)."""
    return np.count_nonzero(pixels < (paper * cut)[:, None], axis=1) / float(pixels.shape[1])


def square_darkness(work: WorkImage, centres: np.ndarray, half_px: float) -> np.ndarray:
    """Mean darkness of squares (page-code bits)."""
    a = max(1, int(half_px))
    c = np.rint(centres).astype(np.int64)
    s = box_sums(work.integral, c[:, 0] - a, c[:, 1] - a, c[:, 0] + a + 1, c[:, 1] + a + 1)
    return 1.0 - (s / float((2 * a + 1) ** 2)) / work.paper_at(centres)


def find_streaks(work: WorkImage, contrast: float, coverage: float, strips: int = 32) -> list[tuple[int, int]]:
    """Dark vertical scanner streaks: columns darker than their neighbourhood in nearly
    every horizontal strip of the image (printed lines never span the whole height).
    Returns [(x_first, x_last), ...] in full-resolution columns."""
    import cv2

    integ = work.integral
    h, w = work.grey.shape
    rows = np.linspace(0, h, strips + 1).astype(np.int64)
    band = 8
    y0 = np.clip(rows[:-1] + (rows[1:] - rows[:-1]) // 2 - band // 2, 0, h - band)
    top = integ[y0].astype(np.int64)
    bot = integ[y0 + band].astype(np.int64)
    col = np.diff(bot - top, axis=1).astype(np.float32) / band          # (strips, W) mean per column
    k = 2 * max(4, int(w / 400)) + 1
    bg = cv2.dilate(col, np.ones((1, k), np.uint8))
    dark = (bg - col) > contrast * bg
    frac = dark.mean(axis=0)
    hit = np.flatnonzero(frac >= coverage)
    out: list[tuple[int, int]] = []
    for x in hit.tolist():
        if out and x <= out[-1][1] + 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out
