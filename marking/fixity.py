"""Fixity audit of the image store (R-DATA-1: answer-card images are kept 30 years).

Every image the database refers to — scanned pages (``page_image``), cut answer regions
(``item_clip``) and the responses markers see (``response.image_sha256``) — is named by
the SHA-256 of its bytes. :func:`audit_images` re-reads each one from the store
(directory or S3) and re-hashes it: a missing or altered object is named with the
first row that refers to it. Storage media and object stores lose or damage data
silently over decades; only reading it back finds out, so run it regularly (a shard a
night covers the store in N nights: ``--shard K/N``).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from sqlalchemy import literal, select, union_all

from .models import PageImage, Response
from .models.scanning import ItemClip
from .storage import ImageStore, StorageError

# Where an image is referred to, in the order a problem is reported.
_REFERENCES = (("page_image", PageImage.sha256, PageImage.id), ("item_clip", ItemClip.sha256, ItemClip.id),
               ("response", Response.image_sha256, Response.id))


@dataclass
class FixityReport:
    checked: int = 0
    skipped: int = 0                                           # outside the shard
    missing: list[dict[str, Any]] = field(default_factory=list)
    altered: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)   # the store failed to answer
    started_at: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered or self.unreadable)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "skipped": self.skipped, "missing": self.missing,
                "altered": self.altered, "unreadable": self.unreadable, "started_at": self.started_at,
                "seconds": round(self.seconds, 3)}


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` → (K, N) with 0 ≤ K < N; None → the whole store (0, 1)."""
    if not text:
        return 0, 1
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError as exc:
        raise ValueError(f"a shard is K/N with whole numbers, e.g. 3/30; got {text!r}") from exc
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"shard {text!r}: need 0 <= K < N")
    return k, n


def in_shard(sha: str, shard: tuple[int, int]) -> bool:
    k, n = shard
    return n == 1 or int(sha[:12], 16) % n == k


def referenced_images(session) -> Iterator[tuple[str, str, int]]:
    """(sha, table, row id) for every reference, grouped by sha (ordered), streamed."""
    parts = [select(column.label("sha"), literal(table).label("tbl"), row_id.label("row_id"))
             .where(column.is_not(None)) for table, column, row_id in _REFERENCES]
    query = union_all(*parts).subquery()
    statement = (select(query.c.sha, query.c.tbl, query.c.row_id).order_by(query.c.sha)
                 .execution_options(stream_results=True, yield_per=2000))
    for row in session.execute(statement):
        yield row.sha, row.tbl, row.row_id


def audit_images(db, store: ImageStore, *, shard: tuple[int, int] = (0, 1),
                 progress: Callable[[dict[str, Any]], None] | None = None,
                 progress_every: int = 500) -> FixityReport:
    """Re-hash every referenced image in ``store`` (or one shard of them); see the module doc."""
    started = dt.datetime.now(dt.timezone.utc)
    report = FixityReport(started_at=started.isoformat())
    last_sha = None
    with db.read() as session:
        for sha, table, row_id in referenced_images(session):
            if sha == last_sha:
                continue   # each object once; the first reference names it
            last_sha = sha
            if not in_shard(sha, shard):
                report.skipped += 1
                continue
            where = {"sha256": sha, "table": table, "id": row_id}
            try:
                good = store.verify(sha)
                if not good:
                    (report.altered if store.exists(sha) else report.missing).append(where)
            except StorageError as exc:
                report.unreadable.append({**where, "error": str(exc)})
            report.checked += 1
            if progress and report.checked % progress_every == 0:
                progress(_progress_event(report, done=False))
    report.seconds = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
    if progress:
        progress(_progress_event(report, done=True))
    return report


def _progress_event(report: FixityReport, *, done: bool) -> dict[str, Any]:
    return {"checked": report.checked, "missing": len(report.missing), "altered": len(report.altered),
            "unreadable": len(report.unreadable), "done": done}
