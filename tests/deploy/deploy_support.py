"""Helpers shared by the deployment tests (a module of its own: every test directory has a
``conftest``, so ``from conftest import …`` would depend on which one was imported last)."""
from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_URL = os.environ.get("MC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def missing(reason: str):
    """Skip (or, under CI=true, fail) because a prerequisite is missing."""
    if IN_CI:
        pytest.fail(reason + " (CI=true: this test must run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    return free_port()   # nothing listens there once the probe socket is closed


def make_app(settings, db, **config):
    from web import create_app
    return create_app(settings, db, config={"TESTING": True, "MC_OUTBOX_DRAIN": False, **config})
