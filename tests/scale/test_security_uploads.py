"""Upload fuzzing of the technician upload endpoint (/technician/upload) and of ingest.

Refusals at the endpoint (corrupt files, wrong magic, path traversal names in archives,
absolute names, symlinks, zip bombs by ratio and by lying headers, huge declared sizes,
too many members, truncated archives): a clear message, no batch, the staging folder
removed, nothing written outside the upload folder. Names that are merely odd
(``../../etc/passwd.png`` as a plain upload) are sanitised into the staging folder.
Content that passes the type check but is not a usable image (truncated PNG, empty file,
decompression bomb, garbage PDF/TIFF) is fuzzed through ``omr.ingest.ingest_path``:
each becomes a rejected page with a reason and the batch finishes.
"""
from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage

from marking.models import ScanBatch
from omr.ingest import ingest_path
from web.technician.uploads import Limits, UploadError, stage_files

from tests.web.webhelpers import build_world, login, png

pytestmark = pytest.mark.timeout(120)
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def zip_bytes(members: list[tuple[str, bytes]], *, symlink: str | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            z.writestr(info, "/etc/passwd")
    return out.getvalue()


def lie_about_size(data: bytes, declared: int) -> bytes:
    """Patch the uncompressed size in the local header and the central directory."""
    b = bytearray(data)
    lh = b.find(b"PK\x03\x04")
    struct.pack_into("<I", b, lh + 22, declared)
    cd = b.find(b"PK\x01\x02")
    struct.pack_into("<I", b, cd + 24, declared)
    return bytes(b)


@pytest.fixture
def app(settings, db):
    from web import create_app
    app = create_app(settings, db, config={"TESTING": True,
                                           "MC_UPLOAD_LIMITS": Limits(max_files=20, max_total_bytes=50 * 1024**2,
                                                                      max_member_bytes=20 * 1024**2)})
    yield app
    app.extensions["mc_live"].stop()


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@SQLITE_ONLY
def test_upload_endpoint_refuses_hostile_files(app, db, settings, tmp_path):
    build_world(db, settings, responses=1)
    tech = login(app, "tech")
    uploads = settings.data_dir / "uploads"
    outside_before = snapshot(tmp_path)
    passwd_mtime = os.stat("/etc/passwd").st_mtime
    zeros = b"\x00" * (15 * 1024 * 1024)
    good = png()
    cases = {
        "random bytes named .png": [("scan.png", os.urandom(4096))],
        "zip named .png": [("scan.png", zip_bytes([("a.png", good)]))],
        "png named .zip": [("scans.zip", good)],
        "text file": [("notes.txt", b"hello")],
        "traversal in zip": [("scans.zip", zip_bytes([("../../etc/passwd.png", good)]))],
        "deep traversal in zip": [("scans.zip", zip_bytes([("a/../../../../tmp/x.png", good)]))],
        "absolute name in zip": [("scans.zip", zip_bytes([("/etc/passwd.png", good)]))],
        "windows drive in zip": [("scans.zip", zip_bytes([("C:\\windows\\x.png", good)]))],
        "backslash traversal in zip": [("scans.zip", zip_bytes([("..\\..\\x.png", good)]))],
        "symlink in zip": [("scans.zip", zip_bytes([("a.png", good)], symlink="link.png"))],
        "non-scan member": [("scans.zip", zip_bytes([("evil.sh", b"#!/bin/sh\nrm -rf /\n")]))],
        "zip bomb (ratio)": [("scans.zip", zip_bytes([("bomb.png", zeros)]))],
        "zip bomb (lying header)": [("scans.zip", lie_about_size(zip_bytes([("bomb.png", zeros)]), 1000))],
        "huge declared size": [("scans.zip", lie_about_size(zip_bytes([("a.png", good)]), 0xFFFFFFFF))],
        "too many members": [("scans.zip", zip_bytes([(f"p{i}.png", good) for i in range(25)]))],
        "truncated zip": [("scans.zip", zip_bytes([("a.png", good)])[:60])],
        "nested zip": [("scans.zip", zip_bytes([("inner.zip", zip_bytes([("a.png", good)]))]))],
        "empty upload": [],
    }
    for label, files in cases.items():
        data = {"subject": "00015", "code": f"fuzz-{abs(hash(label)) % 10**6}",
                "files": [(io.BytesIO(content), name) for name, content in files]}
        r = tech.post("/technician/upload", data=data, content_type="multipart/form-data")
        assert r.status_code in (302, 303, 400, 413), (label, r.status_code)
        assert "/technician/batches/" not in r.headers.get("Location", ""), label
        page = tech.get("/technician/").get_data(as_text=True) if r.status_code in (302, 303) else ""
        assert r.status_code != 302 or any(w in page for w in ("refused", "not", "too", "zip", "Choose", "拒绝", "不")), label
        with db.read() as s:
            assert s.execute(select(func.count()).select_from(ScanBatch)).scalar_one() == 0, label
        leftovers = [p for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []
        assert leftovers == [], (label, leftovers)
    assert os.stat("/etc/passwd").st_mtime == passwd_mtime
    new_outside = {p for p in snapshot(tmp_path) - outside_before
                   if not p.startswith("data/uploads") and "sqlite" not in p and not p.startswith("data/")}
    assert new_outside == set(), new_outside
    assert not (tmp_path / "etc").exists() and not Path("/tmp/x.png").exists()


def test_odd_names_are_sanitised_into_staging(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    good = png()
    files = [FileStorage(io.BytesIO(good), filename="../../etc/passwd.png"),
             FileStorage(io.BytesIO(good), filename="/abs/olute.png"),
             FileStorage(io.BytesIO(good), filename="dir/../../x.png"),
             FileStorage(io.BytesIO(good), filename="..png")]
    try:
        n = stage_files(files, staging)
    except UploadError:
        n = 0   # refusing is as good as sanitising
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert staging in p.parents, p
    assert n in (0, 3, 4)


@SQLITE_ONLY
def test_ingest_rejects_corrupt_pages_and_finishes(db, settings, tmp_path):
    from tests.batches.conftest import build_world as batch_world
    world = batch_world(db)
    folder = tmp_path / "in"
    folder.mkdir()
    good = png()
    (folder / "01-truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "02-empty.png").write_bytes(b"")
    (folder / "03-garbage.tif").write_bytes(b"II*\x00" + os.urandom(2000))
    (folder / "04-garbage.pdf").write_bytes(b"%PDF-1.4\n" + os.urandom(2000))
    bomb = io.BytesIO()
    Image.new("1", (40000, 40000), 1).save(bomb, "PNG")      # 1.6 gigapixels in ~200 kB
    (folder / "05-bomb.png").write_bytes(bomb.getvalue())
    (folder / "06-jpeg-header-only.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)
    report = ingest_path(db, settings, folder, world.subject_code)
    assert report.files == 6
    assert report.accepted == 0 and report.rejected >= 6, report.as_dict()
    for reject in report.rejects:
        assert reject["reason"], reject
    assert report.manifest_sha256
