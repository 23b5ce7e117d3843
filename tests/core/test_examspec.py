"""Exam specification import: errors by field and line; nothing imported on error."""
from pathlib import Path

import pytest
from sqlalchemy import func, select

from marking import examspec, templates
from marking.models import ExamSession, Item, Registration, ResolutionPolicy, Subject

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "exam-2026-10.yaml"

MINIMAL = """\
version: 1
session: {code: T-1, name: Test, kind: self_taught, year: 2026, sitting: 2}
subjects:
  - code: "001"
    name: Subject
    objective:
      - {codes: 1-3, options: ABCD, points: 1}
    subjective:
      - {code: "4", max: 10, step: 0.5, threshold: 2}
"""


def _write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_spec_imports(db):
    summary = examspec.import_spec(db, EXAMPLE)
    assert summary["subjects"] == 2 and summary["candidates"] == 240
    with db.read() as s:
        item = s.scalar(select(Item).where(Item.code == "31"))
        assert (item.max_cp, item.step_cp, item.threshold_cp) == (1000, 50, 200)
        subject = s.scalar(select(Subject).where(Subject.code == "00015"))
        assert subject.process_weight_pm == 300 and subject.pass_band_cp == 200
        assert s.scalar(select(func.count()).select_from(Registration)) == 320
        policies = {(p.name, p.version) for p in s.scalars(select(ResolutionPolicy))}
        assert policies == {("default", 1), ("essay", 1)}


def test_minimal_spec_and_exact_numbers(db, tmp_path):
    examspec.import_spec(db, _write(tmp_path, MINIMAL))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(Item)) == 4
        assert s.scalar(select(Item.step_cp).where(Item.code == "4")) == 50


def test_errors_name_field_and_line_and_import_nothing(db, tmp_path):
    bad = MINIMAL.replace("step: 0.5", "step: 0.3").replace("sitting: 2", "sitting: 5") \
                 .replace("options: ABCD", "options: A")
    with pytest.raises(examspec.SpecError) as caught:
        examspec.import_spec(db, _write(tmp_path, bad))
    text = "\n".join(caught.value.errors)
    assert "session.sitting (line 2)" in text
    assert "subjects[0].objective[0].options (line 7)" in text
    assert "subjects[0].subjective[0].step (line 9)" in text or "whole number of steps" in text
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(ExamSession)) == 0


@pytest.mark.parametrize("mutation,needle", [
    (lambda t: t.replace("threshold: 2", "threshold: 20"), "threshold"),
    (lambda t: t.replace("max: 10", "max: -1"), "max"),
    (lambda t: t.replace("codes: 1-3", "codes: 3-1"), "range"),
    (lambda t: t + "extra: 1\n", "unknown key"),
    (lambda t: t.replace("kind: self_taught", "kind: night_school"), "kind"),
    (lambda t: t.replace('{code: "4", max', '{code: "1", max'), "used twice"),
    (lambda t: t.replace("step: 0.5, threshold: 2", "step: 0.5, threshold: 2, policy: {third_rule: coin}"), "third_rule"),
    (lambda t: t.replace("step: 0.5", "step: 0.5e0"), "step"),
])
def test_each_bad_field_is_reported(db, tmp_path, mutation, needle):
    with pytest.raises(examspec.SpecError) as caught:
        examspec.parse_spec(_write(tmp_path, mutation(MINIMAL)))
    assert needle in "\n".join(caught.value.errors)


def test_self_taught_process_weight_capped_at_30_percent(tmp_path):
    text = MINIMAL.replace('    name: Subject\n', '    name: Subject\n    process_weight: 40%\n')
    with pytest.raises(examspec.SpecError, match="R-PROC-1"):
        examspec.parse_spec(_write(tmp_path, text))


def test_roll_candidate_numbers_are_validated(tmp_path):
    _write(tmp_path, "candidate_no,name,subjects\n450126200001,A,001\n450125200002,B,001\n4501262,C,001\n"
                     "450126200001,D,009\n", "roll.csv")
    with pytest.raises(examspec.SpecError) as caught:
        examspec.parse_spec(_write(tmp_path, MINIMAL + "roll: roll.csv\n"))
    text = "\n".join(caught.value.errors)
    assert "roll.csv:3" in text and "year digits" in text
    assert "roll.csv:4" in text and "12 digits" in text
    assert "roll.csv:5" in text and "twice" in text and "009" in text


