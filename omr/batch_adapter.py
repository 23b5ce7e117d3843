"""The one place where the scanner-batch pipeline touches the OMR library.

Everything the batch pipeline (``omr.ingest``, ``omr.worker``) needs from ``omr`` goes
through here, so a change of the library's API is a change of this file only:

* ``load_batch_template(body)`` — the batch's frozen template (R-OMR-1), hash checked;
* ``RECOGNITION_VERSION`` / ``SETTINGS_HASH`` — what a batch freezes;
* ``read(data, template, method, …)`` — ``omr.reading.read_card``, canonical JSON text;
* ``cut_clips(data, template, reading, store)`` — ``omr.regions.cut_regions`` →
  anonymous item images (identity regions blanked, R-SEC-1) in the image store, with
  ink density (per-mille) and pre-flags ``near_empty`` / ``writing_outside``;
* ``check_image(data)`` / ``explode_file(path)`` — header checks and PDF/TIFF pages
  (pure image work: pypdfium2, Pillow, OpenCV).
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
from PIL import Image

from .reading import read_card, reading_json
from .regions import cut_regions, png_bytes
from .settings import DEFAULT_SETTINGS, RECOGNITION_VERSIONS
from .template import Template, load_template

RECOGNITION_VERSION = "+".join(RECOGNITION_VERSIONS[m] for m in ("a", "b"))
SETTINGS_HASH = DEFAULT_SETTINGS.hash
CLIP_DPI = 100          # item images for markers: 100 dpi grey PNG is legible and small
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
PDF_SUFFIXES = {".pdf"}


class TemplateMismatch(RuntimeError):
    pass


def load_batch_template(body: str | dict, expected_hash: str | None = None) -> Template:
    template = load_template(json.loads(body) if isinstance(body, str) else body)
    if expected_hash is not None and template.content_hash != expected_hash:
        raise TemplateMismatch(f"template hash {template.content_hash} != frozen {expected_hash} (R-OMR-1)")
    return template


def read(data: bytes, template: Template, method: str, *, roll=None, expected_subject: str | None = None,
         page: int | None = None) -> tuple[dict[str, Any], str]:
    """(reading, canonical JSON text). Never raises for a bad image (status "error")."""
    result = read_card(data, template, method, page=page, roll=roll, expected_subject=expected_subject)
    return result, reading_json(result)


def decode_grey(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def cut_clips(data: bytes, template: Template, reading: dict[str, Any], store, *,
              grey: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Cut, anonymise and store this page's subjective item images (one clip per item).

    Several regions of one item on the page are stacked top to bottom into one image.
    Ink density is the area-weighted dark share of the parts, in per-mille.
    """
    if reading.get("status") == "error" or "geometry" not in reading:
        return []
    page_code = (reading.get("page") or {}).get("used")
    if page_code is None or not template.page(int(page_code)).answer_regions:
        return []
    if grey is None:
        scan_dpi = float(reading.get("dpi") or 0)
        if scan_dpi >= 1.8 * CLIP_DPI:
            # Decode at half size (JPEG does this in the DCT: much cheaper) and map the
            # homography onto the reduced pixel grid: x_r = (x_f - 0.5) / 2.
            grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_2)
            if grey is not None:
                half = np.array([[0.5, 0, -0.25], [0, 0.5, -0.25], [0, 0, 1]])
                h = np.array(reading["geometry"]["h_mm_to_px"], dtype=np.float64)
                reading = dict(reading, geometry=dict(reading["geometry"], h_mm_to_px=(half @ h).tolist()))
        else:
            grey = decode_grey(data)
        if grey is None:
            return []
    cuts = cut_regions(grey, template, reading, dpi=CLIP_DPI)
    by_item: dict[str, list] = {}
    for cut in cuts:
        by_item.setdefault(cut.item, []).append(cut)
    clips = []
    for item, parts in by_item.items():
        parts.sort(key=lambda c: c.index)
        width = max(p.image.shape[1] for p in parts)
        padded = [np.pad(p.image, ((0, 0), (0, width - p.image.shape[1])), constant_values=255) for p in parts]
        image = padded[0] if len(padded) == 1 else np.vstack(padded)
        areas = [p.image.size for p in parts]
        ink = sum(p.ink_share * a for p, a in zip(parts, areas)) / max(1, sum(areas))
        flags = []
        if all(p.near_empty for p in parts):
            flags.append("near_empty")      # the marker confirms; never an automatic zero
        if any(p.writing_outside for p in parts):
            flags.append("writing_outside")
        sha = store.put(png_bytes(image), label=f"item {item} clip")
        clips.append({"item_code": item, "sha256": sha, "ink_density_pm": int(round(ink * 1000)),
                      "preflags": flags, "template_hash": template.content_hash})
    return clips


