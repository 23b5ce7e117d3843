"""The speed work must not change what is measured: each shortcut is checked against the
plain computation it replaces (same values, bit for bit, unless a test says otherwise)."""
import hashlib
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from omr import registration as reg
from omr.decide import median
from omr.imageio import _jpeg_header
from omr.layout import page_layout
from omr.measure import (_profiles, bubble_patches, dark_share, disk_darkness, disk_offsets, disks,
                         fill_a, find_streaks, search_reach)
from omr.reading import read_card, reading_json
from omr.synthetic import ScanParams
from omr.workimage import build_work_image, pixel_windows

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


def _integral(grey):
    return cv2.integral(grey, sdepth=cv2.CV_64F).astype(np.int64)


def _small_reference(work):
    """The whole-page ~50 dpi image as it used to be built (block sums of the integral)."""
    f, (h, w) = work.factor, work.small_shape
    corners = _integral(work.grey)[0:h * f + 1:f, 0:w * f + 1:f]
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
    inside = work.small_windows(x0[:3], y0[:3], 17)      # the stacked-integral path
    assert np.array_equal(inside, win[:3])


def test_row_window_is_the_mean_of_each_blocks_middle_row(work):
    f = work.factor
    grey = work.grey.astype(np.float64)
    x0, y0, x1, y1 = 7, 11, 60, 45
    rows = grey[y0 * f + f // 2:y1 * f:f, x0 * f:x1 * f].reshape(y1 - y0, x1 - x0, f).mean(axis=2)
    assert np.array_equal(work.row_window(x0, y0, x1, y1), rows.astype(np.float32))


def test_paper_levels_agree_between_windows_points_and_the_map(work):
    hs, ws = work.small_shape
    win = work.paper_window(0, 0, ws, hs)
    assert win.shape == (hs, ws)
    assert np.array_equal(win[::4, ::4][:work.paper.shape[0], :work.paper.shape[1]], work.paper)
    xs, ys = np.array([0, 5, ws - 1, ws + 9]), np.array([3, hs - 1, 0, -2])   # last one off the grid
    assert np.array_equal(work.paper_small_at(xs, ys),
                          win[np.clip(ys, 0, hs - 1), np.clip(xs, 0, ws - 1)])
    assert work.paper_level(int(xs[1]), int(ys[1])) == float(win[ys[1], xs[1]])
    full = np.array([[400.2, 600.7], [1000.0, 1500.4]])
    s = np.rint(work.to_small(full)).astype(int)
    assert np.array_equal(work.paper_at(full), win[s[:, 1], s[:, 0]])


def test_pixel_windows_read_zero_off_the_image():
    grey = np.arange(1, 13 * 11 + 1, dtype=np.uint8).reshape(13, 11)
    padded = np.zeros((13 + 8, 11 + 8), np.uint8)
    padded[4:-4, 4:-4] = grey
    x0, y0 = np.array([0, -3, 8, 2]), np.array([0, 2, 10, -4])
    win = pixel_windows(grey, x0, y0, 5, 4)
    for i in range(len(x0)):
        assert np.array_equal(win[i], padded[y0[i] + 4:y0[i] + 8, x0[i] + 4:x0[i] + 9])
    assert np.array_equal(pixel_windows(grey, x0, y0, 5, 4, rows_first=True), win.transpose(1, 0, 2))
    inside = pixel_windows(grey, x0[:1], y0[:1], 5, 4, rows_first=True)
    assert np.array_equal(inside, win[:1].transpose(1, 0, 2))


def _box_sums(integral, x0, y0, x1, y1):
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    x0, x1 = np.clip(x0, 0, w), np.clip(x1, 0, w)
    y0, y1 = np.clip(y0, 0, h), np.clip(y1, 0, h)
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]


@pytest.fixture(scope="module")
def bubbles(work, template):
    """Centres of a page's bubbles (plus two at the image edges) and their patches."""
    layout = page_layout(template, 1)
    h0 = np.array([[7.87, 0.05, 20.0], [-0.05, 7.87, 25.0], [0.0, 0.0, 1.0]])
    centres = reg.apply_h(h0, layout.bubbles_mm)
    h, w = work.shape
    centres = np.concatenate([centres, [[3.4, 100.2], [w - 6.0, h - 2.6]]])
    radius, line, search = 15.7, 2.0, 8
    reach = search_reach(radius, line, search)
    return centres, bubble_patches(work, centres, reach), radius, reach


