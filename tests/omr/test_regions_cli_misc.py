import argparse
import json

import cv2
import numpy as np
import pytest

from omr.cli import register
from omr.ids import validate_candidate_number
from omr.overlay import draw_overlay
from omr.reading import read_card
from omr.regions import cut_regions, png_bytes
from omr.synthetic import ScanParams, _stroke, degrade, fill_card, scan_card
from omr.template import load_template, mm_to_px

from .conftest import CANDIDATE, EXAMPLE


# ----------------------------------------------------------------- R-OMR-8 numbers

@pytest.mark.parametrize("number, ok", [
    ("450126100042", True), ("450126400042", True),
    ("450126500042", False),      # sitting must be 1-4
    ("450126000042", False),
    ("45012610004", False),       # 11 digits
    ("4501261000421", False),
    ("45012610004A", False),
    ("000126100042", False),      # no city 00
    ("450126100000", False),      # no sequence 00000
    ("４５０１２６１０００４２", False),   # full-width digits are not ASCII digits
])
def test_candidate_number_rules(number, ok):
    assert (validate_candidate_number(number) == []) is ok


# ----------------------------------------------------------------- regions

def _page2_with_writing(template, seed=5):
    rng = np.random.default_rng(seed)
    refl, _ = fill_card(template, {}, page=2, rng=rng)
    p = mm_to_px(1, 200)
    for k in range(8):      # writing in item 43
        _stroke(refl, np.array([[30 + k * 8, 50], [36 + k * 8, 60]]) * p, 0.4 * p, 0.7, rng)
    _stroke(refl, np.array([[125, 24], [170, 26]]) * p, 0.4 * p, 0.7, rng)      # name box
    _stroke(refl, np.array([[140, 187.8], [170, 188.2]]) * p, 0.4 * p, 0.7, rng)  # between 44 and 45
    return degrade(refl, ScanParams(rotation_deg=3), rng)


@pytest.mark.parametrize("method", ["a", "b"])
def test_cut_regions_ink_and_outside_writing(template, method):
    img = _page2_with_writing(template)
    reading = read_card(img, template, method)
    assert reading["page"]["used"] == 2
    cuts = {(c.item, c.index): c for c in cut_regions(img, template, reading, dpi=100)}
    assert set(cuts) == {("43", 0), ("44", 0), ("45", 0), ("45", 1)}
    assert cuts[("43", 0)].ink_share > 0.002 and not cuts[("43", 0)].near_empty
    assert cuts[("44", 0)].near_empty and cuts[("45", 0)].near_empty
    assert not cuts[("43", 0)].writing_outside
    assert cuts[("44", 0)].writing_outside and cuts[("45", 1)].writing_outside
    assert not cuts[("45", 0)].writing_outside
    assert cuts[("43", 0)].image.shape == (round(74 * 100 / 25.4), round(174 * 100 / 25.4))
    assert png_bytes(cuts[("44", 0)].image).startswith(b"\x89PNG")
    json.dumps([c.summary() for c in cuts.values()])


def test_cut_regions_blanks_identity(template):
    # a template whose identity box overlaps an answer region: the cut must be white there
    raw = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    raw["pages"][1]["identity_regions"].append({"label": "signature", "rect_mm": [150, 90, 40, 15]})
    t2 = load_template(raw)
    rng = np.random.default_rng(3)
    refl, _ = fill_card(t2, {}, page=2, rng=rng)
    p = mm_to_px(1, 200)
    _stroke(refl, np.array([[155, 100], [185, 102]]) * p, 0.5 * p, 0.8, rng)   # signed inside item 43
    img = degrade(refl, ScanParams(rotation_deg=-2), rng)
    reading = read_card(img, t2, "a")
    cut = next(c for c in cut_regions(img, t2, reading, dpi=100) if c.item == "43")
    q = 100 / 25.4
    hidden = cut.image[int((90 - 34) * q):int((105 - 34) * q), int((150 - 18) * q):int((190 - 18) * q)]
    assert hidden.size and hidden.min() == 255
    with pytest.raises(ValueError):
        cut_regions(img, t2, {"status": "error"})


# ----------------------------------------------------------------- synthetic

def test_synthetic_is_reproducible(template):
    a, ta = scan_card(template, {"1": "A", "31": "BC"}, ScanParams(rotation_deg=2, noise_sigma=4), seed=9,
                      candidate_number=CANDIDATE)
    b, tb = scan_card(template, {"1": "A", "31": "BC"}, ScanParams(rotation_deg=2, noise_sigma=4), seed=9,
                      candidate_number=CANDIDATE)
    c, _ = scan_card(template, {"1": "A", "31": "BC"}, ScanParams(rotation_deg=2, noise_sigma=4), seed=10,
                     candidate_number=CANDIDATE)
    assert a == b and a != c and ta == tb
    assert ta.answers["1"] == "A" and ta.answers["2"] == ""


# ----------------------------------------------------------------- CLI

@pytest.fixture()
def parser():
    p = argparse.ArgumentParser(prog="marking-centre")
    sub = p.add_subparsers(dest="command")
    register(sub)
    return p


def _run(parser, argv):
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_card_render_and_layout(parser, tmp_path, capsys):
    assert _run(parser, ["card", "render", "--template", str(EXAMPLE), "--out", str(tmp_path / "c.pdf"),
                         "--dpi", "100", "--candidate", CANDIDATE]) == 0
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    assert _run(parser, ["card", "render", "--template", str(EXAMPLE), "--out", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c-p2.png").exists()
    assert _run(parser, ["card", "render", "--template", str(EXAMPLE), "--out", str(tmp_path / "x.png"),
                         "--candidate", "123"]) == 2
    capsys.readouterr()
    assert _run(parser, ["card", "layout", "--template", str(EXAMPLE), "--dpi", "150", "--json"]) == 0
    lay = json.loads(capsys.readouterr().out)
    assert lay["dpi"] == 150 and len(lay["pages"]) == 2
    assert _run(parser, ["card", "layout", "--template", str(tmp_path / "none.json"), "--dpi", "150"]) == 2


def test_cli_omr_read(parser, template, clean_card, tmp_path, capsys):
    good = tmp_path / "good.jpg"
    good.write_bytes(clean_card[2])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    overlays = tmp_path / "ov"
    assert _run(parser, ["omr", "read", "--template", str(EXAMPLE), str(good), "--json", "--method", "b",
                         "--overlay", str(overlays)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["status"] == "ok" and line["method"] == "b" and line["file"] == str(good)
    assert (overlays / "good.overlay-b.png").exists()
    assert _run(parser, ["omr", "read", "--template", str(EXAMPLE), str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "ERROR empty_input" in out and CANDIDATE in out


def test_overlay_marks_states(template, clean_card):
    img = cv2.imdecode(np.frombuffer(clean_card[2], np.uint8), cv2.IMREAD_GRAYSCALE)
    r = read_card(clean_card[2], template, "a")
    ov = draw_overlay(img, template, r)
    assert ov.shape == img.shape + (3,)
    assert (ov[:, :, 1].astype(int) - ov[:, :, 0] > 100).any()      # green filled bubbles drawn
    err = draw_overlay(img, template, read_card(b"", template))
    assert err.shape == img.shape + (3,)
