"""Backups and the restore drill (R-OMR-4, R-DATA-2): restore, the ledger verifies, counts match."""
import datetime as dt
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from marking import backup, examspec, ledger, migrate
from marking.db import Database

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "exam-2026-10.yaml"


def _restore_target(db, tmp_path, request):
    if db.is_sqlite:
        return f"sqlite:///{tmp_path / 'restored.sqlite3'}"
    server = request.getfixturevalue("pg_server")
    name = f"mc_r_{uuid.uuid4().hex[:10]}"
    with server["engine"].connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    request.addfinalizer(lambda: server["engine"].connect().execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')))
    return server["url"].set(database=name).render_as_string(hide_password=False)


def test_restore_drill(db, settings, tmp_path, request):
    examspec.import_spec(db, EXAMPLE)
    path = backup.create_backup(db, settings, label="before-key-change")
    manifest = backup.verify_backup(path)
    assert manifest["counts"]["candidate"] == 240 and manifest["ledger_head"]["seq"] == 1

    target_url = _restore_target(db, tmp_path, request)
    backup.restore_backup(path, target_url)
    restored = Database(target_url)
    try:
        assert ledger.verify(restored, None).ok
        assert backup.table_counts(restored) == manifest["counts"]
        assert migrate.current_revision(restored) == manifest["schema_revision"]
        with restored.read() as s:
            assert ledger.head(s) == (manifest["ledger_head"]["seq"], manifest["ledger_head"]["hash"])
        # The restored database keeps its guards.
        with pytest.raises(Exception, match="append-only"):
            with restored.write() as s:
                s.execute(text("DELETE FROM ledger_event"))
    finally:
        restored.dispose()


def test_damaged_backup_is_refused(db, settings):
    path = backup.create_backup(db, settings)
    victim = next(p for p in path.iterdir() if p.name.startswith("database"))
    with open(victim, "r+b") as handle:
        handle.seek(200)
        handle.write(b"\x00\xff\x00")
    with pytest.raises(backup.BackupError, match="does not match its checksum"):
        backup.verify_backup(path)


def test_copy_kept_apart(db, settings, tmp_path):
    apart = settings.with_overrides(backup_copy_dir=tmp_path / "offsite")
    path = backup.create_backup(db, apart)
    assert backup.verify_backup(tmp_path / "offsite" / path.name)["dialect"] == db.dialect


def test_sqlite_restore_refuses_to_overwrite_without_force(tmp_path, sqlite_template):
    """SQLite-specific guard (the PostgreSQL path is covered by the drill)."""
    import shutil
    from marking.config import load_settings
    shutil.copyfile(sqlite_template, tmp_path / "src.sqlite3")
    db = Database(f"sqlite:///{tmp_path / 'src.sqlite3'}")
    settings = load_settings(tmp_path / "data", env={"MC_ENV": "test"})
    path = backup.create_backup(db, settings)
    db.dispose()
    target = tmp_path / "live.sqlite3"
    target.write_bytes(b"existing")
    with pytest.raises(backup.BackupError, match="--force"):
        backup.restore_backup(path, f"sqlite:///{target}")
    backup.restore_backup(path, f"sqlite:///{target}", force=True)
    assert (tmp_path / "live.sqlite3.before-restore").read_bytes() == b"existing"


def test_scheduler_runs_backups(db, settings):
    scheduler = backup.BackupScheduler(db, settings, interval=dt.timedelta(milliseconds=50))
    scheduler.start()
    try:
        import time
        deadline = time.monotonic() + 20
        while len(scheduler.made) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.stop()
    assert len(scheduler.made) >= 2
    for made in scheduler.made:
        backup.verify_backup(made)


def test_scheduler_waits_an_interval_from_start_or_from_the_newest_backup(db, settings):
    scheduler = backup.BackupScheduler(db, settings, interval=dt.timedelta(hours=12))
    assert not scheduler.due()                              # a fresh server does not back up at once
    scheduler.started_at -= dt.timedelta(hours=12)
    assert scheduler.due()
    assert scheduler.tick() is not None                     # due: it backs up
    assert not scheduler.due() and scheduler.tick() is None  # ... and not again for 12 h
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=12, seconds=1)
    assert scheduler.due(later)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_servers_sharing_a_backup_directory_take_one_backup_per_interval(db, settings):
    """Every web server runs a scheduler: the lock file and the newest backup's stamp
    keep them from backing up twice in one interval."""
    interval = dt.timedelta(milliseconds=400)
    schedulers = [backup.BackupScheduler(db, settings, interval=interval,
                                         check_every=dt.timedelta(milliseconds=10)) for _ in range(3)]
    for scheduler in schedulers:
        scheduler.start()
    try:
        import time
        deadline = time.monotonic() + 30
        while sum(len(s.made) for s in schedulers) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for scheduler in schedulers:
            scheduler.stop()
    made = sorted(p.name for s in schedulers for p in s.made)
    assert len(made) >= 3
    stamps = [dt.datetime.strptime(name.split("-")[0], "%Y%m%dT%H%M%S%fZ") for name in made]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    assert all(gap >= interval for gap in gaps), gaps
