"""The speed work must not change readings: each shortcut is checked against the plain
computation it replaces (same values, bit for bit)."""
import hashlib

import cv2
import numpy as np
import pytest

from omr import registration as reg
from omr.decide import median
from omr.measure import disk_offsets, disk_pixels
from omr.reading import read_card, reading_json
from omr.synthetic import ScanParams
from omr.workimage import build_work_image

from .conftest import make_refl, scan


@pytest.mark.parametrize("method", ["a", "b"])
def test_known_sha256_is_recorded_and_changes_nothing_else(template, clean_card, method):
    _, _, data = clean_card
    sha = hashlib.sha256(data).hexdigest()
    plain = read_card(data, template, method)
    given = read_card(data, template, method, input_sha256=sha)
    assert plain["input"]["sha256"] == sha
    assert reading_json(plain) == reading_json(given)


def test_median_matches_numpy():
    rng = np.random.default_rng(3)
    for n in [1, 2, 3, 8, 9, 340, 341]:
        for dtype in (np.float64, np.float32):
            a = rng.standard_normal(n).astype(dtype)
            assert median(a) == float(np.median(a))
    grid = rng.uniform(0, 255, (75, 54)).astype(np.float32)
    assert median(grid[::2, ::3]) == float(np.median(grid[::2, ::3]))
    assert median([1.0, 2.0, 3.0, 4.0]) == 2.5


@pytest.fixture(scope="module")
def work(template, answers):
    data = scan(make_refl(template, answers)[0], ScanParams(rotation_deg=1.0))
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    return build_work_image(grey, 200.0)


def _small_reference(work):
    """The whole-page ~50 dpi image as it used to be built (block sums of the integral)."""
    f, (h, w) = work.factor, work.small_shape
    corners = work.integral[0:h * f + 1:f, 0:w * f + 1:f].astype(np.int64)
    return (np.diff(np.diff(corners, axis=0), axis=1).astype(np.float32)
            * np.float32(1.0 / (f * f)))


def test_small_image_windows_equal_the_whole_page_image(work):
    small = _small_reference(work)
    hs, ws = work.small_shape
    assert np.array_equal(work.small_window(3, 5, 120, 170), small[5:170, 3:120])
    x0, y0 = np.array([0, 40, ws - 17, -3]), np.array([0, 60, hs - 17, hs - 10])
    win = work.small_windows(x0, y0, 17)                 # last two reach off the grid
    offs = np.arange(17)
    for i in range(len(x0)):
        xs = np.clip(x0[i] + offs, 0, ws - 1)
        ys = np.clip(y0[i] + offs, 0, hs - 1)
        assert np.array_equal(win[i], small[np.ix_(ys, xs)])


def test_disk_pixels_fast_gather_matches_clipped_gather(work):
    centres = np.array([[400.2, 600.7], [1000.0, 1500.4], [820.6, 333.3]])
    pixels, _ = disk_pixels(work, centres, 10.7)
    offs = disk_offsets(10.7)
    c = np.rint(centres).astype(np.int64)
    h, w = work.grey.shape
    ref = work.grey[np.clip(c[:, 1:2] + offs[None, :, 1], 0, h - 1),
                    np.clip(c[:, 0:1] + offs[None, :, 0], 0, w - 1)]
    assert np.array_equal(pixels, ref)


@pytest.mark.parametrize("params", [ScanParams(rotation_deg=1.0), ScanParams(rotation_deg=9.0),
                                    ScanParams(turn=90, rotation_deg=-2.0)])
def test_corner_square_search_agrees_with_whole_window(template, answers, params, monkeypatch):
    data = scan(make_refl(template, answers)[0], params)
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    w = build_work_image(grey, 200.0)
    fast = reg.find_fiducials(w, template, 200.0)
    # without the near-corner square every corner is searched in its whole window
    real = reg._corner_mark
    monkeypatch.setattr(reg, "_corner_mark",
                        lambda *a, bound=None, **k: (False, None) if bound is not None else real(*a, **k))
    slow = reg.find_fiducials(w, template, 200.0)
    assert np.array_equal(fast.points_px, slow.points_px)
    assert fast.orientation == slow.orientation and fast.ink_level == slow.ink_level
