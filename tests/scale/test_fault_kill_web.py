"""kill -9 of the web process under load; clients retry with the same request id.

Proves (SQLite and PostgreSQL): no acknowledged mark is lost, none is duplicated, every
(marker, request id) exists at most once, the ledger verifies. The server is restarted
on the same port; the markers' sessions (stored in the database) and CSRF tokens (signed
with the same secret) survive the restart, and unacknowledged submits are retried with
their original request id and token — replays answer the original mark.
"""
from __future__ import annotations

import time

import pytest

from marking.db import Database
from scripts import bench_marking as bm

from tests.scale.scale_helpers import MarkerLoop, check_marks, wait_for

pytestmark = pytest.mark.timeout(150)
MARKERS = 6


def test_kill9_web_process_under_load(db_url, servers, password_hash):
    db = Database(db_url)
    try:
        world = bm.populate(db, markers=MARKERS, responses=400, password_hash=password_hash)
        server = servers(db_url)
        sessions = bm.login_all(server.port, world.usernames, workers=3)
        loop = MarkerLoop(server.port, world.item_id, sessions, world.markers).start()
        assert wait_for(lambda: len(loop.acked) >= 20, 30), loop.errors
        server.kill9()                                  # SIGKILL: arbiter and worker, mid-request
        acked_at_kill = len(loop.acked)
        time.sleep(0.5)
        server.start()                                  # same port, same database
        assert wait_for(lambda: len(loop.acked) >= acked_at_kill + 20, 40), loop.errors
        loop.join()
        assert loop.errors, "the kill was not seen by any client"
        assert not loop.refused, loop.refused[:3]       # every retried submit was finally accepted or replayed
        facts = check_marks(db, loop)
        assert facts["marks"] == facts["acked"]         # nothing stored that no client holds an answer for
    finally:
        db.dispose()
