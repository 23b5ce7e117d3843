"""Web fixtures (flaskr style): an app per test on the test database (SQLite and PostgreSQL),
a small exam world, and logged-in clients (helpers in webhelpers.py)."""
from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from marking import users
from webhelpers import World, build_world


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    """Same code path (argon2id), test-sized cost: the real cost is 64 MiB per hash."""
    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def app(settings, db):
    from web import create_app
    app = create_app(settings, db, config={"TESTING": True})
    yield app
    app.extensions["mc_live"].stop()
    import calibration
    calibration.uninstall()  # create_app installs the engine hooks process-wide; keep tests independent


@pytest.fixture
def world(db, settings) -> World:
    return build_world(db, settings)




@pytest.fixture
def world1(db, settings) -> World:
    """One response only: the first two markers necessarily mark the same response."""
    return build_world(db, settings, responses=1)
