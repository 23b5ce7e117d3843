"""Image store full: ingest rejects the pages that do not fit with a clear reason, the
batch goes on with the other pages and finishes with a report.

The store is a real 1 MiB tmpfs (``mount -t tmpfs -o size=1m``; needs root — otherwise
the test skips) — ENOSPC comes from the kernel, not from a mock. Pages are ~170 kB
JPEG scans, so the first few fit and the rest do not.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from marking.storage import LocalImageStore
from omr.ingest import ingest_path
from omr.template import load_template

from tests.batches.batch_cards import scan, small_template
from tests.batches.batch_helpers import ANSWERS
from tests.batches.conftest import ROLL, build_world

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tiny_store(tmp_path):
    mnt = tmp_path / "store"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_store_full_rejects_pages_and_the_batch_goes_on(db, settings, tmp_path, tiny_store):
    world = build_world(db)
    template = load_template(small_template())
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        data, _ = scan(template, ANSWERS[i % len(ANSWERS)], candidate=ROLL[i], seed=500 + i, dpi=100, fmt="jpeg")
        (folder / f"{i:02d}.jpg").write_bytes(data)
    sizes = [p.stat().st_size for p in folder.iterdir()]
    assert sum(sizes) > 1024 * 1024, f"pages too small to fill the store: {sum(sizes)} bytes"
    store = LocalImageStore(tiny_store)
    report = ingest_path(db, settings, folder, world.subject_code, store=store)
    assert report.files == 12 and report.pages == 12
    assert report.accepted >= 1, report.as_dict()
    assert report.rejected >= 1, report.as_dict()
    assert report.accepted + report.rejected + report.duplicates == 12
    for reject in report.rejects:
        assert reject["reason"].startswith("storage_full"), reject
        assert "no space left" in reject["reason"], reject
    # no half-written objects or temp files left behind in the store
    leftovers = [p for p in tiny_store.rglob("*") if p.is_file() and p.name.startswith(".put-")]
    assert leftovers == []
    for p in tiny_store.rglob("*"):
        if p.is_file():
            assert store.verify(p.name), f"corrupt object {p}"
