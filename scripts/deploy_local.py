#!/usr/bin/env python3
"""Start (or ``--stop``) a local multi-process marking centre, from nothing.

    .venv/bin/python scripts/deploy_local.py [--workers 2] [--port 8080] [--run-dir mc-deploy]
    .venv/bin/python scripts/deploy_local.py --stop [--run-dir mc-deploy] [--drop-db]

What it does (docs/deploy.md):

1. creates the PostgreSQL database if missing and migrates it to the head revision;
2. checks Redis (the ``redis`` package and PING) — without it there is no cross-process Socket.IO;
3. starts N single-worker gunicorn processes (``marking-centre serve``) on separate loopback
   ports, each with MC_REDIS_URL as its Socket.IO message queue and Flask-Limiter storage;
4. renders deploy/nginx.conf (``ip_hash`` sticky sessions, WebSocket upgrade) and starts nginx
   in front, if nginx is installed (``--no-nginx`` to skip);
5. starts two OMR worker nodes (``omr-a``, ``omr-b``) as separate processes;
6. waits until every ``/readyz`` answers (directly and through nginx), then records the
   processes in ``<run-dir>/state.json``.

``--stop`` terminates exactly the recorded processes (SIGTERM to each one's own process
group, SIGKILL after a grace period) and stops nginx. The image store is a directory under
the run dir, or ``--image-store s3://bucket/prefix`` with ``--s3-endpoint-url``.
The secret key is generated once into ``<run-dir>/secret.key`` (mode 600).
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class DeployError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[deploy] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- database
def ensure_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``admin_url`` if missing; return its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if not name.replace("_", "").isalnum():
        raise DeployError(f"database name must be letters, digits and _: {name!r}")
    url = make_url(admin_url.replace("postgresql://", "postgresql+psycopg://", 1))
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
                log(f"created database {name}")
    except Exception as exc:  # noqa: BLE001
        raise DeployError(f"PostgreSQL at {url.render_as_string(hide_password=True)}: {exc}") from exc
    finally:
        engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(admin_url.replace("postgresql://", "postgresql+psycopg://", 1))
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def migrate_database(url: str) -> str:
    from marking import migrate
    from marking.db import Database

    db = Database(url)
    try:
        migrate.upgrade(db)
        return migrate.current_revision(db)
    finally:
        db.dispose()


# --------------------------------------------------------------------------- processes
def spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    out = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        out.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def wait_ready(url: str, deadline: float, procs: list[tuple[str, subprocess.Popen]] = ()) -> dict:
    last = "no answer"
    while time.monotonic() < deadline:
        for name, proc in procs:
            if proc.poll() is not None:
                raise DeployError(f"{name} exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = json.loads(r.read().decode())
                if r.status == 200 and body.get("status") == "ready":
                    return body
                last = str(body)
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise DeployError(f"{url} not ready in time ({last})")


def render_nginx(run_dir: Path, listen: int, web_ports: list[int]) -> Path:
    template = (ROOT / "deploy" / "nginx.conf").read_text()
    # nginx started by root would run its workers as "nobody", which cannot read a private
    # run dir; a local deployment keeps them as the invoking user.
    user_directive = "user root;" if os.geteuid() == 0 else ""
    values = {"user_directive": user_directive, "run_dir": str(run_dir), "listen": f"127.0.0.1:{listen}",
              "upstream_servers": "\n".join(f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=5s;"
                                             for p in web_ports)}
    text = re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (run_dir / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    path = run_dir / "nginx.conf"
    path.write_text(text)
    return path


def secret_key(run_dir: Path) -> str:
    path = run_dir / "secret.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


# --------------------------------------------------------------------------- start / stop
def start(args) -> dict:
    run_dir = Path(args.run_dir).resolve()
    state_path = run_dir / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if any(alive(p["pid"]) for p in state.get("processes", [])):
            raise DeployError(f"a deployment is already running from {run_dir} (use --stop first)")
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.timeout

    from web.live import check_redis
    check_redis(args.redis_url)
    log(f"Redis answers at {args.redis_url.split('@')[-1]}")
    db_url = ensure_database(args.admin_url, args.db_name)
    revision = migrate_database(db_url)
    log(f"database {args.db_name} at schema {revision}")

    nginx = None if args.no_nginx else shutil.which("nginx")
    if not args.no_nginx and nginx is None:
        log("nginx is not installed: serving without the proxy (apt-get install nginx)")
    web_ports = [free_port() for _ in range(args.workers)] if not args.base_port else \
        [args.base_port + i for i in range(args.workers)]
    image_store = args.image_store or str(run_dir / "data" / "images")
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "MC_ENV": args.env, "MC_DATA_DIR": str(run_dir / "data"), "MC_DATABASE_URL": db_url,
           "MC_REDIS_URL": args.redis_url, "MC_IMAGE_STORE": image_store, "MC_SECRET_KEY": secret_key(run_dir),
           "MC_LOG_FORMAT": "json", "MC_TRUSTED_PROXIES": "1" if nginx else "0"}
    if args.s3_endpoint_url:
        env["MC_S3_ENDPOINT_URL"] = args.s3_endpoint_url
    state: dict = {"run_dir": str(run_dir), "db_name": args.db_name, "admin_url": args.admin_url,
                   "processes": [], "web_ports": web_ports}
    started: list[tuple[str, subprocess.Popen]] = []

    def record(name: str, proc: subprocess.Popen) -> None:
        started.append((name, proc))
        state["processes"].append({"name": name, "pid": proc.pid})
        state_path.write_text(json.dumps(state, indent=2))   # written as we go: --stop works after a failure

    try:
        for i, port in enumerate(web_ports):
            cmd = [sys.executable, "-m", "web.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--threads", str(args.threads), "--no-migrate"]
            record(f"web-{i + 1}", spawn(cmd, env, run_dir / "logs" / f"web-{i + 1}.log"))
        for node in args.omr_nodes.split(","):
            cmd = [sys.executable, "-m", "omr.worker", "--node", node]
            record(node, spawn(cmd, env, run_dir / "logs" / f"{node}.log"))
        for port in web_ports:
            wait_ready(f"http://127.0.0.1:{port}/readyz", deadline, started)
        log(f"{len(web_ports)} web processes ready on ports {', '.join(map(str, web_ports))}")
        if nginx:
            listen = args.port or free_port()
            conf = render_nginx(run_dir, listen, web_ports)
            subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-p", str(run_dir)], check=True,
                           capture_output=True, timeout=20)
            subprocess.run([nginx, "-c", str(conf), "-p", str(run_dir)], check=True, capture_output=True, timeout=20)
            pid_file = run_dir / "nginx.pid"
            while not pid_file.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            state["nginx"] = {"pid": int(pid_file.read_text().strip()), "conf": str(conf), "binary": nginx}
            state["url"] = f"http://127.0.0.1:{listen}"
            state_path.write_text(json.dumps(state, indent=2))
            wait_ready(state["url"] + "/readyz", deadline, started)
        else:
            state["url"] = f"http://127.0.0.1:{web_ports[0]}"
        for name, proc in started:
            if proc.poll() is not None:
                raise DeployError(f"{name} exited with status {proc.returncode}; see {run_dir}/logs/{name}.log")
    except BaseException:
        log("start failed; stopping what was started")
        stop(run_dir)
        raise
    state["ready"] = True
    state_path.write_text(json.dumps(state, indent=2))
    log(f"marking centre ready at {state['url']}/ (logs in {run_dir}/logs; stop with --stop)")
    return state


def _terminate(pids: list[int], grace: float) -> None:
    for pid in pids:
        for target in (lambda: os.killpg(pid, signal.SIGTERM), lambda: os.kill(pid, signal.SIGTERM)):
            try:
                target()
                break
            except (ProcessLookupError, PermissionError):
                continue
    end = time.monotonic() + grace
    while time.monotonic() < end and any(alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    for pid in pids:   # reap our own children (when stop() runs in the starting process)
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def stop(run_dir: Path, *, drop_db: bool = False, grace: float = 15.0) -> int:
    state_path = Path(run_dir).resolve() / "state.json"
    if not state_path.exists():
        log(f"nothing to stop in {run_dir}")
        return 0
    state = json.loads(state_path.read_text())
    nginx = state.get("nginx")
    if nginx and alive(nginx["pid"]):
        subprocess.run([nginx["binary"], "-s", "quit", "-c", nginx["conf"], "-p", state["run_dir"]],
                       capture_output=True, timeout=20)
        end = time.monotonic() + 10
        while time.monotonic() < end and alive(nginx["pid"]):
            time.sleep(0.1)
        if alive(nginx["pid"]):
            os.kill(nginx["pid"], signal.SIGKILL)
    pids = [p["pid"] for p in state.get("processes", [])]
    _terminate(pids, grace)
    left = [p["name"] for p in state.get("processes", []) if alive(p["pid"])]
    if drop_db:
        drop_database(state["admin_url"], state["db_name"])
        log(f"dropped database {state['db_name']}")
    if left:
        log(f"could not stop: {', '.join(left)}")
        return 1
    state_path.unlink()
    log(f"stopped {len(pids)} processes" + (" and nginx" if nginx else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stop", action="store_true", help="stop the deployment recorded in the run dir")
    p.add_argument("--drop-db", action="store_true", help="with --stop: also drop the database")
    p.add_argument("--run-dir", default=os.environ.get("MC_DEPLOY_DIR", "mc-deploy"),
                   help="state, logs, rendered nginx.conf, data dir (default ./mc-deploy)")
    p.add_argument("--workers", type=int, default=2, help="single-worker gunicorn processes (default 2)")
    p.add_argument("--threads", type=int, default=64, help="threads per gunicorn process")
    p.add_argument("--base-port", type=int, default=0, help="first gunicorn port (default: free ports)")
    p.add_argument("--port", type=int, default=0, help="nginx port (default: a free port)")
    p.add_argument("--no-nginx", action="store_true", help="do not start nginx even if installed")
    p.add_argument("--admin-url", default=os.environ.get("MC_DEPLOY_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
                   help="PostgreSQL URL with CREATE DATABASE rights")
    p.add_argument("--db-name", default="marking_centre_local")
    p.add_argument("--redis-url", default=os.environ.get("MC_REDIS_URL", DEFAULT_REDIS_URL))
    p.add_argument("--image-store", help="directory or s3://bucket/prefix (default <run-dir>/data/images)")
    p.add_argument("--s3-endpoint-url", help="S3-compatible endpoint for an s3:// image store")
    p.add_argument("--omr-nodes", default="omr-a,omr-b", help="comma-separated OMR node names")
    p.add_argument("--env", default="production", choices=("production", "development", "demo"))
    p.add_argument("--timeout", type=float, default=60.0, help="seconds allowed for start-up")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stop:
        return stop(Path(args.run_dir), drop_db=args.drop_db)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        state = start(args)
    except (DeployError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        print(f"error: {exc} {detail.decode(errors='replace') if isinstance(detail, bytes) else detail}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - ConfigError from check_redis etc.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"url": state["url"], "web_ports": state["web_ports"], "run_dir": state["run_dir"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
