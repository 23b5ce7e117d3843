"""The application's PostgreSQL role cannot rewrite the ledger (docs/ledger.md).

A role set up as docs/ledger.md says (SELECT/INSERT/UPDATE/DELETE on all tables,
UPDATE/DELETE/TRUNCATE revoked on ledger_event, UPDATE/TRUNCATE on ledger_entry, not
the owner) may append to the ledger through ``marking.ledger.append`` (inline or as a
deferred entry) and chain entries, but UPDATE, DELETE, TRUNCATE, DROP TRIGGER, DISABLE
TRIGGER, DROP TABLE and ``session_replication_role`` all fail with insufficient
privilege — on ledger_event and on the unchained entries; the chain still verifies.
"""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from marking import ledger

pytestmark = pytest.mark.timeout(60)

ATTACKS = [
    "UPDATE ledger_event SET data = '{}' WHERE seq = 1",
    "DELETE FROM ledger_event WHERE seq = 1",
    "TRUNCATE ledger_event",
    "DROP TRIGGER ledger_event_no_update_delete ON ledger_event",
    "DROP TRIGGER ledger_event_no_truncate ON ledger_event",
    "ALTER TABLE ledger_event DISABLE TRIGGER ALL",
    "DROP TABLE ledger_event CASCADE",
    "SET session_replication_role = replica",
    "ALTER TABLE ledger_event OWNER TO CURRENT_USER",
    # deferred chaining's entries (docs/ledger.md): not yet chained, so untouchable
    "UPDATE ledger_entry SET data = '{}'",
    "DELETE FROM ledger_entry",
    "TRUNCATE ledger_entry",
    "DROP TRIGGER ledger_entry_delete_when_chained ON ledger_entry",
    "ALTER TABLE ledger_entry DISABLE TRIGGER ALL",
]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_app_role_cannot_update_delete_or_unprotect_the_ledger(db_url, db):
    with db.write() as s:
        ledger.append(s, actor_id=None, action="test.first", entity="test", entity_id="1", data={"n": 1})
    with Session(bind=db.engine, info={ledger.DEFERRED_KEY: True}) as s:   # an entry waiting for the chainer
        ledger.append(s, actor_id=None, action="test.entry", entity="test", entity_id="e", data={"n": 0})
        s.commit()
    role = f"mc_app_{uuid.uuid4().hex[:8]}"
    engine = create_engine(db.engine.url, isolation_level="AUTOCOMMIT")
    dbname = db.engine.url.database
    try:
        with engine.connect() as conn:
            for sql in (f'CREATE ROLE "{role}" NOLOGIN',
                        f'GRANT CONNECT ON DATABASE "{dbname}" TO "{role}"',
                        f'GRANT USAGE ON SCHEMA public TO "{role}"',
                        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"',
                        f'REVOKE UPDATE, DELETE, TRUNCATE ON ledger_event FROM "{role}"',
                        f'REVOKE UPDATE, TRUNCATE ON ledger_entry FROM "{role}"',
                        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'):
                conn.execute(text(sql))
        refused = {}
        with engine.connect() as conn:
            conn.execute(text(f'SET ROLE "{role}"'))
            for sql in ATTACKS:
                with pytest.raises(DBAPIError) as info:
                    conn.execute(text(sql))
                refused[sql] = getattr(info.value.orig, "sqlstate", None)
            # ... but it can read and append, as the running centre must, inline or deferred,
            # and chain the deferred entries (which deletes them once they are chained)
            with Session(bind=conn) as s:
                ledger.append(s, actor_id=None, action="test.second", entity="test", entity_id="2", data={"n": 2})
                s.commit()
            with Session(bind=conn, info={ledger.DEFERRED_KEY: True}) as s:
                ledger.append(s, actor_id=None, action="test.third", entity="test", entity_id="3", data={"n": 3})
                s.commit()
            with Session(bind=conn) as s:
                assert ledger.chain_batch(s) == 2
                s.commit()
            conn.execute(text("RESET ROLE"))
        # 42501 insufficient_privilege (UPDATE/DELETE/TRUNCATE revoked; not the owner)
        assert all(code == "42501" for code in refused.values()), refused
        assert ledger.verify(db, None).ok
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        engine.dispose()
