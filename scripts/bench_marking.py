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
2. ``marking-centre serve`` as a subprocess (gunicorn -w 1 --threads N) on 127.0.0.1 and an
   ephemeral port. Every marker logs in once over HTTP (its own session cookie, CSRF token);
   each login comes from its own loopback source address (127.2.x.y), as real markers come
   from their own machines — the per-address login throttle (20/min) stays as shipped.
3. Load: a bounded pool of client threads (stdlib http.client, keep-alive) drives the M
   markers round-robin, each marker claim → submit as fast as possible, for ``--duration``
   seconds. Reported: marks/s, p50/p95/p99 of claim and submit.
4. Raw ceiling in the same run: the same claim_next/submit_mark calls straight into the
   service layer (``marking.dispatch``/``marking.submission`` with a ``Database``) from N
   threads in this process (no HTTP, no Flask); ratio web/raw.
5. Dispatch scaling: claim p50 (service layer, one thread) on an item with 10,000 vs
   1,000,000 responses (bulk INSERT … SELECT generate_series / recursive CTE), ratio.
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
        env = {**os.environ, "MC_ENV": "test", "MC_DATABASE_URL": self.database_url,
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


def source_ip(n: int) -> str:
    return f"127.2.{(n // 250) % 250}.{n % 250 + 1}"


def login_all(port: int, usernames: list[str], *, workers: int = 8) -> list[Session]:
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
            s = Session(port, source_ip(i))
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

    @property
    def rate(self) -> float:
        return self.marks / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {"marks": self.marks, "seconds": round(self.seconds, 2), "marks_per_s": round(self.rate, 1),
                **{f"claim_p{p}_ms": round(pct(self.claim_ms, p), 1) for p in (50, 95, 99)},
                **{f"submit_p{p}_ms": round(pct(self.submit_ms, p), 1) for p in (50, 95, 99)},
                "errors": dict(self.errors)}


def web_load(port: int, item_id: int, sessions: list[Session], *, clients: int, duration: float,
             warmup: float = 2.0) -> LoadResult:
    """``clients`` threads, each with one keep-alive connection, cycle through their markers."""
    stop = threading.Event()
    t_measure = [0.0]
    claim_ms: list[float] = []
    submit_ms: list[float] = []
    marks = [0]
    errors: dict[str, int] = {}
    lock = threading.Lock()
    groups = [sessions[i::clients] for i in range(clients)]

    def err(kind):
        with lock:
            errors[kind] = errors.get(kind, 0) + 1

    def work(group: list[Session]):
        conn = None
        for s in itertools.cycle(group):
            if stop.is_set():
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                t0 = time.perf_counter()
                status, data = s.post_json(f"/api/v1/items/{item_id}/claim", {}, conn=conn)
                t1 = time.perf_counter()
                if status != 200 or not data or not data.get("task"):
                    err(f"claim {status}" if status != 200 else "claim empty")
                    if data and data.get("empty"):
                        time.sleep(0.05)
                    continue
                status2, data2 = s.post_json("/api/v1/tasks/submit",
                                             {"token": data["task"]["token"], "score": "5",
                                              "request_id": uuid.uuid4().hex}, conn=conn)
                t2 = time.perf_counter()
            except (OSError, http.client.HTTPException) as exc:
                err(type(exc).__name__)
                conn.close()
                conn = None
                continue
            if status2 != 200:
                err(f"submit {status2}")
                continue
            if t0 >= t_measure[0] and not stop.is_set():
                with lock:
                    claim_ms.append((t1 - t0) * 1000)
                    submit_ms.append((t2 - t1) * 1000)
                    marks[0] += 1
        if conn is not None:
            conn.close()

    t_measure[0] = time.perf_counter() + warmup
    threads = [threading.Thread(target=work, args=(g,), daemon=True) for g in groups if g]
    for t in threads:
        t.start()
    time.sleep(warmup + duration)
    stop.set()
    t_end = time.perf_counter()
    for t in threads:
        t.join(60)
    return LoadResult(marks[0], t_end - t_measure[0], claim_ms, submit_ms, errors)


def raw_load(db: Database, item_id: int, marker_ids: list[int], *, threads: int, duration: float,
             warmup: float = 1.0) -> LoadResult:
    """The same claim → submit straight through the service layer, ``threads`` threads, no web."""
    from marking import dispatch, submission

    stop = threading.Event()
    t_measure = [0.0]
    claim_ms: list[float] = []
    submit_ms: list[float] = []
    marks = [0]
    errors: dict[str, int] = {}
    lock = threading.Lock()
    groups = [marker_ids[i::threads] for i in range(threads)]

    def work(group):
        for uid in itertools.cycle(group):
            if stop.is_set():
                break
            try:
                t0 = time.perf_counter()
                view = dispatch.claim_next(db, uid, item_id)
                t1 = time.perf_counter()
                if view is None:
                    with lock:
                        errors["claim empty"] = errors.get("claim empty", 0) + 1
                    continue
                submission.submit_mark(db, uid, view.token, "5", request_id=uuid.uuid4().hex)
                t2 = time.perf_counter()
            except Exception as exc:  # noqa: BLE001
                with lock:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if t0 >= t_measure[0] and not stop.is_set():
                with lock:
                    claim_ms.append((t1 - t0) * 1000)
                    submit_ms.append((t2 - t1) * 1000)
                    marks[0] += 1

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


def claim_p50(db: Database, world: World, claims: int) -> tuple[float, list[float]]:
    """Single-thread claim latency (each claim followed by its submit, markers in turn)."""
    from marking import dispatch, submission
    times = []
    for n in range(claims):
        uid = world.markers[n % len(world.markers)]
        t0 = time.perf_counter()
        view = dispatch.claim_next(db, uid, world.item_id)
        times.append((time.perf_counter() - t0) * 1000)
        submission.submit_mark(db, uid, view.token, "5", request_id=uuid.uuid4().hex)
    return statistics.median(times), times


def dispatch_scaling(database_url: str | None, workdir: Path, small: int, large: int, claims: int) -> dict:
    out = {}
    for label, n in (("small", small), ("large", large)):
        url, drop = fresh_database(database_url, workdir / f"scale-{label}")
        (workdir / f"scale-{label}").mkdir(exist_ok=True)
        db = Database(url)
        try:
            migrate.upgrade(db)
            t0 = time.perf_counter()
            world = populate(db, markers=20, responses=n, code=f"S{label[0].upper()}")
            fill_s = time.perf_counter() - t0
            claim_p50(db, world, 20)   # warm caches and the connection pool
            p50, times = claim_p50(db, world, claims)
            out[label] = {"responses": n, "claim_p50_ms": round(p50, 2),
                          "claim_p95_ms": round(pct(times, 95), 2), "fill_s": round(fill_s, 1)}
        finally:
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
    ap.add_argument("--threads", type=int, default=32, help="gunicorn --threads and raw-ceiling threads")
    ap.add_argument("--clients", type=int, default=64, help="client threads (bounded pool)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds measured per load phase")
    ap.add_argument("--scale-small", type=int, default=10_000)
    ap.add_argument("--scale-large", type=int, default=1_000_000)
    ap.add_argument("--scale-claims", type=int, default=300)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--quick", action="store_true", help="smoke run: 50 markers, 5 s, 2,000 vs 20,000")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # run the finally blocks: stop the server
    if args.quick:
        args.markers, args.duration, args.responses = 50, 5.0, 5000
        args.scale_small, args.scale_large, args.scale_claims = 2000, 20000, 100
    backend = "postgresql" if args.database_url and args.database_url.startswith("postgres") else "sqlite"
    results: dict = {"backend": backend, "markers": args.markers, "threads": args.threads,
                     "clients": args.clients, "duration_s": args.duration, "cpus": os.cpu_count(),
                     "python": platform.python_version()}
    workdir = Path(tempfile.mkdtemp(prefix="mc-bench-"))
    print(f"# marking load benchmark: {backend}, {args.markers} markers, gunicorn -w 1 --threads "
          f"{args.threads}, {args.clients} client threads, {args.duration:.0f} s per phase", flush=True)
    url, drop = fresh_database(args.database_url, workdir)
    db = Database(url)
    server = None
    try:
        migrate.upgrade(db)
        t0 = time.perf_counter()
        world = populate(db, markers=args.markers, responses=args.responses)
        print(f"setup: {args.markers} markers, {args.responses} responses in {time.perf_counter() - t0:.1f} s",
              flush=True)
        server = ServerProcess(url, workdir / "data", threads=args.threads).start()
        t0 = time.perf_counter()
        sessions = login_all(server.port, world.usernames)
        results["login_s"] = round(time.perf_counter() - t0, 1)
        print(f"logins: {len(sessions)} in {results['login_s']} s (argon2id at the server's cost)", flush=True)
        web = web_load(server.port, world.item_id, sessions, clients=args.clients, duration=args.duration)
        results["web"] = web.summary()
        print("web:", json.dumps(results["web"]), flush=True)
        server.stop()
        server = None
        raw = raw_load(db, world.item_id, world.markers, threads=args.threads, duration=args.duration)
        results["raw"] = raw.summary()
        print("raw:", json.dumps(results["raw"]), flush=True)
        results["web_over_raw"] = round(web.rate / raw.rate, 3) if raw.rate else None
        print(f"web/raw: {results['web_over_raw']}", flush=True)
    finally:
        if server is not None:
            server.stop()
        db.dispose()
        drop()
    if not args.skip_scale:
        results["scaling"] = dispatch_scaling(args.database_url, workdir, args.scale_small, args.scale_large,
                                              args.scale_claims)
        print("dispatch scaling:", json.dumps(results["scaling"]), flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
