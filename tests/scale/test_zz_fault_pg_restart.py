"""PostgreSQL restarted mid-load: the service recovers without corruption.

Runs only against PostgreSQL and last in tests/scale (module name ``test_zz_…``):
restarting the cluster drops every connection, including other tests'. Clients see
errors for a moment (5xx or dropped connections), retry submits with the same request
id, then succeed; afterwards every acknowledged mark exists exactly once, there are no
duplicate marks and the ledger verifies. The cluster is checked to be up in ``finally``.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from marking.db import Database
from scripts import bench_marking as bm

from tests.scale.scale_helpers import MarkerLoop, check_marks, wait_for

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"),
                                 reason="needs a local pg_ctlcluster-managed PostgreSQL")]


def _cluster() -> tuple[str, str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return version, "main"


def pg_ready() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True,
                          timeout=10).returncode == 0


def pg_ctl(action: str) -> subprocess.CompletedProcess:
    version, name = _cluster()
    return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
                          capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_restart_mid_load(db_url, pg_server, servers, password_hash):
    db = Database(db_url)
    try:
        world = bm.populate(db, markers=6, responses=400, password_hash=password_hash)
        server = servers(db_url)
        sessions = bm.login_all(server.port, world.usernames, workers=3)
        loop = MarkerLoop(server.port, world.item_id, sessions, world.markers).start()
        assert wait_for(lambda: len(loop.acked) >= 20, 30), loop.errors
        r = pg_ctl("restart")
        assert r.returncode == 0, r.stderr
        assert wait_for(pg_ready, 60)
        acked_after_restart = len(loop.acked)
        assert wait_for(lambda: len(loop.acked) >= acked_after_restart + 20, 60), loop.errors
        loop.join()
        assert server.proc.poll() is None, "the web process died with the database"
        assert not loop.refused, loop.refused[:3]
        check_marks(db, loop)
        print(f"errors seen by clients during the restart: {dict(loop.errors)}")
    finally:
        db.dispose()
        if not pg_ready():
            pg_ctl("start")
            wait_for(pg_ready, 60)
        pg_server["engine"].dispose()   # pooled admin connections died with the restart
