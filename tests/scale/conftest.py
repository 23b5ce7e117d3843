"""Fixtures for the fault and security tests: a real server process and logged-in markers.

The server is ``marking-centre serve`` (gunicorn -w 1, gthread) in its own process group,
started through ``scripts/bench_marking.py``'s :class:`ServerProcess`; every fixture that
starts a process stops it (SIGTERM, then SIGKILL of the group) in its teardown.
Markers log in over HTTP with a real argon2id hash (computed once per run; the
server's cost is untouched), each from its own loopback source address.
"""
from __future__ import annotations

import pytest
from marking import users
from scripts import bench_marking as bm


@pytest.fixture(scope="session")
def password_hash() -> str:
    return users.hash_password(bm.PASSWORD)


@pytest.fixture
def servers(tmp_path):
    """Start servers with ``servers(url, **kw)``; all are stopped at teardown."""
    started: list[bm.ServerProcess] = []

    def start(url: str, **kw) -> bm.ServerProcess:
        kw.setdefault("threads", 8)
        srv = bm.ServerProcess(url, tmp_path / "data", **kw)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()


