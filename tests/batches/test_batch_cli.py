"""The CLI module omr.batch_cli: commands wired to the services with exit codes."""
from __future__ import annotations

from types import SimpleNamespace

from omr import batch_cli

from tests.batches.batch_helpers import KEY, run_cli, run_nodes_inline, write_cards


def test_cli_batch_key_export(db, settings, world, store, tmp_path, capsys):
    ctx = SimpleNamespace(db=db, settings=settings.with_overrides(image_store=str(store.root)))
    write_cards(tmp_path / "scans", world.roll, 2)
    assert run_cli(ctx, "batch", "ingest", str(tmp_path / "scans"), "--subject", world.subject_code, "--scanner", "S9") == 0
    assert run_cli(ctx, "batch", "status") == 0
    assert "no OMR node is running" in capsys.readouterr().out
    run_nodes_inline(db, store)
    assert run_cli(ctx, "batch", "settle", "1") == 0
    keyfile = tmp_path / "key.csv"
    keyfile.write_text("item,answer\n" + "".join(f"{k},{v}\n" for k, v in KEY.items()))
    assert run_cli(ctx, "key", "enter", "--subject", world.subject_code, "--file", str(keyfile), "--user", "keyofficer") == 0
    assert run_cli(ctx, "key", "sign", "1", "--user", "keyofficer", "--as", "reviewer") == batch_cli.PERMISSION_EXIT
    assert run_cli(ctx, "key", "sign", "1", "--user", "reviewer", "--as", "reviewer") == 0
    assert run_cli(ctx, "key", "lock", "1", "--user", "keyofficer") == batch_cli.PERMISSION_EXIT
    assert run_cli(ctx, "key", "sign", "1", "--user", "authority", "--as", "authority_officer") == 0
    assert run_cli(ctx, "key", "lock", "1", "--user", "keyofficer") == 0
    assert run_cli(ctx, "key", "show", "--subject", world.subject_code) == 0
    assert run_cli(ctx, "batch", "score", "--subject", world.subject_code) == 0
    assert run_cli(ctx, "spotcheck", "sample", "--subject", world.subject_code) == 0
    out = tmp_path / "bags"
    assert run_cli(ctx, "export", "bag", "--subject", world.subject_code, "--out", str(out)) == 0
    [bag] = list(out.iterdir())
    assert run_cli(ctx, "export", "verify", str(bag)) == 0
    (bag / "data" / "scripts.csv").write_text("tampered\n")
    assert run_cli(ctx, "export", "verify", str(bag)) == 1
