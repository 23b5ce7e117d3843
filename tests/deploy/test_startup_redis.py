"""Startup refuses an unusable MC_REDIS_URL loudly (pitfall 4: the manager would drop events)."""
from __future__ import annotations

import builtins
import subprocess
import sys
import time

import pytest

from tests.deploy.deploy_support import closed_port, make_app
from web import server
from web.live import ConfigurationError, check_redis


def test_check_redis_closed_port():
    url = f"redis://127.0.0.1:{closed_port()}/0"
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="did not answer PING"):
        check_redis(url)
    assert time.monotonic() - started < 10


def test_check_redis_package_missing(monkeypatch):
    real_import = builtins.__import__

    def no_redis(name, *args, **kwargs):
        if name == "redis" or name.startswith("redis."):
            raise ImportError("No module named 'redis'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "redis", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_redis)
    with pytest.raises(ConfigurationError, match="redis package is not installed"):
        check_redis("redis://127.0.0.1:6379/0")


def test_create_app_refuses_closed_redis(settings, db):
    bad = settings.with_overrides(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    with pytest.raises(ConfigurationError, match="MC_REDIS_URL"):
        make_app(bad, db)


def test_serve_refuses_before_binding(settings, db, monkeypatch):
    """``serve`` checks Redis before migrating or starting gunicorn."""
    class Ctx:
        pass
    ctx = Ctx()
    ctx.settings = settings.with_overrides(redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    ctx.db = db
    monkeypatch.setattr(server.Server, "run", lambda self: pytest.fail("gunicorn must not start"))
    with pytest.raises(ConfigurationError):
        server.serve(ctx, port=closed_port())


def test_cli_exit_code_and_message(tmp_path):
    """The real command: a clear one-line message on stderr and exit status 2."""
    env = {"MC_ENV": "test", "MC_DATA_DIR": str(tmp_path), "MC_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "web.cli", "serve", "--port", str(closed_port())],
                          env=env, capture_output=True, text=True, timeout=60,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert proc.returncode == 2, proc.stderr
    assert "configuration error" in proc.stderr and "MC_REDIS_URL" in proc.stderr
    assert "Traceback" not in proc.stderr
