"""Image store (write-once, fixity, disk full) and ingest of TIFF/PDF, two-page scripts, re-scans."""
from __future__ import annotations

import errno
import io
import json

import numpy as np
from PIL import Image
from sqlalchemy import func, select

from marking import batches
from marking.models import Card, PageImage, RegisterEntry
from marking.storage import LocalImageStore, StorageFullError
from omr.ingest import ingest_path, ingest_rescan
from omr.template import load_template

from tests.batches.batch_cards import scan, two_page_template
from tests.batches.batch_helpers import ANSWERS, run_nodes_inline
from tests.batches.conftest import pass_trial


def test_store_is_content_addressed_and_write_once(tmp_path):
    store = LocalImageStore(tmp_path / "img")
    sha = store.put(b"page one")
    assert store.path_for(sha).relative_to(tmp_path / "img").parts[:2] == (sha[:2], sha[2:4])
    assert store.put(io.BytesIO(b"page one")) == sha          # dedup, never rewritten
    assert store.get(sha) == b"page one" and store.exists(sha) and store.verify(sha)
    store.path_for(sha).chmod(0o644)
    store.path_for(sha).write_bytes(b"tampered")               # bit rot / tampering
    assert not store.verify(sha)
    assert not store.verify("0" * 64)
    assert list((tmp_path / "img").glob(".put-*")) == []       # no temp files left


def test_disk_full_rejects_pages_with_a_clear_reason(db, settings, world, tmp_path, monkeypatch):
    store = LocalImageStore(tmp_path / "img")
    real = store.put

    def full(data, *, label=""):
        if label.endswith("page 1"):
            raise StorageFullError(errno.ENOSPC, f"image store {store.root} is full: no space left to store the page ({label})")
        return real(data, label=label)

    monkeypatch.setattr(store, "put", full)
    template = load_template(two_page_template())
    (tmp_path / "in").mkdir()
    data, _ = scan(template, ANSWERS[0], candidate=world.roll[0])
    (tmp_path / "in" / "a.png").write_bytes(data)
    report = ingest_path(db, settings, tmp_path / "in", world.subject_code, store=store)
    assert report.rejected == 1 and report.rejects[0]["reason"].startswith("storage_full")
    assert "no space left" in report.rejects[0]["reason"]


def test_multipage_tiff_pdf_and_two_page_scripts(db, settings, world, store, tmp_path):
    batches.attach_template(db, world.subject_code, two_page_template())
    pass_trial(db, world.subject_code, world.users["tech1"])   # a new template needs a new trial (R-OMR-1)
    template = load_template(two_page_template())
    folder = tmp_path / "in"
    folder.mkdir()
    frames = []
    for i, cand in enumerate(world.roll[:2]):
        for page in (1, 2):
            data, _ = scan(template, ANSWERS[i], candidate=cand, page=page, seed=10 * i + page, fmt="png",
                           writing=["11"] if page == 1 else ["12"])
            frames.append(Image.open(io.BytesIO(data)).convert("L"))
    # candidates 1-2 as one multi-page TIFF (4 pages, scan order p1 p2 p1 p2)
    frames[0].save(folder / "01-stack.tif", save_all=True, append_images=frames[1:], compression="tiff_lzw")
    # candidate 3 as a PDF (2 pages), rasterised at ingest
    pdf_pages = []
    for page in (1, 2):
        data, _ = scan(template, ANSWERS[2], candidate=world.roll[2], page=page, seed=40 + page, fmt="png", rotation=0)
        pdf_pages.append(Image.open(io.BytesIO(data)).convert("L"))
    pdf_pages[0].save(folder / "02-cand3.pdf", save_all=True, append_images=pdf_pages[1:], resolution=100)
    # an orphan page 2 with nothing before it is in another batch
    report = ingest_path(db, settings, folder, world.subject_code, store=store, pdf_dpi=100)
    assert (report.accepted, report.rejected) == (6, 0)
    run_nodes_inline(db, store)
    assert batches.list_exceptions(db) == []
    result = batches.settle_batch(db, report.batch_id)
    assert result["assigned_cards"] == 6 and result["responses_created"] == 6 and result["status"] == "closed"
    with db.read() as s:
        pages_per_script = s.execute(select(Card.script_id, func.count()).group_by(Card.script_id)).all()
        assert sorted(n for _, n in pages_per_script) == [2, 2, 2]
        # the containers' original bytes are kept too
        manifest = json.loads(store.get(s.execute(select(batches.ScanBatch.manifest_sha256)).scalar_one()))
    assert all(f["container_stored"] for f in manifest["files"])
    recon = batches.reconcile(db, world.subject_code)
    assert recon["received"] == 3 and recon["incomplete"] == []

    # a lone page 2 (its page 1 missing) cannot be attached: it goes to people
    lone = tmp_path / "lone"
    lone.mkdir()
    data, _ = scan(template, {}, candidate=None, page=2, seed=77, fmt="png")
    (lone / "x.png").write_bytes(data)
    r2 = ingest_path(db, settings, lone, world.subject_code, store=store)
    run_nodes_inline(db, store)
    batches.settle_batch(db, r2.batch_id)
    [ex] = batches.list_exceptions(db, batch_id=r2.batch_id)
    assert ex.reason == "orphan_page"


