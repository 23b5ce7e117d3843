"""Round trips: printed card -> synthetic fill and scan -> read, with both methods."""
import json

import numpy as np
import pytest

from omr.reading import read_card, reading_json
from omr.settings import DEFAULT_SETTINGS, Settings
from omr.synthetic import ScanParams, scan_card

from .conftest import CANDIDATE, SUBJECT, make_refl, scan, wrong_items


@pytest.mark.parametrize("method", ["a", "b"])
def test_clean_round_trip(template, clean_card, method):
    _, truth, data = clean_card
    r = read_card(data, template, method)
    assert r["status"] == "ok", r["flags"]
    assert r["recognition_version"] == f"omr-{method}/1.0"
    assert r["settings_hash"] == DEFAULT_SETTINGS.hash
    assert r["template_hash"] == template.content_hash
    assert wrong_items(r, truth) == []
    assert r["candidate_number"]["value"] == CANDIDATE
    assert r["candidate_number"]["grid"] == r["candidate_number"]["barcode"] == CANDIDATE
    assert r["candidate_number"]["parts"]["sitting_name"] == "April"     # R-OMR-8
    assert r["subject_code"]["value"] == SUBJECT
    assert r["absence"]["absent"] is False
    assert r["page"]["code"] == 1 and r["orientation"] == 0
    assert r["alignment"]["rms_mm"] < 0.1
    q = r["objective"]["1"]
    assert len(q["fill"]) == 4 and q["confidence"] > 2 and q["kind"] == "single"
    json.dumps(r)


@pytest.mark.parametrize("method", ["a", "b"])
def test_same_input_same_bytes(template, clean_card, method):
    _, _, data = clean_card
    assert reading_json(read_card(data, template, method)) == reading_json(read_card(data, template, method))


def test_methods_are_diverse_but_agree(template, clean_card):
    _, _, data = clean_card
    a, b = read_card(data, template, "a"), read_card(data, template, "b")
    assert a["recognition_version"] != b["recognition_version"]
    assert a["objective"]["1"]["raw"].keys() != b["objective"]["1"]["raw"].keys()
    assert a["geometry"]["h_mm_to_px"] != b["geometry"]["h_mm_to_px"]
    assert {q: v["chosen"] for q, v in a["objective"].items()} == {q: v["chosen"] for q, v in b["objective"].items()}


@pytest.mark.parametrize("params, orientation", [
    (ScanParams(turn=90, rotation_deg=2.0), 90),
    (ScanParams(turn=180), 180),
    (ScanParams(turn=270, rotation_deg=-3.0), 270),
    (ScanParams(rotation_deg=10.0), 0),
    (ScanParams(rotation_deg=-10.0), 0),
    (ScanParams(perspective=0.03), 0),
    (ScanParams(scale=0.95, rotation_deg=1.0), 0),
    (ScanParams(scale=1.05, rotation_deg=-1.0), 0),
    (ScanParams(blur_sigma=1.2, noise_sigma=6.0, illumination=0.3), 0),
    (ScanParams(colour=True), 0),
])
def test_geometry_and_scan_artefacts(template, answers, params, orientation):
    refl, truth = make_refl(template, answers, seed=3)
    data = scan(refl, params, seed=3)
    for method in "ab":
        r = read_card(data, template, method)
        assert r["status"] == "ok", (method, r["flags"])
        assert r["orientation"] == orientation
        assert wrong_items(r, truth) == []
        assert r["candidate_number"]["value"] == CANDIDATE


@pytest.mark.parametrize("dpi", [150, 300])
def test_other_resolutions(template, answers, dpi):
    refl, truth = make_refl(template, answers, seed=4, dpi=dpi)
    data = scan(refl, ScanParams(rotation_deg=1.5), seed=4, dpi=dpi, fmt="png")
    for method in "ab":
        r = read_card(data, template, method)
        assert r["status"] == "ok" and wrong_items(r, truth) == []
        assert abs(r["dpi"] - dpi) < 3


def test_ndarray_and_path_inputs(template, clean_card, tmp_path):
    refl, truth, data = clean_card
    import cv2
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    r = read_card(arr, template, "a")
    assert r["status"] == "ok" and wrong_items(r, truth) == []
    path = tmp_path / "card.jpg"
    path.write_bytes(data)
    assert read_card(path, template, "b")["status"] == "ok"


def test_second_page_is_found_from_its_page_code(template):
    data, truth = scan_card(template, {}, ScanParams(turn=180), seed=5, page=2)
    r = read_card(data, template, "a")
    assert r["status"] == "ok" and r["page"]["code"] == 2 and r["objective"] == {}
    assert r["candidate_number"] is None


def test_roll_check(template, clean_card):
    _, _, data = clean_card
    r = read_card(data, template, "a", roll={CANDIDATE, "450126100043"})
    assert r["candidate_number"]["on_roll"] is True and r["status"] == "ok"


def test_settings_are_frozen_and_hashable():
    s = Settings()
    with pytest.raises(Exception):
        s.noise_k = 1.0  # type: ignore[misc]
    assert hash(s) == hash(Settings())
    assert s.hash == Settings().hash and s.hash != Settings(noise_k=5.0).hash
    assert len(s.hash) == 64


def test_unknown_method_is_a_programming_error(template, clean_card):
    with pytest.raises(ValueError):
        read_card(clean_card[2], template, "c")


def test_card_printed_by_card_render_reads_back(template, answers, tmp_path):
    """Done-when: a card printed from `card render`, filled and degraded by the synthetic
    module, reads correctly with both methods."""
    import argparse

    import cv2

    from omr.cli import register
    from omr.synthetic import _blank_page

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(["card", "render", "--template", str(template_path()), "--out",
                         str(tmp_path / "card.png"), "--dpi", "200"])
    assert args.handler(args) == 0
    printed = cv2.imread(str(tmp_path / "card.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(printed, _blank_page(template, 200, 1))   # synthetic fills this very page
    data, truth = scan_card(template, answers, ScanParams(rotation_deg=-4, noise_sigma=3), seed=31,
                            candidate_number=CANDIDATE, subject_code=SUBJECT)
    for method in "ab":
        r = read_card(data, template, method)
        assert r["status"] == "ok" and wrong_items(r, truth) == []
        assert r["candidate_number"]["value"] == CANDIDATE


def template_path():
    from .conftest import EXAMPLE
    return EXAMPLE
