"""R-OMR-1 trial runs: the recognition system is tested on a deck with known markings
before live reading, and no live batch starts without a passed trial for exactly its
subject, card template, recognition version and settings (both databases)."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from marking import batches, ledger
from marking.models import OmrTrialRun, ScanBatch
from omr import batch_adapter as adapter
from omr import batch_cli
from omr.ingest import ingest_path
from omr.trial import describe, run_trial

from tests.batches.batch_cards import two_page_template
from tests.batches.batch_helpers import erasure_trial_deck, run_cli, trial_deck, write_cards
from tests.batches.conftest import build_world, pass_trial


def _scanned_deck(tmp_path, world, *, wrong_card: int | None = None, n: int = 2, as_typed: bool = False):
    """n scanned test cards and their expected-answers file (see ``trial_deck``)."""
    folder = tmp_path / "deck"
    cards = trial_deck(folder, world.roll, n=n, wrong_card=wrong_card, as_typed=as_typed)
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({"cards": cards}))
    return folder, expected


def _deck_with_erasure(folder, world, doubts):
    """``erasure_trial_deck`` written to ``folder``/deck with its expected-answers file."""
    cards = erasure_trial_deck(folder / "deck", world.roll, doubts)
    (folder / "expected.json").write_text(json.dumps({"cards": cards}))
    return folder / "deck", folder / "expected.json"


def _create(db, world, **overrides):
    def work(s):
        subject = batches.find_subject(s, world.subject_code)
        values = {"recognition_version": adapter.RECOGNITION_VERSION, "settings_hash": adapter.SETTINGS_HASH}
        values.update(overrides)
        return batches.create_batch(s, subject, **values).id
    return db.run(work, retry_integrity=False)


def test_r_omr_1_synthetic_trial_passes_and_is_recorded_with_a_ledger_entry(db):
    world = build_world(db, trial=False)
    report = run_trial(db, world.subject_code, actor_id=world.users["tech1"], synthetic=2, dpi=100)
    assert report.passed and report.mismatches == 0 and len(report.cards) == 2
    # the second card carries a deliberate doubt (erasure residue), flagged by both methods
    assert report.declared_doubts == 1 and "doubts" not in report.cards[0] and len(report.cards[1]["doubts"]) == 1
    with db.read() as s:
        row = s.execute(select(OmrTrialRun)).scalar_one()
        assert (row.id, row.passed, row.cards_read, row.mismatches, row.cards_failed, row.source) == \
            (report.trial_id, True, 2, 0, 0, "synthetic")
        assert (row.template_hash, row.recognition_version, row.settings_hash) == \
            (report.template_hash, adapter.RECOGNITION_VERSION, adapter.SETTINGS_HASH)
        assert row.subject_id == world.subject_id and row.run_by == world.users["tech1"]
        assert row.finished_at >= row.started_at
        [data] = ledger.recorded_data(s, action="omr.trial_run", entity="omr_trial_run", entity_id=str(row.id))
    recorded = json.loads(data)
    assert recorded["passed"] is True and recorded["report_sha256"] == row.report_sha256
    assert recorded["subject"] == world.subject_code and recorded["template_hash"] == row.template_hash
    # and now a live batch may start, naming the trial it relies on
    batch_id = _create(db, world)
    with db.read() as s:
        [created] = ledger.recorded_data(s, action="batch.created", entity="scan_batch", entity_id=str(batch_id))
    assert json.loads(created)["trial_run_id"] == row.id


def test_r_omr_1_wrong_expected_answers_fail_the_trial_and_name_the_card(db, settings, tmp_path):
    world = build_world(db, trial=False)
    folder, expected = _scanned_deck(tmp_path, world, wrong_card=1)
    report = run_trial(db, world.subject_code, actor_id=world.users["tech1"], cards_dir=folder,
                       expected_file=expected)
    assert not report.passed
    assert report.failed_cards == ["scan-0001.jpg"]
    [bad] = [c for c in report.cards if c["mismatches"]]
    assert {(m["method"], m["field"], m["item"]) for m in bad["mismatches"]} == {("a", "item", "3"), ("b", "item", "3")}
    with db.read() as s:
        row = s.execute(select(OmrTrialRun)).scalar_one()
        assert (row.passed, row.cards_read, row.cards_failed, row.mismatches) == (False, 2, 1, 2)
        assert "scan-0001.jpg" in row.report
    # a failed trial does not open live reading
    with pytest.raises(batches.BatchError, match="no passed trial run"):
        ingest_path(db, settings, folder, world.subject_code)
    # the same deck with the right answers passes
    folder, expected = _scanned_deck(tmp_path / "again", world, as_typed=True)
    assert run_trial(db, world.subject_code, actor_id=world.users["tech1"], cards_dir=folder,
                     expected_file=expected).passed


def test_r_omr_1_create_batch_refused_without_a_passed_trial_and_after_changes(db, settings, tmp_path):
    world = build_world(db, trial=False)
    tech = world.users["tech1"]
    write_cards(tmp_path / "scans", world.roll, 1)
    with pytest.raises(batches.BatchError, match=r"marking-centre batch trial --subject 00015"):
        ingest_path(db, settings, tmp_path / "scans", world.subject_code)
    with db.read() as s:
        assert s.scalar(select(ScanBatch.id)) is None
    pass_trial(db, world.subject_code, tech)
    # other recognition settings or another recognition version: the trial does not cover them
    with pytest.raises(batches.BatchError, match="R-OMR-1"):
        _create(db, world, settings_hash="0" * 64)
    with pytest.raises(batches.BatchError, match="R-OMR-1"):
        _create(db, world, recognition_version="omr-a/9.9+omr-b/9.9")
    # a new card template needs a new trial
    batches.attach_template(db, world.subject_code, two_page_template())
    with pytest.raises(batches.BatchError, match="no passed trial run"):
        _create(db, world)
    pass_trial(db, world.subject_code, tech)
    assert _create(db, world)


def test_r_omr_1_trial_record_constraints(db):
    """passed exactly when nothing differed; counts are sane (CHECK constraints)."""
    world = build_world(db, trial=False)
    run_trial(db, world.subject_code, actor_id=world.users["tech1"], synthetic=1, dpi=100)
    for values in ({"passed": True, "mismatches": 1, "cards_failed": 1}, {"passed": False},
                   {"cards_failed": 5}, {"mismatches": -1}):
        with pytest.raises(IntegrityError):
            with db.write() as s:
                s.execute(update(OmrTrialRun).where(OmrTrialRun.subject_id == world.subject_id).values(**values))
    with pytest.raises(batches.BatchError, match="at least one card"):
        from marking.trials import record_trial_run
        record_trial_run(db, world.subject_code, template_hash="0" * 64, recognition_version="x", settings_hash="0" * 64,
                         source="synthetic", cards=[], actor_id=world.users["tech1"],
                         started_at=dt.datetime.now(dt.timezone.utc))


def test_r_omr_1_cli_trial_exits_0_on_pass_and_1_on_fail(db, settings, tmp_path, capsys):
    world = build_world(db, trial=False)
    ctx = SimpleNamespace(db=db, settings=settings)
    code = world.subject_code
    assert run_cli(ctx, "batch", "trial", "--subject", code, "--user", "tech1", "--synthetic", "1",
                    "--dpi", "100", "--quiet") == 0
    assert "PASSED" in capsys.readouterr().out
    folder, expected = _scanned_deck(tmp_path, world, wrong_card=0, n=1)
    assert run_cli(ctx, "batch", "trial", "--subject", code, "--user", "tech1", "--cards", str(folder),
                    "--expected", str(expected)) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and "scan-0000.jpg: method a read item 3 as" in captured.out
    assert "1/1 cards read" in captured.err
    assert run_cli(ctx, "batch", "trial", "--subject", code, "--user", "tech1", "--cards", str(folder),
                    "--expected", str(expected), "--json", "--quiet") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False and report["failed_cards"] == ["scan-0000.jpg"]
    # bad arguments, a card without expected answers, and a non-technician
    assert run_cli(ctx, "batch", "trial", "--subject", code, "--user", "tech1", "--cards", str(folder)) == 2
    (folder / "stray.jpg").write_bytes((folder / "scan-0000.jpg").read_bytes())
    assert run_cli(ctx, "batch", "trial", "--subject", code, "--user", "tech1", "--cards", str(folder),
                    "--expected", str(expected)) == 2
    assert "stray.jpg: no expected answers" in capsys.readouterr().err
    assert run_cli(ctx, "batch", "trial", "--subject", code, "--user", "marker1", "--synthetic", "1",
                    "--dpi", "100") == batch_cli.PERMISSION_EXIT
    with db.read() as s:
        assert [r.passed for r in s.execute(select(OmrTrialRun).order_by(OmrTrialRun.id)).scalars()] == \
            [True, False, False]


def test_r_omr_1_declared_doubts_must_be_flagged_by_both_methods(db, tmp_path):
    """A trial deck may carry deliberately unclear marks: the trial then checks that the
    system sends them to people (R-OMR-7) instead of reading them silently."""
    world = build_world(db, trial=False)

    def run(name, doubts):
        folder, expected = _deck_with_erasure(tmp_path / name, world, doubts)
        return run_trial(db, world.subject_code, actor_id=world.users["tech1"], cards_dir=folder,
                         expected_file=expected)

    def found(report):
        return {(m["method"], m["field"], m["item"]) for m in report.cards[0]["mismatches"]}

    undeclared = run("undeclared", None)   # an unexpected doubt fails the trial, as before
    assert not undeclared.passed and undeclared.failed_cards == ["scan-0000.jpg"]
    assert found(undeclared) >= {("a", "flag", "2"), ("b", "flag", "2")}
    declared = run("declared", ["2"])   # both methods flag the declared doubt: it would go to people
    assert declared.passed and declared.declared_doubts == 1
    assert [c.get("doubts") for c in declared.cards] == [["2"], None]   # recorded with the card
    missed = run("missed", [2, "5"])       # item 5 is cleanly filled: a declared doubt nobody raised
    assert not missed.passed and found(missed) == {("a", "doubt", "5"), ("b", "doubt", "5")}
    assert "did not flag item 5" in describe("scan-0000.jpg", missed.cards[0]["mismatches"][0])
    for n, bad in enumerate(("2", ["99"], ["2", "2"], [None])):   # refused before any card is read
        with pytest.raises(batches.BatchError, match="doubts"):
            run(f"bad{n}", bad)
    with db.read() as s:
        rows = s.execute(select(OmrTrialRun).order_by(OmrTrialRun.id)).scalars().all()
    assert [r.passed for r in rows] == [False, True, False]
    recorded = json.loads(rows[1].report)["cards"]   # the record says which doubts were checked
    assert recorded[0]["doubts"] == ["2"] and "doubts" not in recorded[1]
    assert hashlib.sha256(rows[1].report.encode()).hexdigest() == rows[1].report_sha256
    assert all("doubts" not in c for c in json.loads(rows[0].report)["cards"])   # none declared: plain form


def test_r_omr_1_a_synthetic_deck_fails_when_a_method_reads_its_doubt_silently(db, monkeypatch):
    """The synthetic deck's erasure tests the doubt path too: a method that read the card
    without flagging the residue (here: its flags dropped) fails the trial on that item."""
    from omr import trial as trial_module
    world = build_world(db, trial=False)
    read = adapter.read

    def silent_b(data, template, method, **kw):
        result, text_ = read(data, template, method, **kw)
        if method == "b":
            result = {**result, "flags": []}
        return result, text_

    monkeypatch.setattr(trial_module.adapter, "read", silent_b)
    report = run_trial(db, world.subject_code, actor_id=world.users["tech1"], synthetic=2, dpi=100)
    [doubt] = report.cards[1]["doubts"]
    assert not report.passed and report.failed_cards == ["trial-0002"]
    assert [(m["method"], m["field"], m["item"]) for m in report.cards[1]["mismatches"]] == [("b", "doubt", doubt)]


def test_synthetic_deck_puts_a_doubt_on_every_second_card_with_single_choice_items():
    from omr.template import load_template
    from omr.trial import synthetic_deck
    template = load_template(two_page_template())   # page 2 has no objective items
    deck = synthetic_deck(template, 5, subject_code="00015", dpi=100)
    assert [c.truth["page"] for c in deck] == [1, 2, 1, 2, 1]
    assert [len(c.truth["doubts"]) for c in deck] == [0, 0, 1, 0, 0]   # the 2nd card of page 1
    [item] = deck[2].truth["doubts"]
    assert len(deck[2].truth["answers"][item]) == 1   # residue beside a single answer
