"""The application's PostgreSQL role cannot rewrite the ledger (docs/ledger.md).

A role set up as docs/ledger.md says (SELECT/INSERT/UPDATE/DELETE on all tables,
UPDATE/DELETE/TRUNCATE revoked on ledger_event, not the owner) may append to the
ledger through ``marking.ledger.append`` but UPDATE, DELETE, TRUNCATE, DROP TRIGGER,
DISABLE TRIGGER, DROP TABLE and ``session_replication_role`` all fail with
insufficient privilege; the chain still verifies afterwards.
"""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from marking import ledger
from marking.db import Database

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
]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_app_role_cannot_update_delete_or_unprotect_the_ledger(db_url, db):
    with db.write() as s:
        ledger.append(s, actor_id=None, action="test.first", entity="test", entity_id="1", data={"n": 1})
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
                        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'):
                conn.execute(text(sql))
        refused = {}
        with engine.connect() as conn:
            conn.execute(text(f'SET ROLE "{role}"'))
            for sql in ATTACKS:
                with pytest.raises(DBAPIError) as info:
                    conn.execute(text(sql))
                refused[sql] = getattr(info.value.orig, "sqlstate", None)
            # ... but it can read and append, as the running centre must
            with Session(bind=conn) as s:
                ledger.append(s, actor_id=None, action="test.second", entity="test", entity_id="2", data={"n": 2})
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
