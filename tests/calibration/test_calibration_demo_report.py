"""Demo end to end (suspension of a drifting marker) and the item-analysis report + CLI."""
from __future__ import annotations

import argparse
import types

from calibration import analysis, cli, demo, stats, whatif
from marking import simulate

from tests.calibration.helpers import calibration_hooks  # noqa: F401
from tests.marking.factories import NOW, staffed_subject


def test_demo_report_and_cli(db, tmp_path, capsys):
    ids = staffed_subject(db, markers=4, code="00020", item_specs=[dict(code="Q1", max_cp=1000, step_cp=50,
                                                                         threshold_cp=200)])
    simulate.create_responses_for_testing(db, "00020", 90, seed=2)
    summary = demo.run_demo(db, "00020", seed=5, now=NOW)
    assert summary["ledger_ok"]
    assert [s for _u, s in summary["qualification"]][:2] == ["failed", "passed"]
    assert summary["dealt"]["seed"] > 0
    assert len(summary["suspensions"]) == 1 and summary["suspensions"][0]["requeued"] > 0
    assert summary["suspensions"][0]["user_id"] == ids["markers"][-1]
    item = ids["items"][0]
    st = stats.marker_statistics(db, item)
    assert st["group"]["pairs"] > 0 and all(0 <= (m["exact"] or 0) <= 1 for m in st["markers"])
    w = whatif.run(db, item, reps=20, seed=1)
    assert w["rows"] and w["pairs"] > 0
    data = analysis.item_analysis(db, "00020")
    assert data["items"][0]["n"] > 0
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    ctx = types.SimpleNamespace(db=db, settings=None)
    args = parser.parse_args(["report", "item-analysis", "--subject", "00020", "--out", str(tmp_path / "r")])
    assert args.handler(args, ctx) == 0
    assert (tmp_path / "r" / "item-analysis.pdf").read_bytes()[:4] == b"%PDF"
    assert "<img" in (tmp_path / "r" / "item-analysis.html").read_text()
    args = parser.parse_args(["calibration", "stats", "--item", "Q1", "--subject", "00020"])
    assert args.handler(args, ctx) == 0
    args = parser.parse_args(["calibration", "whatif", "--item", "Q1", "--subject", "00020", "--reps", "10"])
    assert args.handler(args, ctx) == 0
    assert "suggested_threshold" in capsys.readouterr().out
