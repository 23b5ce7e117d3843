"""The load benchmark itself runs (a tiny run on each backend), so its figures can be reproduced."""
from __future__ import annotations

import json

import pytest

from scripts import bench_marking as bm

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bench_marking_smoke_run(backend, tmp_path, request):
    args = ["--markers", "6", "--responses", "3000", "--duration", "1", "--skip-scale",
            "--clients", "4", "--threads", "2", "--latency-at", "0.5", "--json", str(tmp_path / "out.json")]
    if backend == "postgresql":
        server = request.getfixturevalue("pg_server")
        args += ["--database-url", server["url"].set(database="postgres").render_as_string(hide_password=False)
                 .replace("postgresql+psycopg://", "postgresql://")]
    assert bm.main(args) == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["backend"] == backend and out["servers"] == 2
    assert out["web"]["marks"] > 0 and not out["web"]["errors"], out["web"]
    assert set(out["web"]["cpu_ms_per_mark"]) == {"web", "postgres", "client", "total"}
    latency = out["latency_at_50pct"]
    assert latency["marks"] > 0
    # every answer carried the server's own time, never more than the latency around it
    assert 0 < latency["server_p50_ms"] <= latency["submit_p50_ms"] and 0 < latency["tail_share_in_server"] <= 1
    assert out["raw"]["marks"] > 0 and out["web_over_raw"] > 0
