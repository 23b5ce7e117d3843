"""The console script: demo, audit verify after tampering, users, exam import, backup/restore."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from web.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_once(tmp_path_factory):
    """The whole demo runs once per module (it scans, reads and marks ~200 cards)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MC_ENV", "demo")
        mp.delenv("MC_DATABASE_URL", raising=False)
        data = tmp_path_factory.mktemp("demo") / "centre"
        assert main(["--data-dir", str(data), "demo", "--no-serve"]) == 0
    return data


@pytest.fixture
def demo_dir(demo_once, tmp_path, monkeypatch):
    """A private copy of the demo's data directory for one test to change."""
    monkeypatch.setenv("MC_ENV", "demo")
    monkeypatch.delenv("MC_DATABASE_URL", raising=False)
    data = tmp_path / "centre"
    shutil.copytree(demo_once, data, ignore=shutil.ignore_patterns("demo-scans", "images"))
    return data


def _tamper(data: Path, *statements: str) -> None:
    conn = sqlite3.connect(data / "marking-centre.sqlite3")
    with conn:
        conn.execute("DROP TRIGGER ledger_event_no_update")
        conn.execute("DROP TRIGGER ledger_event_no_delete")
        for statement in statements:
            conn.execute(statement)
    conn.close()


def test_demo_is_repeatable_and_verifies(demo_dir, capsys):
    assert main(["--data-dir", str(demo_dir), "demo", "--no-serve"]) == 0
    assert "already imported" in capsys.readouterr().out
    assert main(["--data-dir", str(demo_dir), "audit", "verify"]) == 0


def test_edited_ledger_row_is_named(demo_dir, capsys):
    _tamper(demo_dir, "UPDATE ledger_event SET data = replace(data, 'marker', 'admin') WHERE seq = 5")
    capsys.readouterr()
    assert main(["--data-dir", str(demo_dir), "audit", "verify"]) == 1
    assert "LEDGER BROKEN at sequence 5" in capsys.readouterr().err


def test_deleted_last_rows_are_detected(demo_dir, capsys):
    _tamper(demo_dir, "DELETE FROM ledger_event WHERE seq > (SELECT MAX(seq) - 3 FROM ledger_event)",
            "UPDATE ledger_head SET seq = seq - 3, hash = (SELECT hash FROM ledger_event ORDER BY seq DESC LIMIT 1)")
    capsys.readouterr()
    assert main(["--data-dir", str(demo_dir), "audit", "verify"]) == 1
    assert "deleted" in capsys.readouterr().err


def test_user_import_and_exam_check_errors(demo_dir, tmp_path, capsys):
    csv_file = tmp_path / "users.csv"
    csv_file.write_text("username,display_name,roles,qualification_level\nnew1,New,marker,1\n")
    out = tmp_path / "pw.csv"
    assert main(["--data-dir", str(demo_dir), "user", "import", str(csv_file), "--passwords-out", str(out)]) == 0
    assert out.read_text().startswith("username,one_time_password\nnew1,")
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nsession: {code: X}\nsubjects: []\n")
    assert main(["--data-dir", str(demo_dir), "exam", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "session.name" in err and "subjects (line 3)" in err


def test_backup_then_restore_with_checks(demo_dir, capsys):
    assert main(["--data-dir", str(demo_dir), "backup", "--label", "drill"]) == 0
    path = capsys.readouterr().out.strip().rsplit(" ", 1)[-1]
    assert main(["--data-dir", str(demo_dir), "restore", path]) == 2  # refuses to overwrite
    assert main(["--data-dir", str(demo_dir), "restore", path, "--force"]) == 0
    assert "row counts match" in capsys.readouterr().out


def test_console_script_runs_as_a_process(tmp_path):
    env = {"MC_ENV": "demo", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "web.cli", "--data-dir", str(tmp_path / "d"), "demo", "--no-serve"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "verification OK" in result.stdout


def test_cli_lookups_report_clear_errors(demo_dir, capsys):
    """Unknown users and items are one-line errors with exit status 2, never tracebacks."""
    assert main(["--data-dir", str(demo_dir), "mark", "next", "--user", "nobody", "--item", "31"]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    assert main(["--data-dir", str(demo_dir), "calibration", "stats", "--item", "99"]) == 2
    assert "item '99': not found" in capsys.readouterr().err
