"""Scanned-image store: content-addressed, write-once (architecture.md §7, R-DATA-1).

The port is deliberately small (modelled on CTFd's uploaders): ``put`` returns the
SHA-256 of the bytes, which is the object's only name; ``open``/``get`` read it back;
``exists``; ``verify`` re-hashes what is stored (fixity audit). An S3 adapter (key =
sha256, ``ChecksumAlgorithm="SHA256"``, Object Lock) comes later behind the same port.

``LocalImageStore`` keeps ``<root>/ab/cd/<sha256>``. A write goes to a temporary file in
the target directory, is fsynced, then ``os.replace``d into place and the directory is
fsynced. An object that already exists is never overwritten (dedup is free; the bytes
under a name can never change). A full disk raises :class:`StorageFullError` with a
message naming the page, so ingest can reject that page with a clear reason.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class StorageError(OSError):
    """The image store could not store or read an object."""


class StorageFullError(StorageError):
    """No space left on the device holding the image store (ENOSPC/EDQUOT)."""


class ObjectMissing(StorageError, FileNotFoundError):
    pass


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or not _SHA_RE.match(sha):
        raise ValueError(f"not a sha256 hex digest: {sha!r}")
    return sha


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ImageStore(Protocol):
    def put(self, data: bytes | BinaryIO, *, label: str = "") -> str: ...
    def open(self, sha: str) -> BinaryIO: ...
    def get(self, sha: str) -> bytes: ...
    def exists(self, sha: str) -> bool: ...
    def verify(self, sha: str) -> bool: ...


class LocalImageStore:
    """Content-addressed files under ``root`` (``ab/cd/<sha256>``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalImageStore({str(self.root)!r})"

    def path_for(self, sha: str) -> Path:
        sha = _check_sha(sha)
        return self.root / sha[:2] / sha[2:4] / sha

    def exists(self, sha: str) -> bool:
        return self.path_for(sha).is_file()

    def put(self, data: bytes | BinaryIO, *, label: str = "") -> str:
        """Store bytes (or a binary stream); return their sha256. Never overwrites.

        ``label`` (e.g. "scan-0001.tif page 3") is only used in error messages.
        """
        stream: BinaryIO = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
        self.root.mkdir(parents=True, exist_ok=True)
        what = f" ({label})" if label else ""
        tmp_path = None
        try:
            # Spool into a temp file at the store root (same filesystem), hashing as we go.
            fd, tmp_path = tempfile.mkstemp(prefix=".put-", dir=self.root)
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as handle:
                while True:
                    chunk = stream.read(_CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            sha = digest.hexdigest()
            final = self.path_for(sha)
            if final.exists():
                os.unlink(tmp_path)
                tmp_path = None
                return sha
            final.parent.mkdir(parents=True, exist_ok=True)
            # os.link refuses to replace an existing file: a racing writer of the same
            # bytes wins and we drop our copy, so a stored object is never overwritten.
            try:
                os.link(tmp_path, final)
            except FileExistsError:
                pass
            os.unlink(tmp_path)
            tmp_path = None
            _fsync_dir(final.parent)
            return sha
        except OSError as exc:
            if tmp_path is not None:
                try:
                    os.unlink(tmp_path)
                except OSError:
                    pass
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(
                    exc.errno, f"image store {self.root} is full: no space left to store the page{what}; "
                    "free space or move MC_IMAGE_STORE, then ingest the rejected pages again") from exc
            if isinstance(exc, StorageError):
                raise
            raise StorageError(exc.errno, f"cannot store image{what} in {self.root}: {exc}") from exc

    def open(self, sha: str) -> BinaryIO:
        path = self.path_for(sha)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise ObjectMissing(errno.ENOENT, f"image {sha} is not in the store {self.root}") from exc

    def get(self, sha: str) -> bytes:
        with self.open(sha) as handle:
            return handle.read()

    def verify(self, sha: str) -> bool:
        """Re-hash the stored object; False if missing or altered (fixity audit)."""
        try:
            handle = self.open(sha)
        except ObjectMissing:
            return False
        digest = hashlib.sha256()
        with handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
        return digest.hexdigest() == sha


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_store(settings) -> ImageStore:
    """The image store named by ``settings.image_store`` (a directory; S3 comes later)."""
    location = str(settings.image_store)
    if location.startswith("s3://"):
        raise NotImplementedError("the S3 image store adapter is not part of this build; use a directory")
    return LocalImageStore(location)
