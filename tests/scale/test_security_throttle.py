"""Login throttling holds across server processes (issue 8, security): with MC_REDIS_URL
the per-address count lives in Redis, so spreading guesses over two servers does not
double the allowance (20 login POSTs a minute per address, ``MC_LOGIN_LIMIT``)."""
from __future__ import annotations

import random
import shutil
import subprocess
from urllib.parse import urlencode

import pytest

from marking.db import Database
from scripts import bench_marking as bm

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli not installed")]
REDIS_URL = "redis://127.0.0.1:6379/0"
LIMIT = 20


def guess(port: int, address: str, n: int) -> int:
    s = bm.Session(port, address)
    try:
        token = s.get_csrf("/auth/login")
        body = urlencode({"username": f"nobody-{n}", "password": "a-wrong-guess", "csrf_token": token}).encode()
        status, _h, _b = s.request("POST", "/auth/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        return status
    finally:
        s.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_login_guesses_spread_over_two_servers_share_one_limit(db_url, servers, password_hash):
    if subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True, text=True,
                      timeout=5).stdout.strip() != "PONG":
        pytest.fail("Redis is not running at 127.0.0.1:6379")
    db = Database(db_url)
    try:
        bm.populate(db, markers=1, responses=1, password_hash=password_hash)
        a = servers(db_url, env={"MC_REDIS_URL": REDIS_URL})
        b = servers(db_url, env={"MC_REDIS_URL": REDIS_URL})
        # A loopback address of this run only: the count is keyed by address and lives a minute.
        address = f"127.{random.randint(64, 250)}.{random.randint(1, 250)}.{random.randint(1, 250)}"
        statuses = [guess((a if n % 2 else b).port, address, n) for n in range(LIMIT)]
        assert statuses == [401] * LIMIT   # unknown users: refused, not yet throttled
        # Each server has seen only half the guesses; the shared count is at the limit.
        assert guess(a.port, address, LIMIT) == 429
        assert guess(b.port, address, LIMIT + 1) == 429
    finally:
        db.dispose()
