"""Sessions' last activity written in batches by a running server (web.auth.touches)."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from marking.models import LoginSession, User
from web.auth.touches import SessionTouches
from webhelpers import login

WHOAMI = {"Accept": "application/json"}


@pytest.fixture
def touches(app, db):
    """The writer a server starts, with a long interval: the tests flush it themselves."""
    writer = SessionTouches(db, interval_s=3600).start()
    app.extensions["mc_session_touches"] = writer
    yield writer
    writer.stop()


def _last_seen(db) -> dt.datetime:
    with db.read() as s:
        return s.execute(select(LoginSession.last_seen_at).where(LoginSession.revoked_at.is_(None))).scalar_one()


def _set_last_seen(db, at: dt.datetime) -> None:
    with db.write() as s:
        s.execute(update(LoginSession).where(LoginSession.revoked_at.is_(None)).values(last_seen_at=at))


def test_a_request_notes_activity_and_the_writer_writes_it(app, world, db, touches):
    marker = login(app, "marker1")
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=40)
    _set_last_seen(db, before)
    assert marker.get("/auth/whoami", headers=WHOAMI).status_code == 200
    assert _last_seen(db) == before          # noted, not written by the request
    assert touches.flush() == 1
    assert _last_seen(db) > before + dt.timedelta(seconds=39)
    assert marker.get("/auth/whoami", headers=WHOAMI).status_code == 200
    assert touches.flush() == 0              # seen a moment ago: nothing new to note


def test_a_noted_activity_keeps_the_session_from_idling_out(app, world, db, touches):
    """The database's value may lag the server's note; the idle timeout reads both. Two
    sessions idle for as long in the database: the one with a note stays, the other ends."""
    noted, unnoted = login(app, "marker1"), login(app, "marker2")
    idle = app.config["MC_SESSION_IDLE_MINUTES"]
    now = dt.datetime.now(dt.timezone.utc)
    _set_last_seen(db, now - dt.timedelta(minutes=idle, seconds=1))
    with db.read() as s:
        sid = s.execute(select(LoginSession.id).join(User, User.id == LoginSession.user_id)
                        .where(User.username == "marker1", LoginSession.revoked_at.is_(None))).scalar_one()
    touches.note(sid, now - dt.timedelta(seconds=5))
    assert noted.get("/auth/whoami", headers=WHOAMI).status_code == 200
    assert unnoted.get("/auth/whoami", headers=WHOAMI).status_code == 401


def test_the_writer_never_moves_activity_back_nor_touches_an_ended_session(app, world, db, touches):
    login(app, "marker1")
    sid = next(iter(_live_session_ids(db)))
    now = dt.datetime.now(dt.timezone.utc)
    _set_last_seen(db, now)
    touches.note(sid, now - dt.timedelta(minutes=5))
    touches.flush()
    assert _last_seen(db) == now
    with db.write() as s:
        s.execute(update(LoginSession).values(revoked_at=now, revoked_reason="logout"))
    touches.note(sid, now + dt.timedelta(minutes=1))
    touches.flush()
    with db.read() as s:
        assert s.execute(select(LoginSession.last_seen_at)).scalar_one() == now


def test_a_failed_write_keeps_the_notes_for_the_next_run(app, world, db, touches, monkeypatch, caplog):
    login(app, "marker1")
    sid = next(iter(_live_session_ids(db)))
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
    touches.note(sid, later)

    def broken():
        raise ConnectionError("database unreachable")
    monkeypatch.setattr(touches.db, "write", broken)
    touches.tick()
    assert touches.failures == 1 and touches.noted(sid) == later
    assert "last activity failed" in caplog.text
    monkeypatch.undo()
    assert touches.flush() == 1 and _last_seen(db) == later


def test_a_writer_needs_a_positive_interval(db):
    with pytest.raises(ValueError):
        SessionTouches(db, interval_s=0)


def _live_session_ids(db) -> set[str]:
    with db.read() as s:
        return set(s.execute(select(LoginSession.id).where(LoginSession.revoked_at.is_(None))).scalars())
