"""Connection handling: idle connections are checked, busy ones are not; reads never write."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import event, text

from marking import db as dbmod
from marking.models import Item, ResolutionPolicy
from marking.policy import policy_for_item
from tests.marking.factories import staffed_subject


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_dropped_while_idle_is_replaced_before_use(db_url, db, pg_server, monkeypatch):
    monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.2)
    with db.engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with pg_server["engine"].connect() as admin:   # the server drops it (restart, idle timeout)
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    time.sleep(0.3)
    with db.read() as s:   # no error reaches the caller: the pool replaced the connection
        assert s.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    assert db.read_rows(text("SELECT 1")) == [(1,)]


def test_a_busy_connection_is_not_pinged(db):
    """Under load a checkout costs no round trip (the ping is only for idle connections)."""
    statements: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    for _ in range(3):
        db.read_rows(text("SELECT 1"))
    assert statements == ["SELECT 1"] * 3


def test_reading_an_items_policy_never_writes(db):
    """A read transaction gets the default policy unsaved; the first write stores it."""
    ids = staffed_subject(db, markers=1)
    with db.read() as s:
        item = s.get(Item, ids["items"][0])
        row, params = policy_for_item(s, item)
        assert row.id is None and params["agreement"] == "le"
        assert s.query(ResolutionPolicy).count() == 0
    with db.write() as s:
        stored, same = policy_for_item(s, s.get(Item, ids["items"][0]))
        assert stored.id is not None and same == params
