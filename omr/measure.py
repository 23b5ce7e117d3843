"""Per-bubble measurements from the integral image (no page warp, no per-pixel loops).

* ``local_search``: per-bubble shift (within ~±1 mm) that best aligns the printed
  outline (or a filled disk) with the bubble's edges, from 1-D edge profiles.
* ``fill_a``: method A measure — mean darkness of an inner square relative to the local
  paper level (the printed outline baseline is removed later by the blank calibration).
* ``dark_share``: method B measure — share of dark pixels in an inner disk under two per-card
  cuts (a "mark" cut and a lighter "faint" cut).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .workimage import WorkImage, box_sums


def _profiles(integral: np.ndarray, centres: np.ndarray, radius: float, reach: int,
              axis: int) -> np.ndarray:
    """Darkness profiles across each bubble along ``axis`` (0 = x, 1 = y), summed over
    a band of half the radius across the other axis, at offsets -reach .. reach.

    A band's cumulative sums along the profile are a difference of two integral-image
    rows (or columns), so each profile costs two gathers and a diff."""
    offs = np.arange(-reach - 1, reach + 1)
    hh, ww = integral.shape[0] - 1, integral.shape[1] - 1
    c = np.rint(centres).astype(np.int64)
    band = max(1, int(radius * 0.5))
    limit, across = (ww, hh) if axis == 0 else (hh, ww)
    along = c[:, axis:axis + 1] + 1 + offs[None, :]                          # (N, K+1)
    a0 = (c[:, 1 - axis] - band)[:, None]
    a1 = (c[:, 1 - axis] + band + 1)[:, None]
    # clipping costs passes over the arrays; skip it when every bubble is inside
    if along.min() < 0 or along.max() > limit or a0.min() < 0 or a1.max() > across:
        along = np.clip(along, 0, limit)
        a0, a1 = np.clip(a0, 0, across), np.clip(a1, 0, across)
    flat = integral.reshape(-1)
    stride = ww + 1
    if axis == 0:
        cum = flat.take(a1 * stride + along) - flat.take(a0 * stride + along)
    else:
        cum = flat.take(along * stride + a1) - flat.take(along * stride + a0)
    # int32 throughout: band sums are far below 2**31, wrap-around differences are exact
    s = np.diff(cum, axis=1)
    return (a1 - a0).astype(np.int32) * 255 - s


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
    n = 2 * search_px + 1
    # candidate shifts ordered by |d| so that ties resolve to the smallest shift
    cand = np.array(sorted(range(-search_px, search_px + 1), key=lambda d: (abs(d), d)))
    # Profile index of offset o is o + reach. Every edge band is t wide, so all of them
    # are differences of one running window sum wt (start j: profile[j:j + t]); over
    # shifts d = -s .. s each band start moves by one, i.e. a slice of wt.
    ia = -R - search_px + reach                 # inside, left edge:   -R + d
    oa = ia - t - 1                             # outside, left:       -R + d - t - 1
    ib = R - search_px - t + 1 + reach          # inside, right edge:   R + d - t + 1
    ob = R - search_px + 2 + reach              # outside, right:       R + d + 2
    base = np.rint(centres)                     # profiles are sampled around these
    shifts = np.zeros(centres.shape, dtype=np.int64)
    frac = np.zeros(centres.shape)
    rows = np.arange(len(centres))
    for axis in (0, 1):
        prof = _profiles(work.integral, centres, radius_px, reach, axis)
        cs = np.zeros((prof.shape[0], prof.shape[1] + 1), dtype=np.int32)
        np.cumsum(prof, axis=1, out=cs[:, 1:])
        wt = cs[:, t:] - cs[:, :-t]
        # Both edges must match at once (min, not sum): otherwise a shift that puts one
        # edge band on the outline's dark peak wins although the other edge falls off.
        left = wt[:, ia:ia + n] - wt[:, oa:oa + n]
        right = wt[:, ib:ib + n] - wt[:, ob:ob + n]
        ordered = np.minimum(left, right).astype(np.float64)       # by shift value
        score = ordered[:, cand + search_px]                        # by candidate order
        best = cand[np.argmax(score, axis=1)]
        shifts[:, axis] = best
        # sub-pixel: parabola through the scores at best-1, best, best+1
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
def _disk_mask(radius: float) -> np.ndarray:
    """Flat mask of the disk in its (2r+1)^2 square, in ``disk_offsets`` order (row-major)."""
    r = int(np.ceil(radius))
    offs = disk_offsets(radius)
    mask = np.zeros((2 * r + 1, 2 * r + 1), dtype=bool)
    mask[offs[:, 1] + r, offs[:, 0] + r] = True
    mask = mask.reshape(-1)
    mask.flags.writeable = False
    return mask


def disk_pixels(work: WorkImage, centres: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) uint8 pixels of an inner disk of each bubble and the (N,) local paper level."""
    offs = disk_offsets(radius)
    c = np.rint(centres).astype(np.int64)
    h, w = work.grey.shape
    r = int(np.ceil(radius))
    flat = work.grey.reshape(-1)
    if c.min() >= r and c[:, 0].max() < w - r and c[:, 1].max() < h - r:
        # every disk inside (the usual case): copy each bubble's square (rows of
        # contiguous bytes, cheaper than a per-pixel gather), then keep the disk pixels
        squares = sliding_window_view(work.grey, (2 * r + 1, 2 * r + 1))[c[:, 1] - r, c[:, 0] - r]
        pixels = squares.reshape(len(c), -1)[:, _disk_mask(radius)]
    else:
        xs = np.clip(c[:, 0:1] + offs[None, :, 0], 0, w - 1)
        ys = np.clip(c[:, 1:2] + offs[None, :, 1], 0, h - 1)
        pixels = flat.take(ys * w + xs)
    return pixels, work.paper_at(centres).astype(np.float32)


def dark_share(pixels: np.ndarray, paper: np.ndarray, cut: float) -> np.ndarray:
    """Method B measure: share of each bubble's disk pixels darker than ``cut`` (a
    reflectance relative to the local paper level)."""
    # For integer pixels, p < t exactly when p < ceil(t): a uint8 threshold per bubble
    # makes the comparison a byte compare (t = paper * cut is below 255 and above 0).
    t = np.ceil(paper * cut)
    if t.min() >= 0 and t.max() <= 255:
        below = pixels < t.astype(np.uint8)[:, None]
        count = below.view(np.uint8).sum(axis=1, dtype=np.int32)
    else:
        count = np.count_nonzero(pixels < (paper * cut)[:, None], axis=1)
    return count / float(pixels.shape[1])


def disk_darkness(pixels: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """Mean darkness (0 = paper) of each disk; an integer sum is exact and cheaper than
    a float mean."""
    return 1.0 - (pixels.sum(axis=1, dtype=np.int32) / float(pixels.shape[1])) / paper


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
    # int32 wrap-around differences are exact (8-row column sums are small)
    col = np.diff(integ[y0 + band] - integ[y0], axis=1).astype(np.float32)
    col /= band                                                          # (strips, W) mean per column
    k = 2 * max(4, int(w / 400)) + 1
    bg = cv2.dilate(col, np.ones((1, k), np.uint8))
    dark = (bg - col) > contrast * bg
    frac = np.count_nonzero(dark, axis=0) / strips
    hit = np.flatnonzero(frac >= coverage)
    out: list[tuple[int, int]] = []
    for x in hit.tolist():
        if out and x <= out[-1][1] + 1:
            out[-1] = (out[-1][0], x)
        else:
            out.append((x, x))
    return out
