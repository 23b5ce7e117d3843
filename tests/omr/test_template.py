import copy
import hashlib
import json

import pytest

from omr.template import TemplateError, content_hash, item_codes, load_template, mm_to_px, page_size_px

from .conftest import EXAMPLE


@pytest.fixture()
def raw() -> dict:
    return json.loads(EXAMPLE.read_text(encoding="utf-8"))


def test_content_hash_is_sha256_of_canonical_json(template, raw):
    # R-OMR-1: the core recomputes this hash independently; keep the exact definition.
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert template.content_hash == hashlib.sha256(canonical).hexdigest()
    assert content_hash(raw) == template.content_hash
    assert load_template(raw).content_hash == template.content_hash


def test_content_hash_changes_with_any_edit(raw):
    edited = copy.deepcopy(raw)
    edited["pages"][0]["objective_blocks"][0]["origin_mm"][0] += 0.1
    assert content_hash(edited) != content_hash(raw)


def test_item_codes_exposed(template):
    obj = template.objective_items
    assert list(obj) == [str(i) for i in range(1, 41)]
    assert obj["1"] == {"kind": "single", "options": "ABCD", "page": 1}
    assert obj["35"]["kind"] == "multiple" and obj["35"]["options"] == "ABCDE"
    subj = template.subjective_items
    assert list(subj) == ["41", "42", "43", "44", "45"]
    assert [r["page"] for r in subj["45"]] == [2, 2]          # two regions for one item
    assert subj["41"][0]["page"] == 1 and subj["43"][0]["page"] == 2
    objective, subjective = item_codes(json.loads(EXAMPLE.read_text(encoding="utf-8")))
    assert objective == set(obj) and subjective == {"41", "42", "43", "44", "45"}


def test_geometry_helpers(template):
    assert mm_to_px(25.4, 200) == pytest.approx(200)
    assert page_size_px(template, 200) == (1654, 2339)


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.pop("pages"), "$.pages: required"),
    (lambda t: t.update(format="other/1"), "$.format"),
    (lambda t: t["fiducials"].pop(), "exactly 4"),
    (lambda t: t["fiducials"][0].update(coded=True), "exactly one fiducial must be coded"),
    (lambda t: t["fiducials"][1].update(corner="top_left"), "duplicate corner"),
    (lambda t: t["timing_marks"].pop(), "all four edges"),
    (lambda t: t["timing_marks"][0].update(to_mm=[186, 13]), "one horizontal line"),
    (lambda t: t["pages"][0]["candidate_number"].update(digits=10), "R-OMR-8"),
    (lambda t: t["pages"][0]["objective_blocks"][0].update(kind="essay"), ".kind"),
    (lambda t: t["pages"][0]["objective_blocks"][1].update(first=5), "duplicate objective item code"),
    (lambda t: t["pages"][0]["objective_blocks"][0].update(options="AAB"), ".options"),
    (lambda t: t["pages"][0]["answer_regions"][0].update(rect_mm=[18, 178, 300, 44]), "outside the page"),
    (lambda t: t["pages"][0]["answer_regions"][0].update(item="3"), "both objective and subjective"),
    (lambda t: t["pages"][1].update(code=1), "page codes must be unique"),
    (lambda t: t["pages"][1].update(code=9), "does not fit the page-code bits"),
    (lambda t: t["bubble"].update(radius_mm="2"), "must be a number"),
    (lambda t: t["page_size_mm"].append(3), "$.page_size_mm"),
])
def test_validation_errors_name_the_path(raw, mutate, message):
    mutate(raw)
    with pytest.raises(TemplateError) as exc:
        load_template(raw)
    assert message in str(exc.value)


def test_unreadable_or_invalid_file(tmp_path):
    with pytest.raises(TemplateError, match="cannot read"):
        load_template(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TemplateError, match="not valid JSON"):
        load_template(bad)
    arr = tmp_path / "arr.json"
    arr.write_text("[]", encoding="utf-8")
    with pytest.raises(TemplateError, match="JSON object"):
        load_template(arr)


def test_schema_file_is_valid_json_and_lists_required_keys():
    schema = json.loads((EXAMPLE.parents[2] / "docs" / "card-template.schema.json").read_text(encoding="utf-8"))
    assert set(schema["required"]) >= {"format", "id", "page_size_mm", "fiducials", "timing_marks", "pages"}
