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


# start-of-frame markers (not DHT C4, JPG C8, DAC CC)
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def _jpeg_header(data: bytes) -> tuple[int, int, tuple[float, float] | None] | None:
    """(width, height, dpi or None) of a plain JPEG, read the way Pillow reads it, or
    None for anything but a clean run of segments up to the first scan (and for Exif,
    whose resolution Pillow also reads): Pillow decides those. Pillow parses every
    table on the way in Python, which costs as much as the rest of the header checks."""
    n = len(data)
    pos = 2                                        # after the start-of-image marker
    size = dpi = None
    while pos + 4 <= n and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:                         # start of scan: the header is complete
            return None if size is None else (size[0], size[1], dpi)
        length = (data[pos + 2] << 8) | data[pos + 3]
        if not 0xC0 <= marker <= 0xFE or 0xD0 <= marker <= 0xD9 or marker == 0xE1 \
                or length < 2 or pos + 2 + length > n:
            return None
        body = data[pos + 4:pos + 2 + length]
        if marker == 0xE0 and body.startswith(b"JFIF") and len(body) >= 12:
            unit, density = body[7], ((body[8] << 8) | body[9], (body[10] << 8) | body[11])
            if unit == 1:
                dpi = density
            elif unit == 2:                        # dots per cm
                dpi = (density[0] * 2.54, density[1] * 2.54)
        elif marker in _SOF:
            if len(body) < 6 or body[0] != 8 or body[5] not in (1, 3, 4):
                return None                        # Pillow names the problem
            size = ((body[3] << 8) | body[4], (body[1] << 8) | body[2])
        pos += 2 + length
    return None


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
    # Header only: the size without decoding pixels.
    header = _jpeg_header(data) if fmt == "jpeg" else None
    if header is not None:
        width, height, dpi = header
    else:
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