def test_rescan_is_linked_and_original_kept(db, settings, world, store, tmp_path):
    template = load_template(two_page_template())
    folder = tmp_path / "in"
    folder.mkdir()
    data, _ = scan(template, ANSWERS[0], candidate=world.roll[0], seed=3, fmt="png")
    damaged = np.array(Image.open(io.BytesIO(data)))
    damaged[:, : damaged.shape[1] // 3] = 255          # torn: the left third (two corner marks) is gone
    buf = io.BytesIO()
    Image.fromarray(damaged).save(buf, format="PNG")
    (folder / "torn.png").write_bytes(buf.getvalue())
    batches.attach_template(db, world.subject_code, two_page_template())
    pass_trial(db, world.subject_code, world.users["tech1"])   # a new template needs a new trial (R-OMR-1)
    report = ingest_path(db, settings, folder, world.subject_code, store=store)
    run_nodes_inline(db, store)
    [ex] = batches.list_exceptions(db)
    assert ex.reason == "unreadable"
    rescan_dir = tmp_path / "rescan"
    rescan_dir.mkdir()
    (rescan_dir / "again.png").write_bytes(data)
    u = world.users
    new_card = ingest_rescan(db, settings, rescan_dir, ex.card_id, u["tech1"], store=store)
    run_nodes_inline(db, store)
    batches.propose_resolution(db, ex.entry_id, u["tech1"], {"action": "rescan", "rescan_card_id": new_card})
    batches.confirm_resolution(db, ex.entry_id, u["tech2"])
    batches.settle_batch(db, report.batch_id)
    with db.read() as s:
        original = s.get(Card, ex.card_id)
        fresh = s.get(Card, new_card)
        assert original.status == "void" and fresh.rescan_of_id == original.id and fresh.script_id
        assert store.exists(s.get(PageImage, original.page_image_id).sha256)      # original image kept
        assert s.execute(select(RegisterEntry).where(RegisterEntry.register == "rescan")).scalar_one()


def test_following_page_waits_for_its_identity_page_decision(db, settings, world, store, tmp_path):
    from omr.synthetic import Special
    batches.attach_template(db, world.subject_code, two_page_template())
    pass_trial(db, world.subject_code, world.users["tech1"])   # a new template needs a new trial (R-OMR-1)
    template = load_template(two_page_template())
    folder = tmp_path / "in"
    folder.mkdir()
    answers = dict(ANSWERS[0], **{"3": "C"})
    p1, _ = scan(template, answers, candidate=world.roll[0], seed=1, specials=[Special("erasure", "3", "A", 0.45)])
    p2, _ = scan(template, {}, candidate=None, page=2, seed=2, writing=["12"])
    (folder / "01.png").write_bytes(p1)
    (folder / "02.png").write_bytes(p2)
    report = ingest_path(db, settings, folder, world.subject_code, store=store)
    run_nodes_inline(db, store)
    first = batches.settle_batch(db, report.batch_id)
    assert first["assigned_cards"] == 0          # page 2 waits; it is not an orphan
    [ex] = batches.list_exceptions(db)
    assert ex.reason.startswith("flagged:")
    batches.propose_resolution(db, ex.entry_id, world.users["tech1"], {"action": "accept", "answers": {"3": "C"}})
    batches.confirm_resolution(db, ex.entry_id, world.users["tech2"])
    second = batches.settle_batch(db, report.batch_id)
    assert second["assigned_cards"] == 2 and second["responses_created"] == 2 and second["status"] == "closed"
