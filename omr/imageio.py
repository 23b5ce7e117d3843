"""Safe decoding of scanned images: header checks before decoding (decompression bomb,
truncation, unknown format), then a single grey decode. Errors are returned as reason
codes, never raised, so one bad file cannot stop a batch."""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .flags import Reason
from .settings import Settings

_SIGNATURES = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"BM": "bmp",
}


@dataclass
class Decoded:
    grey: np.ndarray | None
    format: str | None
    sha256: str | None
    n_bytes: int
    width: int | None = None
    height: int | None = None
    dpi_hint: float | None = None
    error: Reason | None = None
    detail: str = ""


def _sniff(data: bytes) -> str | None:
    for sig, fmt in _SIGNATURES.items():
        if data.startswith(sig):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _looks_truncated(data: bytes, fmt: str) -> bool:
    if fmt == "jpeg":
        tail = data[-64:].rstrip(b"\x00\r\n ")
        return not tail.endswith(b"\xff\xd9")
    if fmt == "png":
        return b"IEND" not in data[-32:]
    return False


def decode_bytes(data: bytes, settings: Settings, sha256: str | None = None) -> Decoded:
    """``sha256``: hex digest of ``data`` when the caller already has it (ingest hashes
    every page when storing it); hashing costs ~5 % of a JPEG decode, so not twice."""
    n = len(data)
    if n == 0:
        return Decoded(None, None, None, 0, error=Reason.EMPTY_INPUT, detail="zero-byte input")
    sha = sha256 or hashlib.sha256(data).hexdigest()
    if n > settings.max_bytes:
        return Decoded(None, None, sha, n, error=Reason.IMAGE_TOO_LARGE, detail=f"{n} bytes")
    fmt = _sniff(data)
    if fmt is None:
        return Decoded(None, None, sha, n, error=Reason.NOT_AN_IMAGE,
                       detail="unknown file signature (expected JPEG, PNG, TIFF, BMP or WebP)")
    # Header only: Pillow parses the size without decoding pixels.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                dpi = im.info.get("dpi")
    except Image.DecompressionBombError as exc:
        return Decoded(None, fmt, sha, n, error=Reason.IMAGE_TOO_LARGE, detail=str(exc))
    except Exception as exc:  # noqa: BLE001 - any header failure is a per-card error
        reason = Reason.TRUNCATED_IMAGE if n < 64 else Reason.DECODE_FAILED
        return Decoded(None, fmt, sha, n, error=reason, detail=f"header: {exc}")
    if width * height > settings.max_pixels:
        return Decoded(None, fmt, sha, n, width, height, error=Reason.IMAGE_TOO_LARGE,
                       detail=f"{width}x{height} px exceeds the limit of {settings.max_pixels} px")
    if min(width, height) < settings.min_side_px:
        return Decoded(None, fmt, sha, n, width, height, error=Reason.IMAGE_TOO_SMALL,
                       detail=f"{width}x{height} px")
    if _looks_truncated(data, fmt):
        return Decoded(None, fmt, sha, n, width, height, error=Reason.TRUNCATED_IMAGE,
                       detail=f"{fmt} data ends early")
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None or grey.size == 0:
        return Decoded(None, fmt, sha, n, width, height, error=Reason.DECODE_FAILED,
                       detail="decoder returned no image")
    dpi_hint = None
    if dpi and isinstance(dpi, tuple) and 100 <= float(dpi[0]) <= 1200:
        dpi_hint = float(dpi[0])
    return Decoded(grey, fmt, sha, n, grey.shape[1], grey.shape[0], dpi_hint)


def from_array(arr: np.ndarray, settings: Settings) -> Decoded:
    """Accept an already decoded image (grey, BGR or BGRA; uint8 or uint16)."""
    a = np.asarray(arr)
    if a.size == 0 or a.ndim not in (2, 3):
        return Decoded(None, "array", None, 0, error=Reason.NOT_AN_IMAGE,
                       detail=f"array of shape {a.shape}")
    if a.shape[0] * a.shape[1] > settings.max_pixels:
        return Decoded(None, "array", None, 0, a.shape[1], a.shape[0], error=Reason.IMAGE_TOO_LARGE)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        if not np.issubdtype(a.dtype, np.number):
            return Decoded(None, "array", None, 0, error=Reason.NOT_AN_IMAGE, detail=str(a.dtype))
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3:
        if a.shape[2] == 1:
            a = a[:, :, 0]
        elif a.shape[2] == 3:
            a = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)
        elif a.shape[2] == 4:
            a = cv2.cvtColor(a, cv2.COLOR_BGRA2GRAY)
        else:
            return Decoded(None, "array", None, 0, error=Reason.NOT_AN_IMAGE, detail=f"shape {a.shape}")
    a = np.ascontiguousarray(a)
    if min(a.shape) < settings.min_side_px:
        return Decoded(None, "array", None, 0, a.shape[1], a.shape[0], error=Reason.IMAGE_TOO_SMALL)
    sha = hashlib.sha256(a.tobytes()).hexdigest()
    return Decoded(a, "array", sha, int(a.nbytes), a.shape[1], a.shape[0])
