"""The load benchmark itself runs (a tiny run on each backend), so its figures can be reproduced."""
from __future__ import annotations

import json

import pytest

from scripts import bench_marking as bm

pytestmark = pytest.mark.timeout(240)


def _pg_server_args(request) -> list[str]:
    """``--database-url`` for the test PostgreSQL server (the benchmark makes its own database there)."""
    server = request.getfixturevalue("pg_server")
    return ["--database-url", server["url"].set(database="postgres").render_as_string(hide_password=False)
            .replace("postgresql+psycopg://", "postgresql://")]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_marking_smoke_run(backend, tmp_path, request):
    # 2 s per phase: a 1 s window once caught a stalled CI host with no mark in it
    args = ["--markers", "6", "--responses", "3000", "--duration", "2", "--skip-scale",
            "--clients", "4", "--threads", "2", "--latency-at", "0.5", "--marker-pace", "0.5",
            "--json", str(tmp_path / "out.json")]
    if backend == "sqlite":   # a paired A/B of the idle order: each latency phase once per order
        args += ["--idle-order", "random", "fifo"]
    if backend == "postgresql":
        args += _pg_server_args(request)
    assert bm.main(args) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["backend"] == backend and out["servers"] == 2
    assert out["web"]["marks"] > 0 and not out["web"]["errors"], out["web"]
    assert set(out["web"]["cpu_ms_per_mark"]) == {"web", "postgres", "client", "total"}
    latency = out["latency_at_50pct"]
    assert latency["marks"] > 0
    # every answer carried the server's own time, never more than the latency around it
    assert 0 < latency["server_p50_ms"] <= latency["submit_p50_ms"] and 0 < latency["tail_share_in_server"] <= 1
    paced = out["latency_at_marker_pace"]   # 6 markers, one mark each 0.5 s per marker
    assert paced["offered_marks_per_s"] == 12.0 and paced["marks"] > 0 and paced["submit_p50_ms"] > 0
    assert out["raw"]["marks"] > 0 and out["web_over_raw"] > 0
    assert latency["idle_order"] == "random"
    if backend == "sqlite":
        assert out["latency_at_50pct_fifo"]["idle_order"] == "fifo" and out["latency_at_50pct_fifo"]["marks"] > 0
        assert out["latency_at_marker_pace_fifo"]["offered_marks_per_s"] == 12.0


def test_bench_says_so_when_the_saturation_phase_completes_nothing(tmp_path, monkeypatch, capsys):
    """No mark at saturation (a stalled host): a clear error and exit 1, not a division by
    zero or latency phases offered 0 marks/s."""
    monkeypatch.setattr(bm, "web_load", lambda *a, **k: bm.LoadResult(0, 1.0, [], [], {"submit 503": 4}))
    offered = []
    monkeypatch.setattr(bm, "web_latency_at", lambda *a, rate, **k: offered.append(rate) or bm.LoadResult(
        3, 1.0, [], [5.0, 6.0, 7.0], {}, server_ms=[4.0, 5.0, 6.0]))
    out = tmp_path / "out.json"
    assert bm.main(["--markers", "4", "--responses", "200", "--duration", "1", "--skip-scale", "--clients", "2",
                    "--threads", "2", "--servers", "1", "--latency-at", "0.5", "0.8", "--marker-pace", "2",
                    "--json", str(out)]) == 1
    assert "saturation phase completed no marks" in capsys.readouterr().err
    results = json.loads(out.read_text())
    assert offered == [2.0] and "latency_at_marker_pace" in results   # the paced phase does not depend on it
    assert "latency_at_50pct" not in results and results["error"] == "saturation phase completed no marks"


def test_latency_phase_refuses_an_unknown_idle_order():
    with pytest.raises(ValueError, match="idle_order"):
        bm.web_latency_at([1], 1, [], rate=1.0, duration=0.1, idle_order="lifo")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_dispatch_scaling_times_both_sizes_in_alternating_rounds(backend, tmp_path, request, monkeypatch):
    url = _pg_server_args(request)[1] if backend == "postgresql" else None
    populate, claim_p50, order = bm.populate, bm.claim_p50, []

    def named_populate(db, *, markers, responses, code):   # a marker count that names the size
        return populate(db, markers=3 if code == "SS" else 4, responses=responses, code=code)

    def noted_claims(db, world, claims, start=0):
        order.append("small" if len(world.markers) == 3 else "large")
        return claim_p50(db, world, claims, start)

    monkeypatch.setattr(bm, "populate", named_populate)
    monkeypatch.setattr(bm, "claim_p50", noted_claims)
    out = bm.dispatch_scaling(url, tmp_path, 200, 600, 12)
    assert out["small"]["responses"] == 200 and out["large"]["responses"] == 600
    assert out["ratio_large_over_small"] == round(out["large"]["claim_p50_ms"] / out["small"]["claim_p50_ms"], 2)
    assert out["service_cost"]["marks"] == 66 and out["service_cost"]["statements_per_mark"] > 0
    # each warmed up once, then timed in alternating rounds
    assert order == ["small", "large"] + ["small", "large"] * bm.SCALING_ROUNDS


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_service_cost_only_runs_rounds_and_reports_medians(backend, tmp_path, request, capsys):
    args = ["--service-cost-only", "2", "--service-cost-marks", "150", "--json", str(tmp_path / "out.json")]
    if backend == "postgresql":
        args += _pg_server_args(request)
    assert bm.main(args) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    rounds, median = out["service_cost_rounds"], out["service_cost_median"]
    assert len(rounds) == 2 and all(r["marks"] == 150 and r["statements_per_mark"] > 0 for r in rounds)
    for key, value in median.items():
        assert min(r[key] for r in rounds) <= value <= max(r[key] for r in rounds), key
    # the database's own CPU is read from PostgreSQL's processes; SQLite runs inside the benchmark
    assert ("database_cpu_ms_per_mark" in median) == (backend == "postgresql")
    assert "web" not in out and "median:" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_claim_history_compares_a_veteran_with_a_newcomer(backend, tmp_path, request):
    from scripts import bench_claim_history as bh
    args = ["--history", "60", "--days", "3", "--claims", "5", "--json", str(tmp_path / "out.json")]
    if backend == "postgresql":
        args += _pg_server_args(request)
    assert bh.main(args) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["backend"] == backend and out["history"] == 60
    p50 = out["claim_p50_ms"]
    assert set(p50) == {"veteran", "newcomer"} and all(value > 0 for value in p50.values())
    assert out["ratio_veteran_newcomer"] == round(p50["veteran"] / p50["newcomer"], 2)


def test_bench_claim_history_refuses_nonsense_arguments(capsys):
    from scripts import bench_claim_history as bh
    with pytest.raises(SystemExit):
        bh.main(["--days", "0"])
    assert "--days" in capsys.readouterr().err