# --------------------------------------------------------------------------- files and pages

_SIGNATURES = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"II*\x00": "tiff", b"MM\x00*": "tiff"}


def sniff(data: bytes) -> str | None:
    if data.startswith(b"%PDF-"):
        return "pdf"
    for sig, fmt in _SIGNATURES.items():
        if data.startswith(sig):
            return fmt
    return None


def check_image(data: bytes) -> tuple[int | None, int | None, str | None]:
    """(width, height, reject reason or None) from the header, without decoding pixels."""
    if not data:
        return None, None, "empty_input: zero-byte file"
    fmt = sniff(data)
    if fmt not in ("jpeg", "png", "tiff"):
        return None, None, "not_an_image: unknown file signature (expected JPEG, PNG, TIFF or PDF)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:
        return None, None, f"image_too_large: {exc}"[:200]
    except Exception as exc:  # noqa: BLE001 - any header failure rejects this page only
        return None, None, f"decode_failed: header unreadable ({exc})"[:200]
    if width * height > DEFAULT_SETTINGS.max_pixels:
        return width, height, f"image_too_large: {width}x{height} px"
    if min(width, height) < DEFAULT_SETTINGS.min_side_px:
        return width, height, f"image_too_small: {width}x{height} px"
    if fmt == "jpeg" and not data[-64:].rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return width, height, "truncated_image: JPEG data ends early"
    if fmt == "png" and b"IEND" not in data[-32:]:
        return width, height, "truncated_image: PNG data ends early"
    return width, height, None


@dataclass
class PageData:
    page_no: int
    data: bytes | None
    width: int | None = None
    height: int | None = None
    reject: str | None = None


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def explode(data: bytes, *, pdf_dpi: float = 200) -> tuple[bool, Iterator[PageData]]:
    """(is_container, pages). A PDF or multi-page TIFF is a container: its pages are
    rasterised/extracted to lossless grey PNG (the container's own bytes are kept as the
    original). A single image is its own page, bytes untouched."""
    fmt = sniff(data)
    if fmt == "pdf":
        return True, _pdf_pages(data, pdf_dpi)
    if fmt == "tiff":
        try:
            with Image.open(io.BytesIO(data)) as im:
                frames = getattr(im, "n_frames", 1)
        except Exception as exc:  # noqa: BLE001
            return False, iter([PageData(1, None, reject=f"decode_failed: TIFF unreadable ({exc})"[:200])])
        if frames > 1:
            return True, _tiff_pages(data, frames)
    width, height, reason = check_image(data)
    return False, iter([PageData(1, None if reason else data, width, height, reason)])


def _tiff_pages(data: bytes, frames: int) -> Iterator[PageData]:
    with Image.open(io.BytesIO(data)) as im:
        for n in range(frames):
            try:
                im.seek(n)
                arr = np.asarray(im.convert("L"))
                if min(arr.shape) < DEFAULT_SETTINGS.min_side_px:
                    yield PageData(n + 1, None, arr.shape[1], arr.shape[0], f"image_too_small: {arr.shape[1]}x{arr.shape[0]} px")
                    continue
                yield PageData(n + 1, _png(arr), arr.shape[1], arr.shape[0])
            except Exception as exc:  # noqa: BLE001 - one bad frame rejects that page only
                yield PageData(n + 1, None, reject=f"decode_failed: TIFF page {n + 1} ({exc})"[:200])


def _pdf_pages(data: bytes, dpi: float) -> Iterator[PageData]:
    import pypdfium2 as pdfium
    try:
        pdf = pdfium.PdfDocument(data)
    except Exception as exc:  # noqa: BLE001
        yield PageData(1, None, reject=f"decode_failed: PDF unreadable ({exc})"[:200])
        return
    try:
        for n in range(len(pdf)):
            try:
                page = pdf[n]
                bitmap = page.render(scale=dpi / 72, grayscale=True)
                arr = np.array(bitmap.to_numpy())
                if arr.ndim == 3:
                    arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY) if arr.shape[2] >= 3 else arr[:, :, 0]
                yield PageData(n + 1, _png(arr), arr.shape[1], arr.shape[0])
            except Exception as exc:  # noqa: BLE001
                yield PageData(n + 1, None, reject=f"decode_failed: PDF page {n + 1} ({exc})"[:200])
    finally:
        pdf.close()


def supported(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES | PDF_SUFFIXES