def test_same_session_twice_is_refused(db, tmp_path):
    path = _write(tmp_path, MINIMAL)
    examspec.import_spec(db, path)
    with pytest.raises(examspec.SpecError, match="already exists"):
        examspec.import_spec(db, path)


def test_template_is_stored_by_content_hash_and_cross_checked(db, tmp_path):
    _write(tmp_path, '{"code": "card-x", "version": 1, "items": ["1", "2", "3", "4"]}', "card.json")
    text = MINIMAL.replace('    name: Subject\n', '    name: Subject\n    card_template: card.json\n')
    inspector = lambda body: ({"1", "2"}, {"4"})  # item 3 missing from the card
    with pytest.raises(examspec.SpecError, match="item 3 has no objective region"):
        examspec.import_spec(db, _write(tmp_path, text), template_inspector=inspector)
    examspec.import_spec(db, _write(tmp_path, text), template_inspector=lambda b: ({"1", "2", "3"}, {"4"}))
    with db.read() as s:
        subject = s.scalar(select(Subject))
        assert subject.card_template.content_hash == templates.template_hash(
            {"code": "card-x", "version": 1, "items": ["1", "2", "3", "4"]})


def test_template_hash_matches_omr_definition():
    """marking cannot import omr, so the hash is defined twice; they must agree (R-OMR-1)."""
    import json
    from omr.template import content_hash
    body = json.loads((EXAMPLE.parent / "cards" / "zikao-a4.json").read_text(encoding="utf-8"))
    assert templates.template_hash(body) == content_hash(body)


def test_example_template_imports_and_clash_is_refused(db, tmp_path):
    import json
    from omr.template import item_codes
    body = json.loads((EXAMPLE.parent / "cards" / "zikao-a4.json").read_text(encoding="utf-8"))
    (tmp_path / "card.json").write_text(json.dumps(body), encoding="utf-8")
    objective, subjective = item_codes(body)
    spec = MINIMAL.replace('    name: Subject\n', '    name: Subject\n    card_template: card.json\n')
    spec = spec.replace("codes: 1-3", f"codes: {sorted(objective, key=int)[0]}-{sorted(objective, key=int)[2]}")
    spec = spec.replace('code: "4"', f'code: "{sorted(subjective, key=int)[0]}"')
    examspec.import_spec(db, _write(tmp_path, spec), template_inspector=item_codes)
    body["title"] = "changed without a new version"
    (tmp_path / "card.json").write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(examspec.SpecError, match="needs a new version"):
        examspec.import_spec(db, _write(tmp_path, spec.replace("code: T-1", "code: T-2")), template_inspector=item_codes)


def test_template_with_an_item_on_two_pages_is_refused_and_nothing_imported(db, tmp_path):
    """An answer continued on another page would not reach a marker (one image per script
    and item is cut from one page): such a template is refused, not marked partly."""
    import json
    from omr.template import item_codes
    body = json.loads((EXAMPLE.parent / "cards" / "zikao-a4.json").read_text(encoding="utf-8"))
    body["pages"][0]["answer_regions"].append({"item": "43", "rect_mm": [18, 270, 174, 10]})   # 43 is on page 2
    (tmp_path / "card.json").write_text(json.dumps(body), encoding="utf-8")
    objective, subjective = item_codes(body)
    spec = MINIMAL.replace('    name: Subject\n', '    name: Subject\n    card_template: card.json\n')
    spec = spec.replace("codes: 1-3", f"codes: {sorted(objective, key=int)[0]}-{sorted(objective, key=int)[2]}")
    spec = spec.replace('code: "4"', f'code: "{sorted(subjective, key=int)[0]}"')
    with pytest.raises(examspec.SpecError, match="item 43 has answer regions on pages 1, 2"):
        examspec.import_spec(db, _write(tmp_path, spec), template_inspector=item_codes)
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(ExamSession)) == 0
    with pytest.raises(templates.TemplateRefused, match="must all be on one page"):
        templates.check_single_page_items(body)
    templates.check_single_page_items({"pages": [{"code": 2, "answer_regions": [   # two regions, one page: fine
        {"item": "45", "rect_mm": [0, 0, 1, 1]}, {"item": "45", "rect_mm": [2, 0, 1, 1]}]}]})
