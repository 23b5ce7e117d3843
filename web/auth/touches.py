"""Sessions' last activity, written in batches (issue 8; ASVS 7.3 idle timeout).

The idle timeout needs each session's last activity. Writing it from the request that
saw it (at most every 30 s per session) was a write transaction of its own: with 3,000
markers that is 100 transactions a second, more than the marks themselves. A running
server instead notes the time here and writes every noted session in one transaction
every ``interval_s`` (5 s). Until then the request path reads the noted time from here,
so the session's own server never mistakes it for idle. Another server (a worker
without sticky routing) sees the database's value, up to 30 s + ``interval_s`` old,
which is far inside any idle timeout worth setting (minutes). Notes not yet written when
a process dies are lost: its sessions look that much older, never younger.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading

from sqlalchemy import bindparam, update

from marking.models import LoginSession
from marking.periodic import PeriodicThread

log = logging.getLogger(__name__)

# Never moves a session's last activity backwards, and never touches an ended session.
_SESSIONS = LoginSession.__table__
_WRITE = (update(_SESSIONS)
          .where(_SESSIONS.c.id == bindparam("sid"), _SESSIONS.c.revoked_at.is_(None),
                 _SESSIONS.c.last_seen_at < bindparam("at", type_=_SESSIONS.c.last_seen_at.type))
          .values(last_seen_at=bindparam("at", type_=_SESSIONS.c.last_seen_at.type)))


class SessionTouches(PeriodicThread):
    name = "mc-session-touches"

    def __init__(self, db, interval_s: float = 5.0) -> None:
        super().__init__()
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.db = db
        self.interval_s = interval_s
        self._noted: dict[str, dt.datetime] = {}
        self._lock = threading.Lock()
        self.failures = 0

    def note(self, sid: str, at: dt.datetime) -> None:
        with self._lock:
            if sid not in self._noted or self._noted[sid] < at:
                self._noted[sid] = at

    def noted(self, sid: str) -> dt.datetime | None:
        with self._lock:
            return self._noted.get(sid)

    def flush(self) -> int:
        """Write every noted time in one transaction; returns how many were noted. On a
        failure the notes stay (a later note of the same session wins) for the next run."""
        with self._lock:
            noted, self._noted = self._noted, {}
        if not noted:
            return 0
        try:
            with self.db.write() as session:
                session.connection().execute(_WRITE, [{"sid": sid, "at": at} for sid, at in noted.items()])
        except Exception:
            with self._lock:
                for sid, at in noted.items():
                    if sid not in self._noted or self._noted[sid] < at:
                        self._noted[sid] = at
            raise
        return len(noted)

    def tick(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - reported; the notes are kept for the next run
            self.failures += 1
            log.exception("writing sessions' last activity failed; retrying in %.0f s", self.interval_s)

    def stop(self, timeout: float = 10) -> None:
        super().stop(timeout)
        self.tick()   # what was noted since the last run
