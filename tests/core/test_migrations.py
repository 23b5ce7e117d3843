"""The migrations build exactly the schema the models describe, on both backends."""
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from marking import migrate
from marking.models import Base


def test_migrated_schema_matches_models(db):
    assert migrate.current_revision(db) == migrate.head_revision()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], diff


def test_ledger_head_starts_at_genesis(db):
    from marking import ledger
    with db.read() as s:
        assert ledger.head(s) == (0, ledger.GENESIS_HASH)
