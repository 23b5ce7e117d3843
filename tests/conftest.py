"""Shared fixtures, in the style of flaskr's tests/conftest.py.

Every database test runs twice: on SQLite and on PostgreSQL (``MC_TEST_PG_URL``,
default ``postgresql://postgres@127.0.0.1:5432/test``). Each test gets a fresh,
fully migrated database cheaply: the schema is migrated once per run into a
template (a SQLite file that is copied; a PostgreSQL template database that is
cloned with CREATE DATABASE … TEMPLATE).

When ``CI=true`` an unreachable PostgreSQL fails the PostgreSQL tests; elsewhere
they are skipped with the reason shown in the summary.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from marking import migrate
from marking.config import load_settings
from marking.db import Database

PG_URL = os.environ.get("MC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"
BACKENDS = ("sqlite", "postgresql")


def _pg_admin_engine():
    url = make_url(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    return create_engine(url, isolation_level="AUTOCOMMIT"), url


@pytest.fixture(scope="session")
def pg_server():
    """Connection facts for PostgreSQL, or a skip/fail saying why it is unusable."""
    engine, url = _pg_admin_engine()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"
        engine.dispose()
        reason = f"PostgreSQL at {PG_URL} unreachable: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        if IN_CI:
            pytest.fail(reason + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)
    template = f"mc_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{template}"'))
    template_db = Database(url.set(database=template).render_as_string(hide_password=False))
    migrate.upgrade(template_db)
    template_db.dispose()
    yield {"engine": engine, "url": url, "template": template}
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    template_db = Database(f"sqlite:///{path}")
    migrate.upgrade(template_db)
    template_db.dispose()  # closing the last connection folds the WAL into the file
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path) -> str:
    """A fresh migrated database URL on each backend."""
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "test.sqlite3"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    server = request.getfixturevalue("pg_server")
    name = f"mc_t_{uuid.uuid4().hex[:12]}"
    with server["engine"].connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{server["template"]}"'))
    yield server["url"].set(database=name).render_as_string(hide_password=False)
    with server["engine"].connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def db(db_url) -> Database:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path, db_url):
    """Settings for a test data directory bound to the test database."""
    env = {"MC_ENV": "test", "MC_DATABASE_URL": db_url}
    return load_settings(tmp_path / "data", env=env)


@pytest.fixture(autouse=True)
def _calibration_hooks_reset():
    """The composition roots (CLI, app factory) install calibration's engine hooks
    process-wide; uninstall after every test so no test depends on test order."""
    yield
    import calibration
    calibration.uninstall()
