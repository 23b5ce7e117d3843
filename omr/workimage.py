"""The per-card working set built once after decoding: the integral image of the full
resolution scan (all box sums come from it, so the page is never warped or filtered at
full resolution), ~50 dpi box means of it where they are needed, and a local
paper-level map that makes darkness measures independent of uneven illumination.

The ~50 dpi image is never built for the whole page: fiducials need four corner
windows and timing marks a few small windows, so block means are taken from the
integral image on demand (the strided copy of a whole-page small image cost as much
as everything the fiducials and timing marks do with it)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class WorkImage:
    grey: np.ndarray          # (H, W) uint8, full resolution
    integral: np.ndarray      # (H+1, W+1) int32; wraps on overflow, box sums stay exact
    factor: int               # downscale factor full -> small
    paper_small: np.ndarray   # (h, w) float32 local paper level on the small grid

    @property
    def shape(self) -> tuple[int, int]:
        return self.grey.shape  # type: ignore[return-value]

    @property
    def small_shape(self) -> tuple[int, int]:
        return self.paper_small.shape  # type: ignore[return-value]

    def small_window(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Block means (float32) of small pixels [x0, x1) x [y0, y1) (inside the small grid)."""
        f = self.factor
        # a contiguous copy first: arithmetic on the strided view costs twice as much
        c = np.ascontiguousarray(self.integral[y0 * f:y1 * f + 1:f, x0 * f:x1 * f + 1:f])
        # int32 wrap-around arithmetic keeps the block sums exact
        block = np.diff(np.diff(c, axis=0), axis=1)
        out = block.astype(np.float32)
        out *= np.float32(1.0 / (f * f))
        return out

    def small_at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Block means (float32) of small pixels at integer arrays ``xs``, ``ys`` (broadcast,
        inside the small grid)."""
        f = self.factor
        stride = self.integral.shape[1]
        flat = self.integral.reshape(-1)
        r0, r1 = ys * (f * stride), (ys + 1) * (f * stride)
        c0, c1 = xs * f, (xs + 1) * f
        s = flat.take(r1 + c1) - flat.take(r0 + c1) - flat.take(r1 + c0) + flat.take(r0 + c0)
        out = s.astype(np.float32)
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
        # inside (the usual case): one gather of each window's (size+1)^2 block corners
        # instead of four gathers per block
        f = self.factor
        stride = self.integral.shape[1]
        offs = np.arange(size + 1) * f
        idx = ((y0 * (f * stride) + x0 * f)[:, None, None] + (offs * stride)[None, :, None]
               + offs[None, None, :])
        c = self.integral.reshape(-1).take(idx)
        block = c[:, 1:, 1:] - c[:, :-1, 1:] - c[:, 1:, :-1] + c[:, :-1, :-1]
        out = block.astype(np.float32)
        out *= np.float32(1.0 / (f * f))
        return out

    def to_small(self, xy: np.ndarray) -> np.ndarray:
        """Full-resolution pixel coordinates -> small-image pixel coordinates."""
        return (xy + 0.5) / self.factor - 0.5

    def to_full(self, xy: np.ndarray) -> np.ndarray:
        return (xy + 0.5) * self.factor - 0.5

    def paper_at(self, xy_full: np.ndarray) -> np.ndarray:
        """Local paper level at full-resolution points (nearest small pixel)."""
        s = np.rint(self.to_small(xy_full)).astype(np.int64)
        h, w = self.paper_small.shape
        return self.paper_small[np.clip(s[:, 1], 0, h - 1), np.clip(s[:, 0], 0, w - 1)]


def box_sums(integral: np.ndarray, x0: np.ndarray, y0: np.ndarray, x1: np.ndarray,
             y1: np.ndarray) -> np.ndarray:
    """Sums of pixels in [x0, x1) x [y0, y1) (integer arrays, clipped to the image)."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    stride = w + 1
    # clipping costs four passes; skip it when every box is inside (the usual case)
    if x0.min() < 0 or y0.min() < 0 or x1.max() > w or y1.max() > h:
        x0 = np.clip(x0, 0, w); x1 = np.clip(x1, 0, w)
        y0 = np.clip(y0, 0, h); y1 = np.clip(y1, 0, h)
    r0 = y0 * stride; r1 = y1 * stride
    flat = integral.reshape(-1)
    # int32 wrap-around arithmetic: box sums are exact even when the integral overflows
    s = flat.take(r1 + x1) - flat.take(r0 + x1) - flat.take(r1 + x0) + flat.take(r0 + x0)
    return s.astype(np.int64)


def build_work_image(grey: np.ndarray, dpi_guess: float, work_dpi: float = 50.0,
                     paper_window_mm: float = 12.0) -> WorkImage:
    integral = cv2.integral(grey, sdepth=cv2.CV_32S)
    f = max(1, int(round(dpi_guess / work_dpi)))
    h, w = grey.shape[0] // f, grey.shape[1] // f
    # Paper level: the brightest value within a window wider than any printed solid
    # (fiducials are 8 mm), smoothed; marks and print drop out, lighting stays. Computed
    # on a 4x coarser grid than the small image (lighting varies slowly) and
    # interpolated back; block means blur small dark print, a max over the window then
    # finds the paper.
    hc, wc = max(1, h // 4), max(1, w // 4)
    cs = np.ascontiguousarray(integral[0:hc * 4 * f + 1:4 * f, 0:wc * 4 * f + 1:4 * f])
    coarse = np.diff(np.diff(cs, axis=0), axis=1).astype(np.float32)
    coarse *= np.float32(1.0 / (16 * f * f))
    k = max(3, int(round(paper_window_mm * dpi_guess / (4 * f) / 25.4)) | 1)
    paper = cv2.blur(cv2.dilate(coarse, np.ones((k, k), np.uint8)), (k, k))
    paper = cv2.resize(paper, (w, h), interpolation=cv2.INTER_LINEAR)
    np.maximum(paper, 1.0, out=paper)
    return WorkImage(grey, integral, f, paper)
