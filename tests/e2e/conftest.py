"""Real-browser fixtures: the real server (gunicorn, one worker, threads) on 127.0.0.1 with an
ephemeral port and a temp SQLite data dir, and Debian's Chromium driven by Playwright through
``executable_path`` (never ``playwright install``; architecture.md §6)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.e2e.e2e_support import OUTPUT, ROOT
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need(reason: str):
    if IN_CI:
        pytest.fail(reason + " (CI=true: the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        _need("Debian Chromium is not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _need("the playwright package is not installed (pip install -e '.[test]')")
    return path


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Prepare a small centre in a temp data dir, then start ``marking-centre serve``."""
    from marking import migrate
    from marking.config import load_settings
    from marking.db import Database
    from tests.web.webhelpers import build_world

    data = tmp_path_factory.mktemp("e2e-data")
    env = {**os.environ, "MC_ENV": "test", "MC_DATA_DIR": str(data)}
    env.pop("MC_DATABASE_URL", None)
    env.pop("MC_REDIS_URL", None)
    settings = load_settings(data, env={"MC_ENV": "test"})
    db = Database(settings.database_url)
    migrate.upgrade(db)
    world = build_world(db, settings, responses=1)
    port = free_port()
    OUTPUT.mkdir(exist_ok=True)
    log = open(OUTPUT / "e2e-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "web.cli", "--data-dir", str(data), "serve", "--port", str(port),
                             "--threads", "24", "--no-migrate"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:     # wait for /healthz (startup, not an assertion on timing)
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start; see {OUTPUT / 'e2e-server.log'}")
        time.sleep(0.2)
    yield {"base": base, "world": world, "db": db, "settings": settings}
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    db.dispose()
