"""Course results (R-PROC-1…3), the demo simulation and the CLI commands."""
from __future__ import annotations

import argparse
import csv
import types
from decimal import Decimal
from fractions import Fraction

import pytest
from sqlalchemy import select

from marking import course_results, ledger, marking_cli, simulate, totals
from marking.access import NotAllowed
from marking.models import Candidate, ProcessScore, Script, Subject
from tests.marking.factories import NOW, make_subject, staffed_subject


def test_composite_pure_rules():
    # Self-taught: k ≤ 300 ‰.
    with pytest.raises(ValueError):
        course_results.composite(exam=Decimal(70), process=Fraction(80), weight_pm=400,
                                 session_kind="self_taught", double_pass=False)
    r = course_results.composite(exam=Decimal(55), process=Fraction(90), weight_pm=300,
                                 session_kind="self_taught", double_pass=False)
    assert r.composite_exact == Fraction(655, 10) and r.composite == Decimal(66) and r.passed
    # Double pass: composite ≥ 60 but the exam below 60 fails.
    r = course_results.composite(exam=Decimal(55), process=Fraction(90), weight_pm=300,
                                 session_kind="self_taught", double_pass=True)
    assert r.passed is False and "double pass" in r.note
    # Open university may weigh the process above 30 %.
    r = course_results.composite(exam=Decimal(50), process=Fraction(70), weight_pm=500,
                                 session_kind="open_university", double_pass=False)
    assert r.composite == Decimal(60) and r.passed
    assert course_results.composite(exam=None, process=None, weight_pm=None, session_kind="self_taught",
                                    double_pass=False).passed is None


def test_process_scores_once_confirm_change_carry_and_export(db, tmp_path):
    ids = staffed_subject(db, markers=2, kind="open_university", process_weight_pm=500, objective_max_cp=None,
                          item_specs=[dict(code="Q1", max_cp=10000, step_cp=100, threshold_cp=1000,
                                           policy={"extra_read_zero": False, "extra_read_full": False})])
    simulate.create_responses_for_testing(db, ids["subject_code"], 2, seed=1)
    with db.read() as s:
        cands = s.execute(select(Candidate.id).order_by(Candidate.id)).scalars().all()
    officer, officer2 = ids["officer"], ids["officer2"]
    with pytest.raises(NotAllowed):
        course_results.import_process_score(db, ids["markers"][0], candidate_id=cands[0],
                                            subject_id=ids["subject_id"], score="80")
    # X = 85·0.3 + 72.5·0.7 = 76.25 exactly.
    ps = course_results.import_process_score(db, officer, candidate_id=cands[0], subject_id=ids["subject_id"],
                                             parts=[("homework", "85", 300), ("project", "72.5", 700)],
                                             confirm=True, now=NOW)
    with pytest.raises(course_results.ProcessScoreExists):
        course_results.import_process_score(db, officer, candidate_id=cands[0], subject_id=ids["subject_id"],
                                            score="90")
    change = course_results.request_process_change(db, officer, ps, "77", "input_error", now=NOW)
    assert change.status == "pending"
    with pytest.raises(NotAllowed):
        course_results.decide_process_change(db, officer, change.id, True)
    course_results.decide_process_change(db, officer2, change.id, True, now=NOW)
    with db.read() as s:
        assert s.get(ProcessScore, ps).score_cp == 7700
    # Carry forward to a later sitting of the same course (score ≥ 60, confirmed).
    with db.write() as s:
        later = make_subject(s, code=ids["subject_code"], kind="self_taught", objective_max_cp=None)
        s.add(Candidate(session_id=later.session_id, candidate_no="450126300001", name="Later"))
        s.flush()
        later_cand = s.execute(select(Candidate.id).where(Candidate.candidate_no == "450126300001")).scalar_one()
        later_id = later.id
    new_ps = course_results.carry_forward(db, officer, ps, to_candidate_id=later_cand, to_subject_id=later_id)
    with db.read() as s:
        assert s.get(ProcessScore, new_ps).score_cp == 7700 and s.get(ProcessScore, new_ps).confirmed
    # Exam totals: mark both scripts, then export.
    with db.write() as s:
        for script in s.execute(select(Script)).scalars():
            script.total_num, script.total_den, script.total_rounded = 50, 1, "50"
    out = tmp_path / "results.csv"
    with db.read() as s:
        session_code = s.execute(select(Subject).where(Subject.id == ids["subject_id"])).scalar_one().session.code
    n = course_results.export_csv(db, ids["subject_code"], out, session_code=session_code)
    rows = list(csv.DictReader(out.open()))
    assert n == 2 == len(rows)
    first = rows[0]
    # Z = 77·0.5 + 50·0.5 = 63.5 → 64 (the exact parts no longer match after the approved change).
    assert (first["composite"], first["passed"]) == ("64", "yes")
    assert rows[1]["note"] == "process score missing"
    assert ledger.verify(db, None).ok


