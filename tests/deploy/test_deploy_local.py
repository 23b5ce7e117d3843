"""scripts/deploy_local.py: PostgreSQL + Redis + 2 gunicorn + nginx (if installed) + 2 OMR nodes, then --stop."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.deploy.deploy_support import IN_CI, missing

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "deploy_local.py"
PG_URL = os.environ.get("MC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _admin_url() -> str:
    base, _, _ = PG_URL.rpartition("/")
    return base + "/postgres"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def prerequisites(redis_url):
    from sqlalchemy import create_engine, text
    url = _admin_url().replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        missing(f"PostgreSQL at {_admin_url()} unreachable: {exc.__class__.__name__}")
    finally:
        engine.dispose()
    nginx = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    if not nginx and IN_CI:
        pytest.fail("nginx is not installed (CI=true: .ci/run installs it)")
    return {"redis_url": redis_url, "nginx": bool(nginx)}


@pytest.mark.timeout(150)
def test_deploy_start_ready_stop(tmp_path, prerequisites):
    run_dir = tmp_path / "deploy"
    db_name = f"mc_deploy_{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin:/sbin"}
    common = ["--run-dir", str(run_dir), "--admin-url", _admin_url()]
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(SCRIPT), *common, "--db-name", db_name, "--workers", "2",
                               "--redis-url", prerequisites["redis_url"], "--timeout", "50"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=70)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert time.monotonic() - started < 60, "deployment took longer than 60 s"
        state = json.loads((run_dir / "state.json").read_text())
        names = sorted(p["name"] for p in state["processes"])
        assert names == ["omr-a", "omr-b", "web-1", "web-2"]
        assert all(_alive(p["pid"]) for p in state["processes"]), state
        assert len(state["web_ports"]) == 2
        if prerequisites["nginx"]:
            assert "nginx" in state and _alive(state["nginx"]["pid"])
            assert "ip_hash;" in (run_dir / "nginx.conf").read_text()
            with pytest.raises(urllib.error.HTTPError) as refused:   # /metrics is not proxied
                urllib.request.urlopen(state["url"] + "/metrics", timeout=5)
            assert refused.value.code == 403
        with urllib.request.urlopen(state["url"] + "/readyz", timeout=5) as r:   # through nginx when present
            assert json.loads(r.read())["status"] == "ready"
        for port in state["web_ports"]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                body = json.loads(r.read())
                assert body["status"] == "ready" and body["outbox_drain"] is True
                # PostgreSQL: deferred ledger chaining, every server runs a chainer (docs/ledger.md)
                assert body["ledger_chaining"] == "deferred" and body["ledger_chainer"] is True, body
                assert body["session_touches"] is True, body   # web.auth.touches: batched activity writes
                assert body["backup_scheduler"] is True, body   # R-OMR-4: every 12 h
        with urllib.request.urlopen(f"http://127.0.0.1:{state['web_ports'][0]}/metrics", timeout=5) as r:
            exposition = r.read()
            assert b"mc_omr_reads" in exposition and b"mc_ledger_chain_lag_seconds" in exposition
        with urllib.request.urlopen(state["url"] + "/socket.io/?EIO=4&transport=polling", timeout=5) as r:
            assert b'"sid"' in r.read()
        pids = [p["pid"] for p in state["processes"]] + ([state["nginx"]["pid"]] if "nginx" in state else [])
    finally:
        stopped = subprocess.run([sys.executable, str(SCRIPT), "--stop", "--drop-db", *common],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not any(_alive(pid) for pid in pids)
    assert not (run_dir / "state.json").exists()


def test_stop_without_deployment(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--stop", "--run-dir", str(tmp_path / "none")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "nothing to stop" in proc.stdout


def test_nginx_template_renders(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import deploy_local
    finally:
        sys.path.pop(0)
    conf = deploy_local.render_nginx(tmp_path, 8080, [9001, 9002]).read_text()
    assert "{{" not in conf and "server 127.0.0.1:9001" in conf and "server 127.0.0.1:9002" in conf
    assert "ip_hash;" in conf and "$http_upgrade" in conf and "listen 127.0.0.1:8080;" in conf
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx:
        (tmp_path / "logs").mkdir(exist_ok=True)
        check = subprocess.run([nginx, "-t", "-q", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                               capture_output=True, text=True, timeout=20)
        assert check.returncode == 0, check.stderr
