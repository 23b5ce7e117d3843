"""Scanned-image store: content-addressed, write-once (architecture.md §7, R-DATA-1).

The port is deliberately small (modelled on CTFd's uploaders): ``put`` returns the
SHA-256 of the bytes, which is the object's only name; ``open``/``get`` read it back;
``exists``; ``verify`` re-hashes what is stored (fixity audit). ``S3ImageStore`` (key =
sha256, ``ChecksumAlgorithm="SHA256"``, Object Lock on the bucket) implements the same port.

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
import threading
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


class ChecksumMismatch(StorageError):
    """The bytes read back do not match the checksum recorded at upload (S3 store)."""


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


class S3ImageStore:
    """Content-addressed objects in an S3-compatible bucket: key ``<prefix><sha256>``.

    Uploads send ``ChecksumAlgorithm="SHA256"`` with the precomputed checksum, so the
    service verifies the bytes it received and keeps the checksum; the sha256 is also
    stored as object metadata (``mc-sha256``). An object that already exists is never
    re-uploaded (``IfNoneMatch="*"`` guards the race; a store that rejects the
    condition is treated like an existing object only after a HEAD confirms it).
    For the 30-year originals enable bucket versioning + Object Lock (docs/deploy.md).
    ``client`` lets tests inject a boto3 client; otherwise one is built from settings.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client=None, endpoint_url: str | None = None,
                 region: str | None = None, spool_limit: int = 64 * _CHUNK):
        if not bucket:
            raise ValueError("S3 image store needs a bucket name (s3://bucket/prefix)")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.spool_limit = spool_limit
        if client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise StorageError(errno.ENOPKG if hasattr(errno, "ENOPKG") else errno.ENOENT,
                                   "MC_IMAGE_STORE is an s3:// URL but boto3 is not installed: "
                                   "pip install 'marking-centre[s3]'") from exc
            client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None,
                                  config=Config(retries={"max_attempts": 5, "mode": "standard"},
                                                request_checksum_calculation="when_required",
                                                response_checksum_validation="when_supported"))
        self.client = client

    def __repr__(self) -> str:
        return f"S3ImageStore('s3://{self.bucket}/{self.prefix}')"

    def key_for(self, sha: str) -> str:
        return self.prefix + _check_sha(sha)

    @staticmethod
    def _code(exc) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def _head(self, sha: str) -> dict | None:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key_for(sha), ChecksumMode="ENABLED")
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise StorageError(errno.EIO, f"cannot reach image {sha} in {self!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(errno.EIO, f"cannot reach image {sha} in {self!r}: {exc}") from exc

    def exists(self, sha: str) -> bool:
        return self._head(sha) is not None

    def put(self, data: bytes | BinaryIO, *, label: str = "") -> str:
        """Upload bytes (or a binary stream) under their sha256; return it. Never overwrites."""
        import base64

        from botocore.exceptions import BotoCoreError, ClientError

        what = f" ({label})" if label else ""
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
            digest = hashlib.sha256(body)
            spool: BinaryIO = io.BytesIO(body)
        else:
            digest = hashlib.sha256()
            spool = tempfile.SpooledTemporaryFile(max_size=self.spool_limit)
            for chunk in iter(lambda: data.read(_CHUNK), b""):
                digest.update(chunk)
                spool.write(chunk)
            spool.seek(0)
        sha = digest.hexdigest()
        try:
            if self.exists(sha):
                return sha
            checksum = base64.b64encode(digest.digest()).decode("ascii")
            try:
                self.client.put_object(Bucket=self.bucket, Key=self.key_for(sha), Body=spool,
                                       ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum,
                                       Metadata={"mc-sha256": sha}, IfNoneMatch="*")
            except ClientError as exc:
                # 412: a racing writer stored the same bytes first; nothing to overwrite.
                if self._code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict") \
                        and self.exists(sha):
                    return sha
                if self._code(exc) in ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"):
                    raise StorageError(errno.EIO, f"the store rejected image {sha}{what}: "
                                                  f"checksum mismatch in transit") from exc
                raise StorageError(errno.EIO, f"cannot store image{what} in {self!r}: {exc}") from exc
            except BotoCoreError as exc:
                raise StorageError(errno.EIO, f"cannot store image{what} in {self!r}: {exc}") from exc
        finally:
            spool.close()
        return sha

    def open(self, sha: str) -> BinaryIO:
        return io.BytesIO(self.get(sha))

    def get(self, sha: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key_for(sha), ChecksumMode="ENABLED")
            return response["Body"].read()   # botocore checks the recorded SHA-256 while reading
        except FlexibleChecksumError as exc:
            raise ChecksumMismatch(errno.EIO, f"image {sha} in {self!r} does not match the checksum "
                                              f"recorded at upload: {exc}") from exc
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectMissing(errno.ENOENT, f"image {sha} is not in the store {self!r}") from exc
            raise StorageError(errno.EIO, f"cannot read image {sha} from {self!r}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(errno.EIO, f"cannot read image {sha} from {self!r}: {exc}") from exc

    def verify(self, sha: str) -> bool:
        """Re-hash the stored bytes; False if missing or altered (fixity audit).

        Also compares the checksum the service recorded at upload, when it returns one.
        """
        import base64
        try:
            data = self.get(sha)
        except (ObjectMissing, ChecksumMismatch):
            return False
        if hashlib.sha256(data).hexdigest() != sha:
            return False
        head = self._head(sha) or {}
        recorded = head.get("ChecksumSHA256")
        if recorded and "-" not in recorded:
            return base64.b64decode(recorded).hex() == sha
        return True


def parse_s3_url(location: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ("bucket", "some/prefix")."""
    if not location.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {location!r}")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"MC_IMAGE_STORE={location!r} names no bucket (expected s3://bucket/prefix)")
    return bucket, prefix


_S3_STORES: dict[tuple, "S3ImageStore"] = {}
_S3_LOCK = threading.Lock()


def open_store(settings) -> ImageStore:
    """The image store named by ``settings.image_store``: a directory or ``s3://bucket/prefix``.

    S3 connection settings: MC_S3_ENDPOINT_URL (any S3-compatible service), MC_S3_REGION;
    credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID/…, a profile or a role).
    """
    location = str(settings.image_store)
    if location.startswith("s3://"):
        bucket, prefix = parse_s3_url(location)
        endpoint, region = getattr(settings, "s3_endpoint_url", None), getattr(settings, "s3_region", None)
        key = (bucket, prefix, endpoint, region)
        with _S3_LOCK:   # boto3 clients are thread-safe and costly to build: one per location
            store = _S3_STORES.get(key)
            if store is None:
                store = _S3_STORES[key] = S3ImageStore(bucket, prefix, endpoint_url=endpoint, region=region)
        return store
    return LocalImageStore(location)