def test_profiles_equal_band_sums_of_the_integral_image(work, bubbles):
    centres, patches, radius, reach = bubbles
    assert not patches.inside                            # two patches reach off the image
    integral = _integral(work.grey)
    h, w = work.shape
    c = np.rint(centres).astype(np.int64)
    band = max(1, int(radius * 0.5))
    prof = _profiles(patches, radius, work.shape)
    n = len(c)
    for i in range(n):
        x, y = c[i]
        offs = np.arange(-reach, reach + 1)
        sx = _box_sums(integral, x + offs, y - band, x + offs + 1, y + band + 1)
        sy = _box_sums(integral, x - band, y + offs, x + band + 1, y + offs + 1)
        inside_x = min(y + band + 1, h) - max(y - band, 0)
        inside_y = min(x + band + 1, w) - max(x - band, 0)
        assert np.array_equal(prof[:, i], inside_x * 255 - sx)
        assert np.array_equal(prof[:, n + i], inside_y * 255 - sy)


def test_fill_boxes_and_disks_cut_from_patches_equal_direct_reads(work, bubbles):
    centres, patches, radius, reach = bubbles
    moved = centres + np.where(np.arange(len(centres)) % 3 == 0, 8.4, -7.6)[:, None]
    # fill A: box sums (clipped to the image) from the patches, and from the integral
    a = max(1, int(radius * 0.55))
    c = np.rint(moved).astype(np.int64)
    sums = _box_sums(_integral(work.grey), c[:, 0] - a, c[:, 1] - a, c[:, 0] + a + 1, c[:, 1] + a + 1)
    expected = 1.0 - (sums / float((2 * a + 1) ** 2)) / work.paper_at(moved)
    assert np.array_equal(fill_a(work, patches, moved, radius), expected)
    assert patches.cut(moved + 20, a) is None             # boxes out of their patches
    # disks: the same squares from the patches as from the image, 255 outside the disk
    inner = moved[:-2]
    from_patches = disks(work, inner, radius * 0.68, bubble_patches(work, centres[:-2], reach))
    direct = disks(work, inner, radius * 0.68)
    assert np.array_equal(from_patches.squares, direct.squares)
    offs = disk_offsets(radius * 0.68)
    ci = np.rint(inner).astype(np.int64)
    pixels = work.grey[ci[:, 1:2] + offs[None, :, 1], ci[:, 0:1] + offs[None, :, 0]]
    r = int(np.ceil(radius * 0.68))
    in_disk = (offs[:, 1] + r) * (2 * r + 1) + offs[:, 0] + r
    assert np.array_equal(direct.squares[:, in_disk], pixels)
    assert direct.size == len(offs) and (np.delete(direct.squares, in_disk, axis=1) == 255).all()
    # the measures on the squares equal the plain ones on the disk pixels
    paper = direct.paper
    assert np.array_equal(disk_darkness(direct), 1.0 - (pixels.sum(axis=1) / float(len(offs))) / paper)
    for cut in (0.45, 0.91):
        plain = np.count_nonzero(pixels < (paper * cut)[:, None], axis=1) / float(len(offs))
        assert np.array_equal(dark_share(direct, cut), plain)


def test_disks_at_the_image_edge_repeat_the_edge_pixel(work):
    h, w = work.shape
    centres = np.array([[2.0, 300.0], [w - 1.0, h - 1.0]])
    d = disks(work, centres, 10.7)
    offs = disk_offsets(10.7)
    c = np.rint(centres).astype(np.int64)
    ref = work.grey[np.clip(c[:, 1:2] + offs[None, :, 1], 0, h - 1),
                    np.clip(c[:, 0:1] + offs[None, :, 0], 0, w - 1)]
    r = 11
    assert np.array_equal(d.squares[:, (offs[:, 1] + r) * (2 * r + 1) + offs[:, 0] + r], ref)


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


