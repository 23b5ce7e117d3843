"""Backups and restores (R-OMR-4, R-DATA-2).

A backup is a directory ``<backup_dir>/<UTC stamp>-<label>/`` holding the database
(SQLite online-backup copy, or a ``pg_dump -Fc`` archive), a copy of the signed
ledger checkpoints, ``manifest.json`` (schema revision, ledger head, row counts)
and ``SHA256SUMS`` over all of them. When ``MC_BACKUP_COPY_DIR`` is set the whole
directory is copied there too, so a copy is kept apart from the live system.

A restore checks the checksums first, restores, and returns the manifest so the
caller (and the restore drill test) can check that the ledger verifies and the
row counts match.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from .checksums import sha256_file
from .periodic import PeriodicThread
from . import ledger, migrate
from .models import Base


_log = logging.getLogger("marking.backup")


class BackupError(RuntimeError):
    pass


def table_counts(db) -> dict[str, int]:
    with db.read() as session:
        return {name: session.scalar(select(func.count()).select_from(table))
                for name, table in sorted(Base.metadata.tables.items())}


def _pg_env_and_args(url: str) -> tuple[dict[str, str], list[str]]:
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    args = ["-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432), "-U", parsed.username or "postgres"]
    return env, args + [parsed.database]


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database:
        raise BackupError("in-memory SQLite cannot be backed up")
    return Path(database)


def create_backup(db, settings, *, label: str = "scheduled") -> Path:
    """Write a verified backup; returns its directory."""
    if not label.replace("-", "").replace("_", "").isalnum():
        raise BackupError("a backup label may contain letters, digits, '-' and '_' only")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    target = Path(settings.backup_dir) / f"{stamp}-{label}"
    target.mkdir(parents=True, exist_ok=False)
    ledger.chain_pending(db)   # deferred chaining: the manifest's head covers every committed change
    with db.read() as session:
        head_seq, head_hash = ledger.head(session)
    manifest = {
        "format": 1, "created_at": stamp, "label": label, "dialect": db.dialect,
        "schema_revision": migrate.current_revision(db), "ledger_head": {"seq": head_seq, "hash": head_hash},
        "counts": table_counts(db),
    }
    if db.is_sqlite:
        source = sqlite3.connect(str(_sqlite_path(db.url)))
        dest = sqlite3.connect(str(target / "database.sqlite3"))
        try:
            with dest:
                source.backup(dest)  # consistent online copy, readers and writers keep going
        finally:
            dest.close()
            source.close()
    else:
        env, args = _pg_env_and_args(db.url)
        out = target / "database.pgdump"
        result = subprocess.run(["pg_dump", "-Fc", "--no-owner", "-f", str(out), *args], env=env,
                                capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise BackupError(f"pg_dump failed: {result.stderr.strip()}")
    checkpoints = Path(settings.checkpoint_dir) / ledger.CheckpointStore.FILE_NAME
    if checkpoints.exists():
        shutil.copyfile(checkpoints, target / ledger.CheckpointStore.FILE_NAME)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    sums = [f"{sha256_file(p)}  {p.name}" for p in sorted(target.iterdir())]
    (target / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    if settings.backup_copy_dir:
        shutil.copytree(target, Path(settings.backup_copy_dir) / target.name)
    return target


def verify_backup(directory: Path) -> dict:
    """Check SHA256SUMS; return the manifest. Raises BackupError naming a bad file."""
    directory = Path(directory)
    sums_file = directory / "SHA256SUMS"
    if not sums_file.exists():
        raise BackupError(f"{directory} has no SHA256SUMS: not a backup, or incomplete")
    listed = set()
    for line in sums_file.read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed.add(name)
        path = directory / name
        if not path.exists():
            raise BackupError(f"{name} is listed in SHA256SUMS but missing")
        if sha256_file(path) != digest:
            raise BackupError(f"{name} does not match its checksum: the backup is damaged")
    extra = {p.name for p in directory.iterdir()} - listed - {"SHA256SUMS"}
    if extra:
        raise BackupError(f"files not covered by SHA256SUMS: {', '.join(sorted(extra))}")
    return json.loads((directory / "manifest.json").read_text())


def restore_backup(directory: Path, target_url: str, *, force: bool = False) -> dict:
    """Restore into ``target_url``. SQLite: refuses to overwrite unless ``force``
    (the old file is kept beside it as ``*.before-restore``). PostgreSQL: the target
    database must exist and be empty unless ``force`` (then objects are replaced)."""
    manifest = verify_backup(directory)
    directory = Path(directory)
    if manifest["dialect"] == "sqlite":
        if not target_url.startswith("sqlite"):
            raise BackupError("this is a SQLite backup; restore it to a SQLite URL")
        path = _sqlite_path(target_url)
        if path.exists():
            if not force:
                raise BackupError(f"{path} exists; pass --force to replace it (it is kept as .before-restore)")
            path.replace(path.with_name(path.name + ".before-restore"))
            for suffix in ("-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(directory / "database.sqlite3", path)
    else:
        if target_url.startswith("sqlite"):
            raise BackupError("this is a PostgreSQL backup; restore it to a PostgreSQL URL")
        env, args = _pg_env_and_args(target_url)
        command = ["pg_restore", "--no-owner", "--exit-on-error"]
        if force:
            command += ["--clean", "--if-exists"]
        command += ["-d", args[-1], *args[:-1], str(directory / "database.pgdump")]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise BackupError(f"pg_restore failed: {result.stderr.strip()}")
    return manifest


def list_backups(settings) -> list[Path]:
    root = Path(settings.backup_dir)
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


class BackupScheduler(PeriodicThread):
    """Takes a scheduled backup every ``interval`` (R-OMR-4: at least every half day).

    Every web server starts one (``marking-centre serve``); failures are reported, not
    fatal. Several servers sharing a backup directory make one backup per interval
    between them: every ``check_every`` a scheduler takes an exclusive lock file in the
    directory and backs up only when the newest scheduled backup there is older than
    ``interval`` (or, with none there yet, when ``interval`` has passed since it started).
    """

    LOCK_NAME = ".scheduler.lock"
    name = "backup-scheduler"

    def __init__(self, db, settings, *, interval: dt.timedelta | None = None,
                 check_every: dt.timedelta | None = None,
                 on_error: Callable[[Exception], None] | None = None):
        super().__init__()
        self.db = db
        self.settings = settings
        self.interval = interval or dt.timedelta(hours=settings.backup_interval_hours)
        self.check_every = check_every or min(self.interval, dt.timedelta(minutes=5))
        self.interval_s = self.check_every.total_seconds()
        self.on_error = on_error or (lambda exc: _log.error("scheduled backup failed: %s", exc))
        self.started_at = dt.datetime.now(dt.timezone.utc)
        self.made: list[Path] = []

    def run_once(self) -> Path | None:
        try:
            path = create_backup(self.db, self.settings, label="scheduled")
            self.made.append(path)
            return path
        except Exception as exc:  # noqa: BLE001 - a failed backup must not stop the centre
            self.on_error(exc)
            return None

    def newest_scheduled(self) -> dt.datetime | None:
        stamps = []
        for path in list_backups(self.settings):
            stamp, _, label = path.name.partition("-")
            if label == "scheduled":
                with contextlib.suppress(ValueError):
                    stamps.append(dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.timezone.utc))
        return max(stamps, default=None)

    def due(self, now: dt.datetime | None = None) -> bool:
        now = now or dt.datetime.now(dt.timezone.utc)
        return now - (self.newest_scheduled() or self.started_at) >= self.interval

    def tick(self) -> Path | None:
        """Back up if due, unless another scheduler holds the directory's lock."""
        root = Path(self.settings.backup_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
            with open(root / self.LOCK_NAME, "a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return None   # another server is backing up now
                return self.run_once() if self.due() else None
        except OSError as exc:
            self.on_error(exc)
            return None



# --------------------------------------------------------------------------- change windows (R-DATA-2)
# "Backups before/after key changes and score-change windows": the composition root (the web
# app or CLI) installs a hook when MC_BACKUP_ON_KEY_CHANGE is true; the services then wrap
# their write in ``change_window(...)``. Without the hook (tests, default) it costs nothing.
# The backup runs synchronously in the caller: a key lock or a score-change decision takes as
# long as one backup (pg_dump) longer — these are rare, deliberate acts. A failed *before*
# backup refuses the change (BackupError); a failed *after* backup is logged, since the
# change is already committed (the next scheduled backup covers it).
_change_hook: tuple | None = None


def install_change_backups(db, settings) -> None:
    global _change_hook
    _change_hook = (db, settings)


def uninstall_change_backups() -> None:
    global _change_hook
    _change_hook = None


@contextlib.contextmanager
def change_window(kind: str):
    """``with change_window("key-change"): ...`` → backups labelled before-/after-<kind>."""
    hook = _change_hook
    if hook is None:
        yield
        return
    db, settings = hook
    create_backup(db, settings, label=f"before-{kind}")
    yield
    try:
        create_backup(db, settings, label=f"after-{kind}")
    except Exception:  # noqa: BLE001 - the change is committed; report, don't undo
        _log.exception("backup after %s failed; the next scheduled backup will cover it", kind)