def test_simulation_is_deterministic_and_complete(db):
    ids = staffed_subject(db, markers=4, leaders=1, reviewers=1, pass_band_cp=300,
                          item_specs=[dict(code="Q1"), dict(code="Q2", double_marked=False)])
    simulate.create_responses_for_testing(db, ids["subject_code"], 14, seed=7)
    summary = simulate.simulate_marking(db, ids["subject_code"], seed=7, now=NOW)
    assert summary["responses"] == {"resolved": 28}
    assert summary["outcomes"].get("arbitrated", 0) >= 1
    assert summary["outcomes"].get("third_resolved", 0) >= 1 and summary["outcomes"].get("agreed", 0) >= 1
    assert summary["outcomes"].get("single", 0) >= 1
    assert summary["review_sampled"] >= 2 and summary["scripts_totalled"] == 14
    assert totals.verify_results(db) == []
    assert ledger.verify(db, None).ok


def test_simulation_same_seed_same_summary(tmp_path):
    # Two fresh databases give identical summaries (SQLite files: determinism is backend-neutral).
    from marking import migrate
    from marking.db import Database
    summaries = []
    for n in range(2):
        db = Database(f"sqlite:///{tmp_path / f'sim{n}.sqlite3'}")
        migrate.upgrade(db)
        ids = staffed_subject(db, markers=3)
        simulate.create_responses_for_testing(db, ids["subject_code"], 8, seed=3)
        summaries.append(simulate.simulate_marking(db, ids["subject_code"], seed=3, now=NOW))
        db.dispose()
    assert summaries[0] == summaries[1]


def _cli(db, argv):
    parser = argparse.ArgumentParser()
    marking_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args, types.SimpleNamespace(db=db, settings=None))


def test_cli_verify_export_and_mark(db, tmp_path, capsys):
    ids = staffed_subject(db, markers=2, item_specs=[dict(code="Q1", policy={
        "extra_read_zero": False, "extra_read_full": False})])
    simulate.create_responses_for_testing(db, ids["subject_code"], 1, seed=1)
    assert _cli(db, ["results", "verify", "--subject", ids["subject_code"]]) == 1
    assert "item_not_marked" in capsys.readouterr().out
    import json
    for user in ("m1-00015", "m2-00015"):
        assert _cli(db, ["mark", "next", "--user", user, "--item", "Q1"]) == 0
        view = json.loads(capsys.readouterr().out)
        assert _cli(db, ["mark", "submit", "--user", user, "--token", view["token"], "--score", "7"]) == 0
        capsys.readouterr()
    assert _cli(db, ["mark", "next", "--user", "m1-00015", "--item", "Q1"]) == 3
    assert _cli(db, ["mark", "submit", "--user", "m1-00015", "--token", "nope", "--score", "7"]) == 2
    with db.write() as s:
        s.execute(select(Script)).scalar_one().objective_cp = 3000
    # Objective subtotal arrived after the subjective finals: recompute via the 复核/verify path.
    with db.write() as s:
        totals.recompute_script(s, s.execute(select(Script.id)).scalar_one(), now=NOW, actor_id=None)
    capsys.readouterr()
    assert _cli(db, ["results", "verify", "--subject", ids["subject_code"]]) == 0
    out = tmp_path / "r.csv"
    assert _cli(db, ["results", "export", "--subject", ids["subject_code"], "--out", str(out)]) == 0
    assert list(csv.DictReader(out.open()))[0]["exam_total"] == "37"
