import json

import cv2
import numpy as np
import pytest
import zxingcpp

from omr.layout import layout, page_layout
from omr.render import page_code_bits, render_card, write_card


def test_layout_is_json_and_in_pixels(template):
    lay = layout(template, 200)
    json.dumps(lay)  # JSON-serialisable
    assert lay["page_size_px"] == [1654, 2339]
    page1 = lay["pages"][0]
    ids = [b["id"] for b in page1["bubbles"]]
    assert len(ids) == 12 * 10 + 5 * 10 + 1 + 30 * 4 + 10 * 5 + 2
    first = page1["bubbles"][ids.index("q/1/A")]
    assert first["centre_px"] == pytest.approx([28 * 200 / 25.4, 117 * 200 / 25.4], abs=0.01)
    assert first["radius_px"] == pytest.approx(2.0 * 200 / 25.4, abs=0.01)
    assert page1["answer_regions"][0]["item"] == "41"
    assert lay["pages"][1]["answer_regions"][2]["rect_px"] == pytest.approx(
        [v * 200 / 25.4 for v in (18, 190, 84, 80)], abs=0.01)
    assert len(lay["timing_marks"]) == 17 + 17 + 26 + 26


def test_page_layout_groups(template):
    pl = page_layout(template, 1)
    kinds = [g.kind for g in pl.groups]
    assert kinds.count("digit") == 17 and kinds.count("single") == 30 and kinds.count("multiple") == 10
    assert pl.bubble_ids[pl.calibration_filled] == "calibration/filled"


def test_render_page_and_printed_marks(template):
    img = render_card(template, 150)
    assert img.shape == (1754, 1240) and img.dtype == np.uint8
    p = 150 / 25.4
    # solid fiducial, coded fiducial with a hole, filled calibration bubble
    assert img[int(12 * p), int(12 * p)] < 50
    assert img[int(285 * p), int(12 * p)] > 200
    assert img[int(276 * p), int(176 * p)] < 50
    assert page_code_bits(2, 4) == [0, 1, 0, 1]


def test_render_with_candidate_barcode(template):
    img = render_card(template, 200, candidate="450126100042")
    found = zxingcpp.read_barcodes(img, formats=zxingcpp.BarcodeFormat.Code128)
    assert [b.text for b in found] == ["450126100042"]


def test_write_pdf_and_png(template, tmp_path):
    pdf = write_card(template, tmp_path / "card.pdf", 100)
    assert pdf[0].read_bytes().startswith(b"%PDF")
    pngs = write_card(template, tmp_path / "card.png", 100)
    assert [p.name for p in pngs] == ["card.png", "card-p2.png"]
    assert cv2.imread(str(pngs[1]), cv2.IMREAD_GRAYSCALE).shape == (1169, 827)
    with pytest.raises(ValueError):
        write_card(template, tmp_path / "card.gif", 100)
