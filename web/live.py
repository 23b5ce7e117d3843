"""Live events over Socket.IO (threading mode; architecture.md §1).

The marking services publish ``OutboxEvent`` rows in their own transactions
(``marking.events``). The web process drains the table by increasing id (every
``MC_OUTBOX_POLL_SECONDS``, 0.5 s) and emits each row as an ``outbox`` event to the
Socket.IO room named by its topic. Clients remember the last id they saw and, on
(re)connect, ``subscribe`` with it: the server joins them to the room, then replays
newer rows of that topic, so nothing is lost across a reconnect; clients drop ids they
have already seen (duplicates are harmless, which also makes several drainers safe).

With MC_REDIS_URL the Socket.IO server uses Redis as its message queue (several web
processes behind a sticky proxy); startup fails loudly if the ``redis`` package is
missing or Redis does not answer PING (pitfall 4: the manager would otherwise drop
events silently). Then one process drains for all: Redis delivers each emit to every
process, so a drainer per process would send every event N times and cost N² work.
The drainer holds a short Redis lease (``mc:outbox:<database>:drainer``, renewed every
poll) and keeps its position in ``mc:outbox:<database>:last_id``; when it stops, another process takes the
lease within ``DRAINER_LEASE_MS`` and continues from that position (an event or two may
be sent twice at a handover; clients drop ids they have seen).

Authorisation: the ``connect`` handler authenticates the login-session cookie
(handlers get no ``before_request``); ``subscribe`` admits a topic only to those
entitled to it. Payloads never carry candidate identity or marks (marking.events).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import threading
import uuid
from typing import Any

from flask import Flask, current_app, request
from flask_socketio import SocketIO, join_room
from sqlalchemy import bindparam, func, select

from marking import events
from marking.config import ConfigError
from marking.fastsql import FastStatement
from marking.models import OutboxEvent

from . import queries
from .auth import sessions

log = logging.getLogger("web.live")
REPLAY_LIMIT = 500
# Keys per database: two centres (or test databases) may share one Redis.
DRAINER_KEY = "mc:outbox:{db}:drainer"
POSITION_KEY = "mc:outbox:{db}:last_id"
DRAINER_LEASE_MS = 3000
# Take the lease if free, or extend it if it is ours (atomic).
_LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_NEWER = FastStatement(select(OutboxEvent.id, OutboxEvent.topic, OutboxEvent.name, OutboxEvent.payload)
                  .where(OutboxEvent.id > bindparam("after")).order_by(OutboxEvent.id).limit(1000))


class ConfigurationError(ConfigError):
    """MC_REDIS_URL is unusable; the CLI prints it as a configuration error (exit 2)."""


def check_redis(url: str) -> None:
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError("MC_REDIS_URL is set but the redis package is not installed: "
                                 "pip install 'marking-centre[redis]'") from exc
    import redis as redis_mod
    try:
        redis_mod.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure is fatal at startup
        raise ConfigurationError(f"MC_REDIS_URL={url!r}: Redis did not answer PING ({exc})") from exc


def may_subscribe(user, topic: str) -> bool:
    kind, _, ident = topic.partition(":")
    db = current_app.extensions["mc_db"]
    if kind in ("item", "leader", "subject") and not ident.isdigit():
        return False
    if kind == "item":
        return "admin" in user.roles or queries.has_item_duty(db, user.id, int(ident), "marker", "team_leader",
                                                              "reviewer", active=False)
    if kind == "leader":
        return "admin" in user.roles or queries.has_item_duty(db, user.id, int(ident), "team_leader")
    if kind == "subject":
        return bool(user.roles & {"admin", "team_leader", "authority_officer"})
    if kind == "batch":
        return bool(user.roles & {"technician", "admin", "key_officer"})
    if kind == "authority":
        return bool(user.roles & {"authority_officer", "admin"})
    return False


def _redis_client(url: str):
    import redis
    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)


def row_json(row) -> dict[str, Any]:
    """An outbox row (ORM object or result row) as the event clients receive."""
    try:
        payload = json.loads(row.payload)
    except ValueError:
        payload = {}
    return {"id": row.id, "topic": row.topic, "name": row.name, "payload": payload}


class Live:
    """One per app: the Socket.IO server and the outbox drainer."""

    def __init__(self, app: Flask):
        self.app = app
        settings = app.config["MC_SETTINGS"]
        queue = settings.redis_url
        if queue:
            check_redis(queue)
        self.socketio = SocketIO(app, async_mode="threading", message_queue=queue,
                                 manage_session=False, logger=False, engineio_logger=False)
        self.db = app.extensions["mc_db"]
        self.keep_hours = settings.outbox_keep_hours
        self.redis = _redis_client(queue) if queue else None
        self.me = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._redis_down = False
        scope = hashlib.sha256(str(self.db.url).encode()).hexdigest()[:16]
        self.drainer_key, self.position_key = DRAINER_KEY.format(db=scope), POSITION_KEY.format(db=scope)
        self.last_id: int | None = None
        self._thread_started = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._register()

    # ------------------------------------------------------------------ draining
    def is_drainer(self) -> bool:
        """Without a message queue every process drains; with one, the lease holder only."""
        if self.redis is None:
            return True
        try:
            held = bool(self.redis.eval(_LEASE_SCRIPT, 1, self.drainer_key, self.me, DRAINER_LEASE_MS))
        except Exception as exc:  # noqa: BLE001 - Redis down: live updates degrade, marking goes on
            if not self._redis_down:
                log.warning("outbox drainer paused: Redis unavailable (%s)", exc)
                self._redis_down = True
            return False
        if self._redis_down:
            log.warning("outbox drainer: Redis is back")
            self._redis_down = False
        if held and self.last_id is not None:
            position = self.redis.get(self.position_key)
            if position is not None and int(position) > self.last_id:
                self.last_id = int(position)   # continue where the previous holder stopped
        return held

    def drain_once(self) -> int:
        """Emit the outbox rows newer than the last one emitted; returns how many rows were drained.

        Identical events (same topic, name and payload) in one batch are emitted once, as the
        latest of them: every claim and mark of an item publishes the same hint, a client
        learns nothing from its repeats, and each emit costs a Redis publish (the drain was
        8 % of the draining server's CPU under load before). Emitted in id order, so a client's
        "last id seen" still only grows.
        """
        if self.last_id is None:
            with self.db.read() as s:
                self.last_id = s.execute(select(func.max(OutboxEvent.id))).scalar() or 0
            return 0
        if not self.is_drainer():
            return 0
        rows = self.db.read_rows(_NEWER, {"after": self.last_id})
        if not rows:
            return 0
        latest = {(row.topic, row.name, row.payload): row for row in rows}   # later rows win
        for row in sorted(latest.values(), key=lambda r: r.id):
            event = row_json(row)
            self.socketio.emit("outbox", event, to=event["topic"])
        self.last_id = rows[-1].id
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.set(self.position_key, self.last_id)
        return len(rows)

    def _drain_loop(self) -> None:
        from marking.dispatch import reap_expired_leases

        interval = self.app.config["MC_OUTBOX_POLL_SECONDS"]
        ticks = 0
        while not self._stop.is_set():
            try:
                self.drain_once()
                ticks += 1
                if ticks % max(1, int(60 / interval)) == 0:   # about once a minute
                    reap_expired_leases(self.db)
                    if self.is_drainer():   # one process prunes, as one drains
                        events.prune(self.db, keep=dt.timedelta(hours=self.keep_hours))
            except Exception:  # noqa: BLE001 - keep draining after a transient DB error
                log.exception("outbox drain failed; retrying")
            self.socketio.sleep(interval)

    def start_drainer(self) -> None:
        with self._lock:
            if self._thread_started or not self.app.config["MC_OUTBOX_DRAIN"]:
                return
            self._thread_started = True
        self.drain_once()   # position at the current end before serving
        self.socketio.start_background_task(self._drain_loop)

    def stop(self) -> None:
        self._stop.set()

    def drainer_running(self) -> bool:
        return self._thread_started and not self._stop.is_set()

    # ------------------------------------------------------------------ handlers
    def _register(self) -> None:
        sio = self.socketio
        app = self.app

        @sio.on("connect")
        def _connect(auth=None):
            from .auth import cookie_name
            user = sessions.load(self.db, request.cookies.get(cookie_name()),
                                 idle_minutes=app.config["MC_SESSION_IDLE_MINUTES"],
                                 mfa_skip=app.config["MC_MFA_SKIP"], touch=False)
            if user is None or user.mfa_pending:
                return False
            request.environ["mc.user"] = user
            join_room(f"user:{user.id}")
            return True

        @sio.on("subscribe")
        def _subscribe(data):
            from .auth import cookie_name
            user = sessions.load(self.db, request.cookies.get(cookie_name()),
                                 idle_minutes=app.config["MC_SESSION_IDLE_MINUTES"],
                                 mfa_skip=app.config["MC_MFA_SKIP"], touch=False)
            if user is None:
                return {"ok": False, "error": "session_ended"}
            data = data if isinstance(data, dict) else {}
            topics = [t for t in data.get("topics", []) if isinstance(t, str)][:20]
            since = data.get("since")
            allowed, refused = [], []
            for topic in topics:
                (allowed if may_subscribe(user, topic) else refused).append(topic)
            for topic in allowed:
                join_room(topic)
            replayed = 0
            if isinstance(since, int) and since >= 0 and allowed:
                with self.db.read() as s:
                    rows = s.execute(select(OutboxEvent).where(OutboxEvent.id > since,
                                                               OutboxEvent.topic.in_(allowed))
                                     .order_by(OutboxEvent.id).limit(REPLAY_LIMIT)).scalars().all()
                    events = [row_json(r) for r in rows]
                for event in events:
                    sio.emit("outbox", event, to=request.sid)
                replayed = len(events)
            with self.db.read() as s:
                head = s.execute(select(func.max(OutboxEvent.id))).scalar() or 0
            return {"ok": True, "topics": allowed, "refused": refused, "replayed": replayed, "head": head}


def init_app(app: Flask) -> None:
    live = Live(app)
    app.extensions["mc_live"] = live
    app.extensions["mc_socketio"] = live.socketio
