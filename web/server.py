"""``marking-centre serve``: gunicorn, programmatically, one worker with threads (gthread).

Flask-SocketIO in threading mode needs exactly one worker process (``-w 1``); each
open WebSocket holds one thread, so ``--threads`` must exceed the open browser tabs
plus HTTP headroom (architecture.md §1). Scale out with several single-worker servers
behind a sticky proxy and MC_REDIS_URL. The app is built inside the worker, which
then starts the outbox drainer, the backup scheduler, the sessions' activity writer and,
with deferred ledger chaining, the ledger chainer.
"""
from __future__ import annotations

import argparse
import gc
import sys

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from marking import migrate
from marking.backup import BackupScheduler
from marking.chainer import LedgerChainer

from .auth.touches import SessionTouches


class Server(BaseApplication):
    def __init__(self, factory, options: dict):
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        app = self.factory()
        app.extensions["mc_live"].start_drainer()
        db = app.extensions["mc_db"]
        # R-OMR-4: scheduled backups; servers sharing MC_BACKUP_DIR take one per interval between them.
        app.extensions["mc_backups"] = BackupScheduler(db, app.config["MC_SETTINGS"]).start()
        # Sessions' last activity in one write every few seconds (web.auth.touches).
        app.extensions["mc_session_touches"] = SessionTouches(db).start()
        if db.ledger_chaining == "deferred":   # marking.chainer: every server runs one, no election
            interval = app.config["MC_SETTINGS"].ledger_chain_interval_ms / 1000
            app.extensions["mc_chainer"] = LedgerChainer(db, interval_s=interval).start()
        freeze_startup_heap()
        return app


def freeze_startup_heap() -> None:
    """Move everything built at startup out of the garbage collector's reach.

    A full (generation 2) collection walks every tracked object and holds the GIL while it
    does: with the app, SQLAlchemy's mappers and the imported modules in the old
    generation, each one stopped a server's threads for 80–200 ms, a few times a minute
    under load — the load benchmark's latency tail. Those objects live as long as the
    process, so ``gc.freeze()`` (after one collection) moves them to a permanent
    generation the collector never walks; objects made while serving are collected as
    before.
    """
    gc.collect()
    gc.freeze()


class RequestLogOnlyLogger(GunicornLogger):
    """gunicorn's logger with its access log off: ``web.logs`` writes the request line.

    gunicorn counts any ``logconfig_dict`` as an access log configured, so it built every
    request's log atoms (headers, times, a dict per request) only for the
    ``gunicorn.access`` logger to drop them at WARNING: 3 % of a server's CPU under load
    (py-spy, docs/benchmarks.md "Round twelve").
    """

    @property
    def access_log_enabled(self) -> bool:
        return False


def gunicorn_options(host: str, port: int, threads: int, log_format: str = "text") -> dict:
    if log_format == "json":
        # One JSON line per event; web.logs writes the request log, so no gunicorn access log.
        from .logs import logging_dict
        return {**gunicorn_options(host, port, threads), "accesslog": None, "logconfig_dict": logging_dict("json"),
                "logger_class": RequestLogOnlyLogger}
    return {
        "bind": f"{host}:{port}",
        "workers": 1,                      # never more: Socket.IO sessions live in the process
        "worker_class": "gthread",
        "threads": threads,
        "worker_connections": threads * 2 + 50,
        "timeout": 120,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": "-",
        "errorlog": "-",
        "loglevel": "info",
    }


def serve(ctx, *, host: str = "127.0.0.1", port: int = 5000, threads: int = 64, migrate_db: bool = True) -> int:
    settings = ctx.settings
    settings.require_secret_key()   # refuse to start in production without MC_SECRET_KEY
    if settings.log_format == "json":
        import logging.config

        from .logs import logging_dict
        logging.config.dictConfig(logging_dict("json"))
    if settings.redis_url:   # fail before binding: no redis package or no PING ⇒ no start
        from .live import check_redis
        check_redis(settings.redis_url)
    if migrate_db:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrate.upgrade(ctx.db)
    ctx.reset_db()

    def factory():
        from web import create_app
        return create_app(settings, ctx.db)

    print(f"Marking centre web workbench on http://{host}:{port}/ (gunicorn -w 1 --threads {threads})", flush=True)
    Server(factory, gunicorn_options(host, port, threads, settings.log_format)).run()
    return 0


def cmd_serve(args, ctx) -> int:
    return serve(ctx, host=args.host, port=args.port, threads=args.threads, migrate_db=not args.no_migrate)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the web workbench (gunicorn, one worker, threads)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--threads", type=int, default=64, help="worker threads; each open WebSocket holds one")
    p.add_argument("--no-migrate", action="store_true", help="do not upgrade the database schema first")
    p.set_defaults(handler=cmd_serve)


if __name__ == "__main__":  # pragma: no cover
    from web.cli import main
    sys.exit(main(["serve", *sys.argv[1:]]))
