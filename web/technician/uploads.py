"""Receiving scanner uploads safely (ASVS 5.2 / 12.x): type and size checks, safe zip extraction.

A zip is unpacked member by member into a staging folder: absolute names, ``..`` parts,
symlinks and device entries are refused, the member count and the total unpacked size
are capped, and a member that inflates beyond a compression ratio limit is refused as a
zip bomb. Sizes are counted while writing (never trusting the header alone).
"""
from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from flask_babel import gettext as _
from werkzeug.utils import secure_filename

SCAN_SUFFIXES = (".pdf", ".tif", ".tiff", ".png", ".jpg", ".jpeg")
UPLOAD_SUFFIXES = (".zip",) + SCAN_SUFFIXES
MAGIC = ((b"PK\x03\x04", ".zip"), (b"%PDF", ".pdf"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"),
         (b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"))


@dataclass(frozen=True)
class Limits:
    max_files: int = 5000               # files in one upload, zip members included
    max_total_bytes: int = 2 * 1024**3  # unpacked bytes of one upload
    max_ratio: int = 100                # unpacked / compressed size of one zip member
    max_member_bytes: int = 512 * 1024**2


class UploadError(ValueError):
    """A refused upload, with a message for the technician."""


def kind_of(head: bytes) -> str | None:
    for magic, suffix in MAGIC:
        if head.startswith(magic):
            return suffix
    return None


def _safe_member_path(name: str) -> PurePosixPath | None:
    """The member's relative path, or None when it would leave the staging folder."""
    name = name.replace("\\", "/")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/") or any(part in ("..", "") for part in p.parts[:-1]) \
            or ".." in p.parts or (len(name) > 1 and name[1] == ":"):
        return None
    parts = [secure_filename(part) for part in p.parts]
    if any(not part for part in parts):
        return None
    return PurePosixPath(*parts)


def extract_zip(source: Path, dest: Path, limits: Limits, budget: list[int]) -> int:
    """Unpack scans from ``source`` into ``dest``; returns the number of files written."""
    try:
        archive = zipfile.ZipFile(source)
    except zipfile.BadZipFile:
        raise UploadError(_("%(name)s is not a readable zip file.", name=source.name)) from None
    written = 0
    with archive:
        members = archive.infolist()
        if len(members) > limits.max_files:
            raise UploadError(_("The zip holds %(n)s entries; at most %(max)s are accepted.",
                                n=len(members), max=limits.max_files))
        for info in members:
            if info.is_dir():
                continue
            rel = _safe_member_path(info.filename)
            if rel is None:
                raise UploadError(_("The zip entry %(name)s points outside the upload folder; it was refused.",
                                    name=info.filename))
            ftype = stat.S_IFMT(info.external_attr >> 16)
            if ftype and ftype != stat.S_IFREG:
                raise UploadError(_("The zip entry %(name)s is a link or special file; it was refused.",
                                    name=info.filename))
            if rel.name.startswith(".") or "__MACOSX" in rel.parts:
                continue
            if not rel.name.lower().endswith(SCAN_SUFFIXES):
                raise UploadError(_("The zip entry %(name)s is not a PDF, TIFF or image file.", name=info.filename))
            if info.file_size > limits.max_member_bytes or \
                    (info.compress_size and info.file_size / max(info.compress_size, 1) > limits.max_ratio
                     and info.file_size > 1024 * 1024):
                raise UploadError(_("The zip entry %(name)s expands too much (a zip bomb?); the upload was refused.",
                                    name=info.filename))
            target = dest / Path(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            try:
                with archive.open(info) as src, open(target, "wb") as out:
                    while True:
                        chunk = src.read(1024 * 1024)
                        if not chunk:
                            break
                        size += len(chunk)
                        budget[0] -= len(chunk)
                        if size > limits.max_member_bytes or budget[0] < 0 or \
                                (size > 1024 * 1024 and size > limits.max_ratio * max(info.compress_size, 1)):
                            raise UploadError(_("The zip expands beyond the size limit (a zip bomb?); "
                                                "the upload was refused."))
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError):
                # a member whose header lies about its size fails the CRC/length check mid-read
                raise UploadError(_("%(name)s is not a readable zip file.", name=source.name)) from None
            written += 1
    return written


def stage_files(files, staging: Path, limits: Limits = Limits()) -> int:
    """Save uploaded files (werkzeug FileStorage) into ``staging``; zips are unpacked.

    Returns the number of scan files staged; raises UploadError with a clear message.
    """
    if len(files) > limits.max_files:
        raise UploadError(_("At most %(max)s files per upload.", max=limits.max_files))
    budget = [limits.max_total_bytes]
    count = 0
    for index, f in enumerate(files):
        original = (f.filename or "").replace("\\", "/")
        rel = _safe_member_path(original) if "/" in original else None
        name = secure_filename(original.rsplit("/", 1)[-1]) or f"upload-{index}"
        if not name.lower().endswith(UPLOAD_SUFFIXES):
            raise UploadError(_("%(name)s is not a zip, PDF, TIFF or image file.", name=original))
        head = f.stream.read(8)
        f.stream.seek(0)
        kind = kind_of(head)
        if kind is None or (kind == ".zip") != name.lower().endswith(".zip"):
            raise UploadError(_("%(name)s does not look like the file type its name says.", name=original))
        # a folder upload keeps its sub-folders (natural order of the pages)
        target = staging / (Path(*rel.parts) if rel is not None else Path(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            target = target.with_name(f"{index}-{target.name}")
        f.save(target)
        size = target.stat().st_size
        budget[0] -= size
        if budget[0] < 0:
            raise UploadError(_("The upload is too large."))
        if kind == ".zip":
            folder = target.with_name(target.stem + "-unzipped")
            folder.mkdir()
            count += extract_zip(target, folder, limits, budget)
            target.unlink()
        else:
            count += 1
    if count == 0:
        raise UploadError(_("The upload holds no scans."))
    return count


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
