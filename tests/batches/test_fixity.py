"""Fixity audit of the image store (R-DATA-1): every referenced image re-read and re-hashed."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from marking import fixity
from marking.models import PageImage, Response
from marking.models.scanning import ItemClip

from tests.batches.batch_helpers import run_cli, run_nodes_inline, write_cards


@pytest.fixture
def scanned(db, settings, world, store, tmp_path):
    """Two cards ingested, read by both OMR nodes and settled: pages, clips and responses."""
    ctx = SimpleNamespace(db=db, settings=settings.with_overrides(image_store=str(store.root)))
    write_cards(tmp_path / "scans", world.roll, 2)
    assert run_cli(ctx, "batch", "ingest", str(tmp_path / "scans"), "--subject", world.subject_code,
                "--scanner", "S9") == 0
    run_nodes_inline(db, store)
    assert run_cli(ctx, "batch", "settle", "1") == 0
    return ctx


def _referenced(db) -> dict[str, set[str]]:
    with db.read() as s:
        return {"page_image": set(s.execute(select(PageImage.sha256).where(PageImage.sha256.is_not(None))).scalars()),
                "item_clip": set(s.execute(select(ItemClip.sha256)).scalars()),
                "response": set(s.execute(select(Response.image_sha256)
                                          .where(Response.image_sha256.is_not(None))).scalars())}


def test_an_intact_store_passes_and_every_referenced_image_is_read_once(db, store, scanned):
    refs = _referenced(db)
    assert refs["page_image"] and refs["item_clip"]
    report = fixity.audit_images(db, store)
    assert report.ok and report.checked == len(set().union(*refs.values()))


def test_a_missing_and_an_altered_image_are_named_with_a_row_that_refers_to_them(db, store, scanned, capsys):
    refs = _referenced(db)
    page = sorted(refs["page_image"] - refs["item_clip"] - refs["response"])[0]
    clip = sorted(refs["item_clip"] - refs["page_image"])[0]
    store.path_for(page).unlink()
    altered = store.path_for(clip)
    altered.chmod(0o644)
    altered.write_bytes(altered.read_bytes() + b"bit rot")
    report = fixity.audit_images(db, store)
    assert not report.ok
    assert [(m["sha256"], m["table"]) for m in report.missing] == [(page, "page_image")]
    assert [a["sha256"] for a in report.altered] == [clip]
    assert report.altered[0]["table"] in ("item_clip", "response")
    with db.read() as s:   # the named row really refers to it
        assert s.execute(select(func.count()).select_from(PageImage)
                         .where(PageImage.id == report.missing[0]["id"], PageImage.sha256 == page)).scalar_one() == 1
    assert run_cli(scanned, "audit", "images", "--quiet") == 1
    err = capsys.readouterr().err
    assert f"IMAGE MISSING: {page}" in err and f"IMAGE ALTERED: {clip}" in err
    assert run_cli(scanned, "audit", "images", "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["ok"] and len(out["missing"]) == 1 and len(out["altered"]) == 1


def test_shards_partition_the_store(db, store, scanned, capsys):
    total = fixity.audit_images(db, store).checked
    parts = [fixity.audit_images(db, store, shard=(k, 3)) for k in range(3)]
    assert sum(p.checked for p in parts) == total
    assert all(p.checked + p.skipped == total for p in parts)
    assert run_cli(scanned, "audit", "images", "--shard", "1/3") == 0
    assert "shard 1/3" in capsys.readouterr().out
    assert run_cli(scanned, "audit", "images", "--shard", "3/3") == 2
    assert "0 <= K < N" in capsys.readouterr().err
