"""Redis down: live updates degrade, marking goes on.

The server starts with MC_REDIS_URL (Socket.IO message queue and the login throttle's
storage), markers log in and mark; then ``redis-cli shutdown nosave``. Claims and
submits must keep answering 200 over the same sessions, the process must stay up and
``/healthz`` must answer. Redis is started again in ``finally``.
"""
from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from marking.db import Database
from scripts import bench_marking as bm

from tests.scale.scale_helpers import MarkerLoop, check_marks, wait_for

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")]
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
               "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]


def redis_up() -> bool:
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True, text=True, timeout=5)
    return r.stdout.strip() == "PONG"


def ensure_redis() -> None:
    if not redis_up():
        subprocess.run(REDIS_START, check=False, timeout=10)
        assert wait_for(redis_up, 10), "Redis did not come back"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_marking_goes_on_when_redis_stops(db_url, servers, password_hash):
    ensure_redis()
    db = Database(db_url)
    try:
        world = bm.populate(db, markers=4, responses=300, password_hash=password_hash)
        server = servers(db_url, env={"MC_REDIS_URL": REDIS_URL})
        sessions = bm.login_all(server.port, world.usernames, workers=2)
        loop = MarkerLoop(server.port, world.item_id, sessions, world.markers).start()
        assert wait_for(lambda: len(loop.acked) >= 10, 30), loop.errors
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "shutdown", "nosave"], timeout=10)
        assert wait_for(lambda: not redis_up(), 10)
        before = len(loop.acked)
        time.sleep(1.0)   # let the outbox drainer hit the dead message queue
        assert wait_for(lambda: len(loop.acked) >= before + 20, 40), (len(loop.acked), loop.errors)
        loop.join()
        assert server.proc.poll() is None, "the server died with Redis"
        conn = bm.Session(server.port)
        status, _h, _b = conn.request("GET", "/healthz")
        assert status == 200
        # Every submit sent after Redis stopped was answered 200 (no retry needed, no refusal).
        assert not loop.refused
        assert not any(k.startswith("submit") for k in loop.errors), loop.errors
        check_marks(db, loop)
    finally:
        db.dispose()
        ensure_redis()
