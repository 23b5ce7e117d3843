"""The per-card working set built once after decoding: the grey scan and a local
paper-level map that makes darkness measures independent of uneven illumination.

There is no whole-page integral image: at 200 dpi writing one (4 bytes a pixel) cost
as much as everything the reader does with it. Sums for measuring come from the pixels
of just the windows that need them (``pixel_windows``) or from integral images of small
crops, and are exactly the sums a whole-page integral gives; the ~50 dpi "small" grid
(block means of factor x factor pixels) is likewise only computed where it is used.
Where only a threshold is taken (finding the corner marks) or the lighting estimated
(the paper level), a sample of the pixel rows serves."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np
from numpy.lib.stride_tricks import as_strided


@dataclass
class WorkImage:
    grey: np.ndarray          # (H, W) uint8, full resolution
    factor: int               # downscale factor full -> small
    small_shape: tuple[int, int]   # (h, w) of the small grid
    paper: np.ndarray         # (h // 4, w // 4) float32 local paper level, one per 4 x 4 small pixels
    stripes: np.ndarray       # (h // 4, w // 4 * 4 f) uint16: per paper-map row, column sums of its 4 sampled pixel rows

    @property
    def shape(self) -> tuple[int, int]:
        return self.grey.shape  # type: ignore[return-value]

    @cached_property
    def paper_sample(self) -> np.ndarray:
        """The paper level every 8 small pixels (the page's paper level statistics)."""
        return np.ascontiguousarray(self.paper[::2, ::2])

    def paper_small_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Local paper level at small pixels (integer arrays of one shape; off the grid
        clamps to its edge)."""
        hc, wc = self.paper.shape
        return self.paper[(ys // 4).clip(0, hc - 1), (xs // 4).clip(0, wc - 1)]

    def paper_level(self, x: int, y: int) -> float:
        """Local paper level at one small pixel (off the grid clamps to its edge)."""
        hc, wc = self.paper.shape
        return float(self.paper[min(max(y // 4, 0), hc - 1), min(max(x // 4, 0), wc - 1)])

    def paper_window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Local paper level of small pixels [x0, x1) x [y0, y1) (inside the small grid)."""
        rows, cols = self._paper_index
        # row then column gathers: two 1-D index lists cost far less than a 2-D one
        return self.paper.take(rows[y0:y1], axis=0).take(cols[x0:x1], axis=1)

    @cached_property
    def _paper_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The paper map's row of every small row and its column of every small column."""
        (hc, wc), (h, w) = self.paper.shape, self.small_shape
        return (np.arange(h) // 4).clip(0, hc - 1), (np.arange(w) // 4).clip(0, wc - 1)

    def small_window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Block means (float32) of small pixels [x0, x1) x [y0, y1) (inside the small grid)."""
        f = self.factor
        integral = cv2.integral(self.grey[y0 * f:y1 * f, x0 * f:x1 * f], sdepth=cv2.CV_32S)
        return _block_means(integral[::f, ::f], f * f)

    def row_window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Like ``small_window`` but each small pixel is the mean of its block's middle row
        only: a quarter of the pixels, for finding marks (a threshold), not for measuring
        them."""
        f = self.factor
        integral = cv2.integral(self.grey[y0 * f + f // 2:y1 * f:f, x0 * f:x1 * f], sdepth=cv2.CV_32S)
        return _block_means(integral[:, ::f], f)

    def small_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Block means (float32) of small pixels at integer arrays ``xs``, ``ys`` (broadcast,
        inside the small grid)."""
        f = self.factor
        blocks = window_view(self.grey, f, f)[ys * f, xs * f]
        out = blocks.sum(axis=(-2, -1), dtype=np.int32).astype(np.float32)
        out *= np.float32(1.0 / (f * f))
        return out

    def small_windows(self, x0: np.ndarray, y0: np.ndarray, size: int) -> np.ndarray:
        """(M, size, size) block means of square windows whose top-left small pixels are
        (x0, y0); pixels off the grid repeat the edge pixel."""
        hs, ws = self.small_shape
        if x0.min() < 0 or y0.min() < 0 or x0.max() + size > ws or y0.max() + size > hs:
            offs = np.arange(size)
            xs = np.clip(x0[:, None] + offs, 0, ws - 1)
            ys = np.clip(y0[:, None] + offs, 0, hs - 1)
            return self.small_at(xs[:, None, :], ys[:, :, None])
        # inside (the usual case): the windows' pixels stacked into one tall image and
        # one integral of it; a window is a whole number of blocks tall, so no block
        # straddles two windows
        f, n = self.factor, size * self.factor
        stacked = window_view(self.grey, n, n)[y0 * f, x0 * f].reshape(-1, n)
        integral = cv2.integral(stacked, sdepth=cv2.CV_32S)
        return _block_means(integral[::f, ::f], f * f).reshape(-1, size, size)

    def to_small(self, xy: np.ndarray) -> np.ndarray:
        """Full-resolution pixel coordinates -> small-image pixel coordinates."""
        return (xy + 0.5) / self.factor - 0.5

    def to_full(self, xy: np.ndarray) -> np.ndarray:
        return (xy + 0.5) * self.factor - 0.5

    def paper_at(self, xy_full: np.ndarray) -> np.ndarray:
        """Local paper level at full-resolution points (at the nearest small pixel)."""
        s = np.rint(self.to_small(xy_full)).astype(np.int64)
        return self.paper_small_at(s[:, 0], s[:, 1])


def _block_means(corners: np.ndarray, count: int) -> np.ndarray:
    """Means (float32) of blocks of ``count`` pixels from the integral-image values at
    their corners."""
    # int32 wrap-around arithmetic keeps the block sums exact
    rows = corners[1:] - corners[:-1]
    out = (rows[:, 1:] - rows[:, :-1]).astype(np.float32)
    out *= np.float32(1.0 / count)
    return out


def window_view(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H - h + 1, W - w + 1, h, w) read-only view of every h x w window of a 2-D array:
    indexing it with window corners copies just those windows (``sliding_window_view``
    without its checks, which cost more than a small gather)."""
    s0, s1 = img.strides
    return as_strided(img, (img.shape[0] - h + 1, img.shape[1] - w + 1, h, w), (s0, s1, s0, s1),
                      writeable=False)


def pixel_windows(grey: np.ndarray, x0: np.ndarray, y0: np.ndarray, w: int, h: int,
                  rows_first: bool = False) -> np.ndarray:
    """(N, h, w) uint8 pixels of the windows [x0, x0 + w) x [y0, y0 + h) (integer arrays),
    or (h, N, w) with ``rows_first`` (row i of every window, then row i + 1, ...); pixels
    off the image read 0, so a window's sum is that of its part inside."""
    hh, ww = grey.shape
    if x0.min() >= 0 and y0.min() >= 0 and x0.max() + w <= ww and y0.max() + h <= hh:
        # every window inside (the usual case): one copy of each window row
        if rows_first:
            rows = window_view(grey, 1, w)[y0[None, :] + np.arange(h)[:, None], x0[None, :]]
            return rows.reshape(h, len(x0), w)
        return window_view(grey, h, w)[y0, x0]
    xs = x0[:, None] + np.arange(w)
    ys = y0[:, None] + np.arange(h)
    out = grey[np.clip(ys, 0, hh - 1)[:, :, None], np.clip(xs, 0, ww - 1)[:, None, :]]
    out[((ys < 0) | (ys >= hh))[:, :, None] | ((xs < 0) | (xs >= ww))[:, None, :]] = 0
    return np.ascontiguousarray(out.transpose(1, 0, 2)) if rows_first else out


def build_work_image(grey: np.ndarray, dpi_guess: float, work_dpi: float = 50.0,
                     paper_window_mm: float = 12.0) -> WorkImage:
    f = max(1, int(round(dpi_guess / work_dpi)))
    h, w = grey.shape[0] // f, grey.shape[1] // f
    # Paper level: the brightest value within a window wider than any printed solid
    # (fiducials are 8 mm), smoothed; marks and print drop out, lighting stays. Computed
    # on a grid 4x coarser than the small one (2 mm at 200 dpi): lighting varies slowly,
    # and the smoothing leaves steps of a fraction of a percent from one coarse block to
    # the next. Block means blur small dark print, a max over the window then finds the
    # paper. A coarse block (4f x 4f pixels) is averaged over the middle pixel row of
    # each of its 4 block rows (16f pixels): lighting needs no more (2 rows are too
    # few: JPEG ringing next to print then lifts the paper level), and an integral
    # image of the page would cost more than the rest of the reading. The column sums
    # of those 4 rows (the stripes) also serve the scanner-streak search.
    hc, wc = max(1, h // 4), max(1, w // 4)
    rows = grey[f // 2:hc * 4 * f:f, 0:wc * 4 * f].reshape(hc, 4, wc * 4 * f)
    stripes = rows.sum(axis=1, dtype=np.uint16)                # 4 pixels: below 2**16
    coarse = cv2.reduce(stripes.reshape(-1, 4 * f), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).reshape(hc, wc)
    coarse *= np.float32(1.0 / (16 * f))
    k = max(3, int(round(paper_window_mm * dpi_guess / (4 * f) / 25.4)) | 1)
    paper = cv2.blur(cv2.dilate(coarse, np.ones((k, k), np.uint8)), (k, k))
    np.maximum(paper, 1.0, out=paper)
    return WorkImage(grey, f, (h, w), paper, stripes)
