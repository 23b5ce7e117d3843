"""R-DATA-2: with MC_BACKUP_ON_KEY_CHANGE, a score-change decision is wrapped in before/after backups."""
from __future__ import annotations

import pytest

from marking import backup, changes
from tests.marking.test_review_changes import NOW, _setup_total


@pytest.fixture
def hook(db, settings):
    backup.install_change_backups(db, settings)
    yield
    backup.uninstall_change_backups()


def labels(settings):
    return sorted(p.name.split("-", 1)[1] for p in backup.list_backups(settings))


def test_no_hook_no_backup(db, settings):
    with backup.change_window("key-change"):
        pass
    assert labels(settings) == []


def test_score_change_decision_backed_up(db, settings, hook):
    ids = _setup_total(db, first="9.5", second="10")
    change = changes.request_change(db, ids["officer"], ids["response"], "8", "input_error", now=NOW)
    assert change.status == "pending_authority"
    changes.decide_change(db, ids["officer2"], change.id, True, now=NOW)
    assert labels(settings) == ["after-score-change", "before-score-change"]
    for path in backup.list_backups(settings):
        backup.verify_backup(path)


def test_failed_before_backup_refuses_change(db, settings, monkeypatch, hook):
    def broken(*args, **kwargs):
        raise backup.BackupError("disk full")
    monkeypatch.setattr(backup, "create_backup", broken)
    ran = []
    with pytest.raises(backup.BackupError):
        with backup.change_window("key-change"):
            ran.append(1)
    assert ran == []


def test_create_app_installs_hook_only_when_enabled(settings, db):
    from tests.deploy.deploy_support import make_app
    make_app(settings, db).extensions["mc_live"].stop()
    assert backup._change_hook is None
    app = make_app(settings.with_overrides(backup_on_key_change=True), db)
    try:
        assert backup._change_hook is not None
    finally:
        app.extensions["mc_live"].stop()
        backup.uninstall_change_backups()


def test_cli_context_installs_hook_only_when_enabled(settings):
    """Key locks and score changes made from the command line are backed up like the web's."""
    from web.cli import Context
    Context(settings).db.dispose()
    assert backup._change_hook is None
    context = Context(settings.with_overrides(backup_on_key_change=True))
    try:
        database = context.db   # opened lazily, by the first command that needs it
        assert backup._change_hook is not None and backup._change_hook[0] is database
    finally:
        context.reset_db()
        backup.uninstall_change_backups()
