"""Serving scanned images after an authorisation check (architecture.md §7; ASVS 8.2.2).

Callers check first (a live lease, or the item's team leader); this module only
streams the bytes with ``Cache-Control: private`` and the sha as ETag. Item clips are
cut at ingest without identity regions (R-SEC-1).
"""
from __future__ import annotations

from flask import Response, abort, current_app, request

from marking.storage import ObjectMissing, open_store

_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"II*\x00", "image/tiff"),
          (b"MM\x00*", "image/tiff"), (b"RIFF", "image/webp"), (b"GIF8", "image/gif"))


def sniff(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return "application/octet-stream"


def send_image(sha: str | None):
    if not sha:
        abort(404)
    etag = f'"{sha}"'
    if request.headers.get("If-None-Match") == etag:
        response = Response(status=304)
    else:
        try:
            data = open_store(current_app.config["MC_SETTINGS"]).get(sha)
        except (ObjectMissing, FileNotFoundError, ValueError):
            abort(404)
        response = Response(data, mimetype=sniff(data))
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = "private, max-age=600"
    response.headers["Content-Disposition"] = "inline"
    return response
