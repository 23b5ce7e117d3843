#!/usr/bin/env python
"""Marking load benchmark: simulated markers over HTTP against the real server.

    .venv/bin/python scripts/bench_marking.py                                  # SQLite
    .venv/bin/python scripts/bench_marking.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python scripts/bench_marking.py --quick                          # smoke run

What it does (one run, one backend):

1. A fresh database (SQLite file in a temp dir, or a new database ``mc_bench_<pid>`` on the
   PostgreSQL server of ``--database-url``, dropped at the end), migrated; one subject, one
   double-marked item; M markers (users, role, duty) written directly to the database with
   ONE real argon2id hash of the shared password (the server's argon2 cost is untouched);
   responses and their first/second tasks bulk-inserted with SQL.
2. ``--servers`` × ``marking-centre serve`` (gunicorn -w 1 --threads N each) as subprocesses
   on 127.0.0.1; with more than one, Redis is their Socket.IO message queue (as in
   production) and each marker is pinned to one server (what nginx's ip_hash does). Every
   marker logs in once over HTTP (its own session cookie, CSRF token) from its own loopback
   address (127.2.x.y): the per-address login throttle (20/min) stays as shipped.
3. Saturation: a bounded pool of client threads (stdlib http.client, keep-alive) drives
   the M markers round-robin as fast as the servers answer, for ``--duration`` seconds;
   protocol ``workbench`` (default) is what the marker workbench sends — every submit
   carries ``next: true`` and returns the next task, one request per mark. Reported:
   marks/s, request latency percentiles, and CPU milliseconds per mark spent by the
   servers, PostgreSQL and the client (from /proc: independent of other load).
4. Latency at a stated load (``--latency-at``, default 50 % and 80 % of the saturation
   rate): open-loop Poisson arrivals, each from an idle marker (chosen at random:
   ``--idle-order``); latency from a mark's
   scheduled arrival to its answer (no coordinated omission). Also the server's own time
   per answer (its ``Server-Timing`` header: p50, p99) and, for the slowest 1 %, the median
   share of their latency spent inside the server's request handling. The same at the
   pace markers work (``--marker-pace``, default one mark per marker every 18 s: 500
   markers offer ~28 marks/s), the load the centre sees when all of them are marking.
5. Raw ceiling in the same run: the same calls (``marking.workbench.submit_and_claim_next``,
   or claim_next/submit_mark with ``--protocol separate``) straight into the
   service layer (``marking.dispatch``/``marking.submission``, calibration hooks installed
   as the server installs them) from ``--servers`` processes × N threads (no HTTP, no
   Flask); ratio web/raw.
6. Dispatch scaling: claim p50 (service layer, one thread) on an item with 10,000 vs
   1,000,000 responses (bulk INSERT … SELECT generate_series / recursive CTE), ratio;
   both filled first, then timed in alternating rounds (host drift stays out of the ratio).
   On the 10,000 item also the service cost of a mark: the workbench call from one
   thread, SQL statements per mark and Python CPU per mark.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import bindparam, create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from marking import migrate, users  # noqa: E402
from marking.db import Database  # noqa: E402
from marking.models import ExamSession, Item, ItemDuty, Subject, User, UserRole  # noqa: E402
from marking.models.base import UTCDateTime  # noqa: E402

PASSWORD = "bench horse battery staple"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


# --------------------------------------------------------------------------- databases

def fresh_database(database_url: str | None, workdir: Path) -> tuple[str, callable]:
    """A new empty database URL and a function that drops it."""
    if not database_url or database_url.startswith("sqlite"):
        path = workdir / "bench.sqlite3"
        return f"sqlite:///{path}", lambda: None
    url = make_url(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"mc_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


@dataclass
class World:
    item_id: int
    subject_id: int
    markers: list[int] = field(default_factory=list)
    usernames: list[str] = field(default_factory=list)


def populate(db: Database, *, markers: int, responses: int, code: str = "B01",
             password_hash: str | None = None) -> World:
    """One subject, one double-marked item (0–10, step 0.5, T=2), markers with duties, responses."""
    password_hash = password_hash or users.hash_password(PASSWORD)
    with db.write() as s:
        exam = s.query(ExamSession).filter_by(code="BENCH").one_or_none()
        if exam is None:
            exam = ExamSession(code="BENCH", name="bench", kind="self_taught", year=2026, sitting=2)
            s.add(exam)
            s.flush()
        subject = Subject(session_id=exam.id, code=code, name=f"Bench {code}")
        s.add(subject)
        s.flush()
        item = Item(subject_id=subject.id, code="Q1", ordinal=1, kind="subjective", title="Bench essay",
                    max_cp=1000, step_cp=50, threshold_cp=200, double_marked=True, daily_cap=100000)
        s.add(item)
        s.flush()
        world = World(item.id, subject.id)
        for n in range(markers):
            name = f"bm{n + 1}-{code.lower()}"
            u = User(username=name, display_name=name, password_hash=password_hash, qualification_level=2)
            u.roles = [UserRole(role="marker")]
            s.add(u)
            s.flush()
            s.add(ItemDuty(item_id=item.id, user_id=u.id, duty="marker"))
            world.markers.append(u.id)
            world.usernames.append(name)
    bulk_responses(db, world, responses, prefix=code)
    return world


def bulk_responses(db: Database, world: World, n: int, *, prefix: str) -> None:
    """n scripts, one response each on the item, first+second open tasks — in three SQL statements."""
    if n <= 0:
        return
    pg = db.dialect == "postgresql"
    series = ("SELECT g AS x FROM generate_series(1, :n) AS g" if pg else
              "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < :n) SELECT x FROM g")
    ts = bindparam("ts", type_=UTCDateTime())
    now = dt.datetime.now(dt.timezone.utc)
    false = "false" if pg else "0"
    with db.engine.begin() as conn:
        conn.execute(text(
            f"INSERT INTO script (subject_id, anon_code, status, absent, created_at) "
            f"SELECT :sid, :pfx || '-' || CAST(x AS TEXT), 'marking', {false}, :ts FROM ({series}) AS s"
        ).bindparams(ts), {"sid": world.subject_id, "pfx": prefix, "n": n, "ts": now})
        conn.execute(text(
            "INSERT INTO response (script_id, item_id, preflags, status, created_at) "
            "SELECT id, :iid, '[]', 'pending', :ts FROM script WHERE subject_id = :sid ORDER BY id"
        ).bindparams(ts), {"sid": world.subject_id, "iid": world.item_id, "ts": now})
        conn.execute(text(
            "INSERT INTO mark_task (response_id, item_id, slot, status, created_at) "
            "SELECT r.id, :iid, sl.slot, 'open', :ts FROM response r "
            "CROSS JOIN (SELECT 'first' AS slot UNION ALL SELECT 'second') AS sl "
            "WHERE r.item_id = :iid ORDER BY r.id, sl.slot"
        ).bindparams(ts), {"iid": world.item_id, "ts": now})
    if pg:   # fresh statistics, as autovacuum would give; the product never ANALYZEs SQLite
        with db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()


# --------------------------------------------------------------------------- server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``marking-centre serve`` in a subprocess (own process group), stopped on exit."""

    def __init__(self, database_url: str, data_dir: Path, *, threads: int = 32, port: int | None = None,
                 env: dict | None = None, log: Path | None = None):
        self.database_url, self.data_dir, self.threads = database_url, Path(data_dir), threads
        self.port = port or free_port()
        self.extra_env = env or {}
        self.log = log or (self.data_dir / f"server-{self.port}.log")
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60, migrate_db: bool = False) -> "ServerProcess":
        # Logs as a deployment writes them (docs/deploy.md): one JSON request line per
        # answer, and no gunicorn access log beside it.
        env = {**os.environ, "MC_ENV": "test", "MC_LOG_FORMAT": "json", "MC_DATABASE_URL": self.database_url,
               "MC_SECRET_KEY": "bench-secret-key-0123456789abcdef", "PYTHONUNBUFFERED": "1",
               **self.extra_env}
        env.pop("MC_REDIS_URL", None) if "MC_REDIS_URL" not in self.extra_env else None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [PYTHON, "-m", "web.cli", "--data-dir", str(self.data_dir), "serve", "--host", "127.0.0.1",
                "--port", str(self.port), "--threads", str(self.threads)]
        if not migrate_db:
            args.append("--no-migrate")
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, cwd=str(ROOT), env=env, stdout=self._logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; log {self.log}:\n"
                                   + self.log.read_text(errors="replace")[-3000:])
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not answer /healthz within {timeout}s; log {self.log}")

    def kill9(self) -> None:
        """SIGKILL the whole process group (gunicorn arbiter and its worker)."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()
        if getattr(self, "_logf", None):
            self._logf.close()
            self._logf = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


# --------------------------------------------------------------------------- HTTP client

class HttpError(Exception):
    pass


class Session:
    """One logged-in marker: its cookies and CSRF token (no connection of its own)."""

    def __init__(self, port: int, source_ip: str = "127.0.0.1"):
        self.port, self.source_ip = port, source_ip
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None
        self._conn: http.client.HTTPConnection | None = None
        self.server_ms: float | None = None   # the last answer's Server-Timing (the server's own time)

    def _connection(self, conn):
        if conn is not None:
            return conn
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                                    source_address=(self.source_ip, 0))
        return self._conn

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                conn: http.client.HTTPConnection | None = None) -> tuple[int, dict, bytes]:
        c = self._connection(conn)
        hdrs = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        hdrs.update(headers or {})
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            self.server_ms = server_timing(r.getheader("Server-Timing"))
        except (OSError, http.client.HTTPException):
            c.close()   # reconnects on the next request
            raise
        for value in r.headers.get_all("Set-Cookie") or []:
            pair = value.split(";", 1)[0]
            if "=" in pair:
                k, v = pair.split("=", 1)
                if v in ("", '""') or "Max-Age=0" in value or "expires=Thu, 01 Jan 1970" in value:
                    self.cookies.pop(k.strip(), None)
                else:
                    self.cookies[k.strip()] = v
        if r.getheader("Connection", "").lower() == "close":
            c.close()
        return r.status, dict(r.headers), data

    def get_csrf(self, path: str = "/auth/login", conn=None) -> str:
        status, _h, data = self.request("GET", path, conn=conn)
        m = re.search(rb'name="csrf-token" content="([^"]+)"', data)
        if not m:
            raise HttpError(f"no csrf token on {path} ({status})")
        self.csrf = m.group(1).decode()
        return self.csrf

    def login(self, username: str, password: str = PASSWORD) -> None:
        token = self.get_csrf()
        from urllib.parse import urlencode
        body = urlencode({"username": username, "password": password, "csrf_token": token}).encode()
        status, headers, data = self.request("POST", "/auth/login", body,
                                             {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 302 or "mc_session" not in self.cookies:
            raise HttpError(f"login {username}: {status} {data[:200]!r}")
        self.get_csrf()   # a fresh CSRF secret comes with the new session

    def post_json(self, path: str, payload: dict, conn=None, csrf: bool = True) -> tuple[int, dict | None]:
        headers = {"Content-Type": "application/json"}
        if csrf and self.csrf:
            headers["X-CSRFToken"] = self.csrf
        status, _h, data = self.request("POST", path, json.dumps(payload).encode(), headers, conn=conn)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, None

    def get_json(self, path: str, conn=None) -> tuple[int, dict | None]:
        status, _h, data = self.request("GET", path, conn=conn)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, None


def server_timing(header: str | None) -> float | None:
    """``app;dur=12.3`` → 12.3 (web.logs sends the server's own handling time)."""
    m = re.search(r"\bapp;dur=([0-9.]+)", header or "")
    return float(m.group(1)) if m else None


def source_ip(n: int) -> str:
    return f"127.2.{(n // 250) % 250}.{n % 250 + 1}"


def login_all_sticky(ports: list[int], usernames: list[str], *, workers: int = 8) -> list[Session]:
    """Marker ``i`` logs in on ``ports[i % len(ports)]`` and stays there (sticky sessions)."""
    sessions: list[Session] = []
    for n, port in enumerate(ports):
        mine = list(range(n, len(usernames), len(ports)))
        for i, s in zip(mine, login_all(port, [usernames[i] for i in mine], workers=workers, addresses=mine)):
            sessions.append((i, s))
    return [s for _i, s in sorted(sessions, key=lambda pair: pair[0])]


def login_all(port: int, usernames: list[str], *, workers: int = 8,
              addresses: list[int] | None = None) -> list[Session]:
    """Log every marker in (each from its own loopback address: ``source_ip(addresses[i])``)."""
    addresses = addresses or list(range(len(usernames)))
    sessions: list[Session | None] = [None] * len(usernames)
    errors: list[str] = []
    it = iter(range(len(usernames)))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                return
            s = Session(port, source_ip(addresses[i]))
            try:
                s.login(usernames[i])
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{usernames[i]}: {exc}")
            finally:
                s.close()
            sessions[i] = s

    ts = [threading.Thread(target=work) for _ in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise HttpError(f"{len(errors)} logins failed, first: {errors[0]}")
    return sessions  # type: ignore[return-value]


# --------------------------------------------------------------------------- measurements

def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (Linux /proc), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{current}/task/{current}/children").read_text().split():
                todo.append(int(child))
    return out


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU seconds spent by the web servers, PostgreSQL and this client over a window.

    Divided by the marks made in the window this gives CPU milliseconds per mark per
    component — a figure that does not depend on what else the shared machine runs.
    """

    def __init__(self, server_pids: list[int]):
        self.server_pids = server_pids

    def sample(self) -> dict[str, float]:
        servers = sum(_proc_cpu_seconds(p) for root in self.server_pids for p in _descendants(root))
        postgres = sum(_proc_cpu_seconds(p) for p in _postgres_pids())
        times = os.times()
        return {"web": servers, "postgres": postgres, "client": times.user + times.system}

    @staticmethod
    def per_mark(before: dict[str, float], after: dict[str, float], marks: int) -> dict[str, float]:
        if not marks:
            return {}
        out = {k: round((after[k] - before[k]) / marks * 1000, 2) for k in before}
        out["total"] = round(sum(out.values()), 2)
        return out


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))
    return v[k]


@dataclass
class LoadResult:
    marks: int
    seconds: float
    claim_ms: list[float]
    submit_ms: list[float]
    errors: dict[str, int]
    cpu_ms_per_mark: dict[str, float] = field(default_factory=dict)
    server_ms: list[float | None] = field(default_factory=list)   # per submit, beside submit_ms (latency phases)

    @property
    def rate(self) -> float:
        return self.marks / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {"marks": self.marks, "seconds": round(self.seconds, 2), "marks_per_s": round(self.rate, 1),
                **{f"claim_p{p}_ms": round(pct(self.claim_ms, p), 1) for p in (50, 95, 99)},
                **{f"submit_p{p}_ms": round(pct(self.submit_ms, p), 1) for p in (50, 95, 99)},
                "errors": dict(self.errors), **({"cpu_ms_per_mark": self.cpu_ms_per_mark} if self.cpu_ms_per_mark else {}),
                **self._tail()}

    def _tail(self) -> dict:
        """Where the slowest 1 % of requests spent their time: inside the server's request
        handling (Server-Timing) or before it (client, network, gunicorn's queue)."""
        pairs = [(total, server) for total, server in zip(self.submit_ms, self.server_ms) if server is not None]
        if not pairs:
            return {}
        cut = pct([total for total, _ in pairs], 99)
        tail = [server / total for total, server in pairs if total >= cut and total > 0]
        return {**{f"server_p{p}_ms": round(pct([server for _, server in pairs], p), 1) for p in (50, 99)},
                "tail_share_in_server": round(statistics.median(tail), 2)}


class ChainLagSampler:
    """Deferred ledger chaining: how far the chain trails the commits during a phase —
    entries waiting and the age of the oldest, sampled every 0.25 s from the database."""

    def __init__(self, db: Database, every: float = 0.25):
        self.db, self.every = db, every
        self.samples: list[tuple[int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = text("SELECT count(*), min(at) FROM ledger_entry")
        while not self._stop.wait(self.every):
            count, oldest = self.db.read_rows(query)[0]
            age = 0.0
            if oldest:
                born = dt.datetime.strptime(oldest, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
                age = (dt.datetime.now(dt.timezone.utc) - born).total_seconds()
            self.samples.append((count, age))

    def __enter__(self) -> "ChainLagSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict:
        counts, ages = [c for c, _ in self.samples], [a for _, a in self.samples]
        return {"samples": len(self.samples), "entries_p50": statistics.median(counts) if counts else None,
                "entries_max": max(counts, default=None), "oldest_age_s_p50": round(statistics.median(ages), 3)
                if ages else None, "oldest_age_s_max": round(max(ages), 3) if ages else None}


def web_load(ports: list[int], item_id: int, sessions: list[Session], *, clients: int, duration: float,
             warmup: float = 2.0, protocol: str = "workbench", meter: CpuMeter | None = None) -> LoadResult:
    """``clients`` threads, each with one keep-alive connection, cycle through their markers.

    Marker ``i`` always talks to ``ports[i % len(ports)]`` (sticky, as nginx's ip_hash
    pins a workstation to one server); each client thread serves markers of one server.
    ``workbench``: what the marker workbench does — one claim, then every submit carries
    ``next: true`` and returns the next task (one request per mark). ``separate``: a claim
    request and a submit request per mark.
    """
    stop = threading.Event()
    t_measure = [0.0]
    claim_ms: list[float] = []
    submit_ms: list[float] = []
    marks = [0]
    errors: dict[str, int] = {}
    lock = threading.Lock()
    by_port = {port: [s for i, s in enumerate(sessions) if ports[i % len(ports)] == port] for port in ports}
    groups = []
    for n in range(clients):   # client threads spread over the servers, markers over the threads
        port = ports[n % len(ports)]
        k, of = n // len(ports), len([m for m in range(clients) if ports[m % len(ports)] == port])
        groups.append((port, by_port[port][k::of]))
    held: dict[int, str] = {}   # marker session id -> token of the task it holds

    def err(kind):
        with lock:
            errors[kind] = errors.get(kind, 0) + 1

    def claim(s: Session, conn) -> str | None:
        t0 = time.perf_counter()
        status, data = s.post_json(f"/api/v1/items/{item_id}/claim", {}, conn=conn)
        elapsed = (time.perf_counter() - t0) * 1000
        if status != 200 or not data or not data.get("task"):
            err(f"claim {status}" if status != 200 else "claim empty")
            if data and data.get("empty"):
                time.sleep(0.05)
            return None
        if t0 >= t_measure[0] and not stop.is_set():
            with lock:
                claim_ms.append(elapsed)
        return data["task"]["token"]

    def work(port: int, group: list[Session]):
        conn = None
        for s in itertools.cycle(group):
            if stop.is_set():
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                token = held.pop(id(s), None) or claim(s, conn)
                if token is None:
                    continue
                payload = {"token": token, "score": "5", "request_id": uuid.uuid4().hex}
                if protocol == "workbench":
                    payload.update(next=True, item_id=item_id)
                t1 = time.perf_counter()
                status2, data2 = s.post_json("/api/v1/tasks/submit", payload, conn=conn)
                t2 = time.perf_counter()
            except (OSError, http.client.HTTPException) as exc:
                err(type(exc).__name__)
                conn.close()
                conn = None
                continue
            if status2 != 200:
                err(f"submit {status2}")
                continue
            nxt = (data2 or {}).get("next")
            if nxt and nxt.get("token"):
                held[id(s)] = nxt["token"]
            if t1 >= t_measure[0] and not stop.is_set():
                with lock:
                    submit_ms.append((t2 - t1) * 1000)
                    marks[0] += 1
        if conn is not None:
            conn.close()

    t_measure[0] = time.perf_counter() + warmup
    threads = [threading.Thread(target=work, args=g, daemon=True) for g in groups if g[1]]
    for t in threads:
        t.start()
    time.sleep(warmup)
    cpu_before, marks_before = meter.sample() if meter else None, marks[0]
    time.sleep(duration)
    stop.set()
    t_end = time.perf_counter()
    cpu_after, marks_window = meter.sample() if meter else None, marks[0] - marks_before
    for t in threads:
        t.join(60)
    result = LoadResult(marks[0], t_end - t_measure[0], claim_ms, submit_ms, errors)
    if meter:
        result.cpu_ms_per_mark = CpuMeter.per_mark(cpu_before, cpu_after, marks_window)
    return result


def raw_load(db: Database, item_id: int, marker_ids: list[int], *, threads: int, duration: float,
             warmup: float = 1.0, start_at: float | None = None, protocol: str = "workbench") -> LoadResult:
    """The same claim → submit straight through the service layer, ``threads`` threads, no web.

    The calibration hooks are installed as the server's composition root installs them
    (seed and self-check scheduling runs on every claim there too).
    """
    import calibration
    from marking import dispatch, submission, workbench

    calibration.install()
    stop = threading.Event()
    t_measure = [0.0]
    claim_ms: list[float] = []
    submit_ms: list[float] = []
    marks = [0]
    errors: dict[str, int] = {}
    lock = threading.Lock()
    groups = [marker_ids[i::threads] for i in range(threads)]

    held: dict[int, str] = {}

    def work(group):
        for uid in itertools.cycle(group):
            if stop.is_set():
                break
            try:
                t0 = time.perf_counter()
                token = held.pop(uid, None)
                if token is None:
                    view = dispatch.claim_next(db, uid, item_id)
                    if view is None:
                        with lock:
                            errors["claim empty"] = errors.get("claim empty", 0) + 1
                        continue
                    token = view.token
                t1 = time.perf_counter()
                if protocol == "workbench":   # what the web's submit-with-next calls
                    step = workbench.submit_and_claim_next(db, uid, token, "5", request_id=uuid.uuid4().hex,
                                                           item_id=item_id)
                    if step.next is not None:
                        held[uid] = step.next.token
                else:
                    submission.submit_mark(db, uid, token, "5", request_id=uuid.uuid4().hex)
                t2 = time.perf_counter()
            except Exception as exc:  # noqa: BLE001
                with lock:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if t0 >= t_measure[0] and not stop.is_set():
                with lock:
                    if t1 - t0 > 1e-4:
                        claim_ms.append((t1 - t0) * 1000)
                    submit_ms.append((t2 - t1) * 1000)
                    marks[0] += 1

    if start_at is not None:   # several processes start their clocks together
        time.sleep(max(0.0, start_at - time.time()))
    t_measure[0] = time.perf_counter() + warmup
    ts = [threading.Thread(target=work, args=(g,), daemon=True) for g in groups if g]
    for t in ts:
        t.start()
    time.sleep(warmup + duration)
    stop.set()
    t_end = time.perf_counter()
    for t in ts:
        t.join(60)
    return LoadResult(marks[0], t_end - t_measure[0], claim_ms, submit_ms, errors)


def web_latency_at(ports: list[int], item_id: int, sessions: list[Session], *, rate: float, duration: float,
                   workers: int = 64, warmup: float = 2.0, seed: int = 1, idle_order: str = "random") -> LoadResult:
    """Open loop: marks arrive at ``rate`` per second (Poisson), each from an idle marker.

    Latency runs from a mark's *scheduled* arrival to its answer, so a slow server is
    charged for the queue it causes (no coordinated omission). Every marker first
    claims a task; then each arrival is one workbench request (submit with next).

    Which idle marker: ``random`` (default) — markers' reading times vary, so the order
    in which they come back owes nothing to the order they were dealt in; ``fifo`` —
    the one idle longest, as if every read took the same time: then the two markers
    dealt the two reads of one response one after the other also submit one after the
    other, and the second waits on the first's response lock far more often than real
    markers would.
    """
    import queue as queue_mod
    import random

    if idle_order not in ("random", "fifo"):
        raise ValueError(f"idle_order must be random or fifo, not {idle_order!r}")
    jobs: queue_mod.Queue = queue_mod.Queue()
    held: dict[int, str] = {}
    idle = list(range(len(sessions)))
    pick = random.Random(seed + 1)
    latencies: list[float] = []
    server_ms: list[float | None] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    marks = [0]
    t_measure = [float("inf")]

    def err(kind):
        with lock:
            errors[kind] = errors.get(kind, 0) + 1

    def worker():
        conns: dict[int, http.client.HTTPConnection] = {}
        while True:
            job = jobs.get()
            if job is None:
                break
            due, i = job
            s, port = sessions[i], ports[i % len(ports)]
            def post(path, payload):
                # A keep-alive connection the server closed while idle fails at once: retry once on
                # a fresh one (safe: a submit is idempotent by its request id).
                for attempt in (1, 2):
                    c = conns.get(port) or conns.setdefault(port, http.client.HTTPConnection(
                        "127.0.0.1", port, timeout=60))
                    try:
                        return s.post_json(path, payload, conn=c)
                    except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                        conns.pop(port).close()
                        if attempt == 2:
                            raise
            try:
                if i not in held:
                    status, data = post(f"/api/v1/items/{item_id}/claim", {})
                    if status == 200 and data and data.get("task"):
                        held[i] = data["task"]["token"]
                    else:
                        err(f"claim {status}")
                else:
                    status, data = post("/api/v1/tasks/submit",
                                        {"token": held.pop(i), "score": "5", "request_id": uuid.uuid4().hex,
                                         "next": True, "item_id": item_id})
                    done = time.perf_counter()
                    if status != 200:
                        err(f"submit {status}")
                    else:
                        nxt = (data or {}).get("next")
                        if nxt and nxt.get("token"):
                            held[i] = nxt["token"]
                        if due >= t_measure[0]:
                            with lock:
                                latencies.append((done - due) * 1000)
                                server_ms.append(s.server_ms)
                                marks[0] += 1
            except (OSError, http.client.HTTPException) as exc:
                err(type(exc).__name__)
                if port in conns:
                    conns.pop(port).close()
            with lock:
                idle.append(i)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in pool:
        t.start()
    for i in range(len(sessions)):   # every marker holds a task before the clock starts
        jobs.put((time.perf_counter(), i))
        with lock:
            idle.remove(i)
    while len(held) + sum(errors.values()) < len(sessions):
        time.sleep(0.05)
    rng = random.Random(seed)
    start = time.perf_counter()
    t_measure[0] = start + warmup
    end = t_measure[0] + duration
    due, skipped = start, 0
    while True:
        due += rng.expovariate(rate)
        if due >= end:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        with lock:
            if not idle:
                i = None
            elif idle_order == "fifo":
                i = idle.pop(0)
            else:   # swap a random idle marker to the end and take it
                k = pick.randrange(len(idle))
                idle[k], idle[-1] = idle[-1], idle[k]
                i = idle.pop()
        if i is None:
            skipped += 1   # every marker busy: the offered rate exceeds what the server gives
            continue
        jobs.put((due, i))
    for _ in pool:
        jobs.put(None)
    for t in pool:
        t.join(60)
    if skipped:
        errors["arrivals with every marker busy"] = skipped
    return LoadResult(marks[0], duration, [], latencies, errors, server_ms=server_ms)


def _raw_process(url: str, item_id: int, marker_ids: list[int], threads: int, duration: float,
                 start_at: float, protocol: str, chaining: str, out) -> None:
    db = Database(url, ledger_chaining=chaining)
    chainer = _chainer_for(db)   # as each web server runs one
    try:
        r = raw_load(db, item_id, marker_ids, threads=threads, duration=duration, start_at=start_at,
                     protocol=protocol)
        out.put((r.marks, r.seconds, r.claim_ms, r.submit_ms, r.errors))
    finally:
        if chainer is not None:
            chainer.stop()
        db.dispose()


def _chainer_for(db: Database):
    """The ledger chainer a server runs with deferred chaining (``marking.chainer``), at
    the default interval; None with inline chaining."""
    if db.ledger_chaining != "deferred":
        return None
    from marking.chainer import LedgerChainer
    return LedgerChainer(db, interval_s=0.5).start()


def raw_load_processes(url: str, item_id: int, marker_ids: list[int], *, processes: int, threads: int,
                       duration: float, protocol: str = "workbench", chaining: str = "inline") -> LoadResult:
    """The raw ceiling with as many OS processes as the web has servers (same GIL budget)."""
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 5.0   # time for the children to import and connect
    procs = [ctx.Process(target=_raw_process, args=(url, item_id, marker_ids[i::processes], threads, duration,
                                                    start_at, protocol, chaining, out)) for i in range(processes)]
    for proc in procs:
        proc.start()
    parts = [out.get(timeout=duration + 120) for _ in procs]
    for proc in procs:
        proc.join(30)
    errors: dict[str, int] = {}
    for part in parts:
        for k, v in part[4].items():
            errors[k] = errors.get(k, 0) + v
    return LoadResult(sum(p[0] for p in parts), statistics.mean(p[1] for p in parts),
                      [x for p in parts for x in p[2]], [x for p in parts for x in p[3]], errors)


def claim_p50(db: Database, world: World, claims: int, start: int = 0) -> tuple[float, list[float]]:
    """Single-thread claim latency (each claim followed by its submit, markers in turn from ``start``)."""
    from marking import dispatch, submission
    times = []
    for n in range(start, start + claims):
        uid = world.markers[n % len(world.markers)]
        t0 = time.perf_counter()
        view = dispatch.claim_next(db, uid, world.item_id)
        times.append((time.perf_counter() - t0) * 1000)
        submission.submit_mark(db, uid, view.token, "5", request_id=uuid.uuid4().hex)
    return statistics.median(times), times


def service_cost(db: Database, world: World, marks: int) -> dict:
    """One thread, the workbench call (submit + next claim, calibration hooks installed) for
    ``marks`` marks: SQL statements per mark and this process's CPU per mark (no web, no
    contention; the database's own CPU is not included)."""
    import calibration
    from sqlalchemy import event

    from marking import dispatch, workbench

    calibration.install()
    held: dict[int, str] = {}

    def run(n: int) -> None:
        for k in range(n):
            uid = world.markers[k % len(world.markers)]
            token = held.pop(uid, None) or dispatch.claim_next(db, uid, world.item_id).token
            step = workbench.submit_and_claim_next(db, uid, token, "5", request_id=uuid.uuid4().hex,
                                                   item_id=world.item_id)
            held[uid] = step.next.token

    run(50)   # warm: statement caches, prepared statements, the default policy row
    statements = [0]

    def count(*_args):
        statements[0] += 1

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        chainer = _chainer_for(db)   # deferred chaining: the chainer's statements and CPU count too
        cpu0, t0 = time.process_time(), time.perf_counter()
        run(marks)
        if chainer is not None:
            chainer.stop()           # chains what is left
        cpu1, t1 = time.process_time(), time.perf_counter()
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
        calibration.uninstall()   # the scaling claims stay as they were measured before
    return {"marks": marks, "statements_per_mark": round(statements[0] / marks, 2),
            "python_cpu_ms_per_mark": round((cpu1 - cpu0) * 1000 / marks, 2),
            "wall_ms_per_mark": round((t1 - t0) * 1000 / marks, 2)}


def _service_cost_only(args, results: dict, workdir: Path, chaining: str) -> int:
    """``--service-cost-only N``: N rounds of the service-cost phase on a fresh small item,
    each with the database's CPU per mark (PostgreSQL's processes, read from /proc; all of
    them, so run it on a quiet database server), and the medians."""
    url, drop = fresh_database(args.database_url, workdir)
    db = Database(url, ledger_chaining=chaining)
    rounds = []
    try:
        migrate.upgrade(db)
        world = populate(db, markers=20, responses=3000)
        service_cost(db, world, 100)   # warm: caches, prepared statements, the default policy
        meter = CpuMeter([])
        for n in range(args.service_cost_only):
            before = meter.sample()
            cost = service_cost(db, world, args.service_cost_marks)
            cpu = CpuMeter.per_mark(before, meter.sample(), cost["marks"])
            rounds.append({**cost, "database_cpu_ms_per_mark": cpu["postgres"] if db.dialect == "postgresql" else None})
            print(f"round {n + 1}:", json.dumps(rounds[-1]), flush=True)
    finally:
        db.dispose()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)
    keys = ("statements_per_mark", "python_cpu_ms_per_mark", "database_cpu_ms_per_mark", "wall_ms_per_mark")
    results["service_cost_rounds"] = rounds
    results["service_cost_median"] = {k: statistics.median(one[k] for one in rounds) for k in keys
                                      if rounds and rounds[0][k] is not None}
    print("median:", json.dumps(results["service_cost_median"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


SCALING_ROUNDS = 6


def dispatch_scaling(database_url: str | None, workdir: Path, small: int, large: int, claims: int,
                     chaining: str = "inline") -> dict:
    """Claim p50 on an item with ``small`` and with ``large`` responses, and their ratio.

    Both databases are filled first, then the claims are timed in alternating rounds
    (``SCALING_ROUNDS``, ``claims`` in all per size): the shared host's speed drifts over
    the minute or two the large fill takes, and timing one size after the other put that
    drift into the ratio (1.57 and 0.88 for the same code on one day).
    """
    out: dict = {}
    opened: list[tuple[str, Database, World, Callable]] = []
    try:
        for label, n in (("small", small), ("large", large)):
            url, drop = fresh_database(database_url, workdir / f"scale-{label}")
            (workdir / f"scale-{label}").mkdir(exist_ok=True)
            db = Database(url, ledger_chaining=chaining)
            opened.append((label, db, None, drop))
            migrate.upgrade(db)
            t0 = time.perf_counter()
            world = populate(db, markers=20, responses=n, code=f"S{label[0].upper()}")
            out[label] = {"responses": n, "fill_s": round(time.perf_counter() - t0, 1)}
            opened[-1] = (label, db, world, drop)
            claim_p50(db, world, 20)   # warm caches and the connection pool
        times: dict[str, list[float]] = {label: [] for label, *_ in opened}
        per_round = max(1, claims // SCALING_ROUNDS)
        for _ in range(SCALING_ROUNDS):
            for label, db, world, _drop in opened:
                times[label].extend(claim_p50(db, world, per_round, start=20 + len(times[label]))[1])
        for label, *_ in opened:
            out[label].update(claim_p50_ms=round(statistics.median(times[label]), 2),
                              claim_p95_ms=round(pct(times[label], 95), 2))
        _label, small_db, small_world, _drop = opened[0]
        out["service_cost"] = service_cost(small_db, small_world, min(600, small // 3))
    finally:
        for _label, db, _world, drop in opened:
            db.dispose()
            drop()
    out["ratio_large_over_small"] = round(out["large"]["claim_p50_ms"] / out["small"]["claim_p50_ms"], 2)
    return out


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", help="PostgreSQL server URL (a fresh database is created on it); "
                                           "default: SQLite in a temp dir")
    ap.add_argument("--markers", type=int, default=500)
    ap.add_argument("--responses", type=int, default=30000, help="responses for the load phases")
    ap.add_argument("--servers", type=int, default=2,
                    help="web processes (gunicorn -w 1 each, markers pinned to one, as nginx ip_hash does); "
                         "also the raw ceiling's process count")
    ap.add_argument("--threads", type=int, default=8, help="gunicorn --threads per server and raw-ceiling "
                                                            "threads per process")
    ap.add_argument("--clients", type=int, default=64, help="client threads (bounded pool)")
    ap.add_argument("--protocol", choices=("workbench", "separate"), default="workbench",
                    help="workbench: submit carries next:true (one request per mark, as the workbench does); "
                         "separate: claim and submit requests")
    ap.add_argument("--latency-at", type=float, nargs="*", default=[0.5, 0.8],
                    help="after the saturation phase, open-loop phases at these shares of its rate "
                         "(latency at a stated load; at saturation latency is queueing by definition)")
    ap.add_argument("--marker-pace", type=float, default=18.0,
                    help="also an open-loop phase at one mark per marker every this many seconds (the pace "
                         "markers work: an essay read takes tens of seconds); 0 = no such phase")
    ap.add_argument("--idle-order", choices=("random", "fifo"), nargs="+", default=["random"],
                    help="latency phases: which idle marker makes the next arrival (random: reading times vary, as "
                         "real markers' do; fifo: the one idle longest, as if every read took the same time); "
                         "several: each latency phase once per order, in turn")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0",
                    help="Socket.IO message queue for more than one server (required then, as in production)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per load phase")
    ap.add_argument("--scale-small", type=int, default=10_000)
    ap.add_argument("--scale-large", type=int, default=1_000_000)
    ap.add_argument("--scale-claims", type=int, default=300)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 50 markers, 5 s, 2,000 vs 20,000")
    ap.add_argument("--ledger-chaining", choices=("auto", "inline", "deferred"), default="auto",
                    help="MC_LEDGER_CHAINING for the servers and the service-layer phases "
                         "(auto, as the server's default: deferred on PostgreSQL, inline on SQLite)")
    ap.add_argument("--service-cost-only", type=int, metavar="ROUNDS", default=0,
                    help="only the service cost of a mark (phase 5), this many rounds of 600 marks on a small item "
                         "(20 markers, 3,000 responses) with the database's CPU per mark too; no servers, no logins: "
                         "for A/B runs of the service layer (alternate two checkouts)")
    ap.add_argument("--service-cost-marks", type=int, metavar="N", default=600,
                    help="marks per --service-cost-only round (default 600). Instructions per mark, which the "
                         "host's load does not move: run one round under valgrind --tool=callgrind at two "
                         "counts (e.g. 100 and 300) and divide the difference of the totals by the difference "
                         "of the counts (docs/benchmarks.md, round ten)")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally blocks: stop the server
    if args.quick:
        args.markers, args.duration, args.responses = 50, 5.0, 5000
        args.scale_small, args.scale_large, args.scale_claims = 2000, 20000, 100
    backend = "postgresql" if args.database_url and args.database_url.startswith("postgres") else "sqlite"
    chaining = args.ledger_chaining if args.ledger_chaining != "auto" else (
        "deferred" if backend == "postgresql" else "inline")
    results: dict = {"backend": backend, "markers": args.markers, "servers": args.servers, "threads": args.threads,
                     "clients": args.clients, "protocol": args.protocol, "duration_s": args.duration,
                     "idle_order": args.idle_order,
                     "cpus": os.cpu_count(), "python": platform.python_version(), "ledger_chaining": chaining}
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    if args.service_cost_only:
        return _service_cost_only(args, results, workdir, chaining)
    print(f"# marking load benchmark: {backend}, {args.markers} markers, {args.servers} × gunicorn -w 1 --threads "
          f"{args.threads}, {args.clients} client threads, {args.protocol} protocol, {args.duration:.0f} s per phase, "
          f"{chaining} ledger chaining",
          flush=True)
    url, drop = fresh_database(args.database_url, workdir)
    db = Database(url)
    servers: list[ServerProcess] = []
    try:
        migrate.upgrade(db)
        t0 = time.perf_counter()
        world = populate(db, markers=args.markers, responses=args.responses)
        print(f"setup: {args.markers} markers, {args.responses} responses in {time.perf_counter() - t0:.1f} s",
              flush=True)
        env = {"MC_LEDGER_CHAINING": chaining, **({"MC_REDIS_URL": args.redis_url} if args.servers > 1 else {})}
        for n in range(args.servers):
            servers.append(ServerProcess(url, workdir / f"data-{n}", threads=args.threads, env=env).start())
        ports = [server.port for server in servers]
        t0 = time.perf_counter()
        sessions = login_all_sticky(ports, world.usernames)
        results["login_s"] = round(time.perf_counter() - t0, 1)
        print(f"logins: {len(sessions)} in {results['login_s']} s (argon2id at the server's cost)", flush=True)
        with ChainLagSampler(db) as chain_lag:
            web = web_load(ports, world.item_id, sessions, clients=args.clients, duration=args.duration,
                           protocol=args.protocol, meter=CpuMeter([server.proc.pid for server in servers]))
        results["web"] = web.summary()
        if chaining == "deferred":
            results["web"]["ledger_unchained"] = chain_lag.summary()
        print("web:", json.dumps(results["web"]), flush=True)
        if web.marks == 0:   # nothing to take shares of: say so instead of offering 0 marks/s
            print(f"error: the saturation phase completed no marks in {web.seconds:.1f} s "
                  f"(errors: {web.errors or 'none'}); the phases at shares of its rate are skipped",
                  file=sys.stderr, flush=True)
            results["error"] = "saturation phase completed no marks"
        phases = [(f"latency_at_{int(share * 100)}pct", round(web.rate * share, 1),
                   f"{share:.0%} of the saturation rate") for share in args.latency_at if web.marks]
        if args.marker_pace > 0:
            phases.insert(0, ("latency_at_marker_pace", round(args.markers / args.marker_pace, 1),
                              f"the markers' pace (one mark each {args.marker_pace:g} s per marker)"))
        for base, rate, label in phases:
            for order in args.idle_order:   # more than one: each phase once per order, in turn (a paired A/B)
                name = base if order == args.idle_order[0] else f"{base}_{order}"
                key, n = name, 1
                while key in results:   # a repeated share (--latency-at 0.5 0.5): _2, _3, …
                    n += 1
                    key = f"{name}_{n}"
                at = web_latency_at(ports, world.item_id, sessions, rate=rate, duration=args.duration,
                                    idle_order=order)
                results[key] = {"offered_marks_per_s": rate, "idle_order": order, **at.summary()}
                print(f"latency at {label} ({rate}/s, {order} idle order):", json.dumps(results[key]), flush=True)
        for server in servers:
            server.stop()
        servers = []
        raw = raw_load_processes(url, world.item_id, world.markers, processes=args.servers, threads=args.threads,
                                 duration=args.duration, protocol=args.protocol, chaining=chaining)
        results["raw"] = raw.summary()
        print("raw:", json.dumps(results["raw"]), flush=True)
        results["web_over_raw"] = round(web.rate / raw.rate, 3) if raw.rate else None
        print(f"web/raw: {results['web_over_raw']}", flush=True)
    finally:
        for server in servers:
            server.stop()
        db.dispose()
        drop()
    if not args.skip_scale:
        results["scaling"] = dispatch_scaling(args.database_url, workdir, args.scale_small, args.scale_large,
                                              args.scale_claims, chaining)
        print("dispatch scaling:", json.dumps(results["scaling"]), flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 1 if "error" in results else 0


if __name__ == "__main__":
    sys.exit(main())