@pytest.mark.parametrize("params", [ScanParams(rotation_deg=1.0), ScanParams(perspective=0.03, scale=1.04)])
def test_timing_marks_measured_at_their_place_as_after_a_wide_search(template, answers, params):
    """One pass in the narrow window at the predicted place gives what the wide search
    followed by the narrow one gives, when the mark lies in the window (to 1/1000 px: a
    window a pixel off takes in a few faintly weighted blocks)."""
    data = scan(make_refl(template, answers)[0], params)
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    w = build_work_image(grey, 200.0)
    layout = page_layout(template, 1)
    fid = reg.find_fiducials(w, template, 200.0)
    h0 = cv2.getPerspectiveTransform(layout.fiducials_mm.astype(np.float32),
                                     fid.points_px.astype(np.float32)).astype(np.float64)
    ppmm = reg._scale(h0, layout)
    found = reg.find_timing_marks(w, layout, h0, ppmm, fid.ink_level, fid.paper_level)
    assert np.isfinite(found).all()
    pred = w.to_small(reg.apply_h(h0, layout.timing_mm))
    ppmm_small = ppmm / w.factor
    size = layout.timing_size_mm.max()
    c1 = reg._weighted_centroids(w, pred, int(np.ceil((size / 2 + 2.2) * ppmm_small)))[0]
    c2 = reg._weighted_centroids(w, c1, int(np.ceil((size / 2 + 0.9) * ppmm_small)))[0]
    assert np.allclose(found, w.to_full(c2), rtol=0, atol=1e-3)


def test_coons_residual_interpolates_each_component_and_blends_them(template):
    layout = page_layout(template, 1)
    rng = np.random.default_rng(5)
    resid = rng.normal(0, 1.5, layout.timing_mm.shape)
    ok = rng.random(len(resid)) > 0.2
    coons = reg.CoonsResidual(layout, resid, ok)
    pts = rng.uniform([0, 0], [210, 297], (50, 2))
    for k, along in enumerate(layout.timing_along):
        idx = along[ok[along]]
        axis = 0 if k < 2 else 1
        s = pts[:, axis]
        plain = np.stack([np.interp(s, layout.timing_mm[idx, axis], resid[idx, j]) for j in (0, 1)], axis=1)
        edge = coons._edge(k, s)
        assert np.allclose(np.stack([edge.real, edge.imag], axis=1), plain, rtol=0, atol=1e-12)
    # the blend: the edges weighted by the distance from the opposite edge, less the corners
    (x0, x1, y0, y1), p = layout.timing_frame, pts
    u = np.clip((p[:, 0] - x0) / (x1 - x0), 0, 1)[:, None]
    v = np.clip((p[:, 1] - y0) / (y1 - y0), 0, 1)[:, None]

    def edge(k, s):
        e = coons._edge(k, np.atleast_1d(s))
        return np.stack([e.real, e.imag], axis=1)
    corner = {(i, j): (edge(0 if j == 0 else 1, [x0, x1][i]) + edge(2 if i == 0 else 3, [y0, y1][j])) / 2
              for i in (0, 1) for j in (0, 1)}
    plain = ((1 - v) * edge(0, p[:, 0]) + v * edge(1, p[:, 0]) + (1 - u) * edge(2, p[:, 1]) + u * edge(3, p[:, 1])
             - ((1 - u) * (1 - v) * corner[0, 0] + u * (1 - v) * corner[1, 0]
                + (1 - u) * v * corner[0, 1] + u * v * corner[1, 1]))
    assert np.allclose(coons(pts), plain, rtol=0, atol=1e-12)


def test_streaks_are_found_in_the_paper_map_stripes(work):
    grey = work.grey.copy()
    grey[:, 700:702] = (grey[:, 700:702] * 0.5).astype(np.uint8)
    streaked = build_work_image(grey, 200.0)
    assert find_streaks(streaked, 0.08, 0.85) == [(700, 701)]
    assert find_streaks(work, 0.08, 0.85) == []


def _jpeg(img, **kw):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_jpeg_header_reads_what_pillow_reads():
    img = np.random.default_rng(0).integers(0, 255, (700, 650), dtype=np.uint8)
    plain = cv2.imencode(".jpg", img)[1].tobytes()
    dpcm = bytearray(plain)
    i = dpcm.index(b"JFIF")
    dpcm[i + 7] = 2
    dpcm[i + 8:i + 12] = (79).to_bytes(2, "big") * 2
    files = [plain, cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))[1].tobytes(),
             _jpeg(img), _jpeg(img, dpi=(300, 300)), _jpeg(img, dpi=(200, 150)),
             _jpeg(img, dpi=(200, 200), progressive=True), bytes(dpcm)]
    for data in files:
        with Image.open(io.BytesIO(data)) as im:
            assert _jpeg_header(data) == (*im.size, im.info.get("dpi"))
    # Exif (Pillow reads a resolution from it) and truncated headers are Pillow's
    exif = Image.Exif()
    exif[0x011A], exif[0x0128] = 240.0, 2
    assert _jpeg_header(_jpeg(img, exif=exif)) is None
    assert _jpeg_header(plain[:300]) is None
