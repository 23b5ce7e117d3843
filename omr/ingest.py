"""Scanner-batch ingest: files → page images in the store → cards with two queued reads.

``ingest_path(db, settings, path, subject_code, scanner_id=None, progress=callback)``

* A folder (walked in natural order) or one file: PNG, JPEG, TIFF (multi-page too) and
  PDF (rasterised with pypdfium2). The scanner's original bytes are stored untouched
  (R-DATA-1); a container's pages are extracted as lossless PNG pages.
* Every page goes into the content-addressed image store by SHA-256. The same bytes
  already received for the subject → a ``duplicate`` page linked to the first.
* A bad file (not an image, truncated, too small, unreadable PDF, disk full…) becomes a
  ``rejected`` page with its reason; the batch goes on.
* The batch freezes the subject's card template hash, the recognition version and the
  recognition-settings hash (R-OMR-1).
* Work is committed in chunks so OMR nodes start reading while ingest continues.
  Progress goes to ``progress(event)`` (CLI progress bar) and to ``outbox_event`` rows
  on topic ``batch:<id>`` (web).
* At the end a manifest (JSON: every file and page with its SHA-256 and outcome) is
  stored and its SHA-256 recorded on the batch and in the ledger.

This module is in ``omr`` because it needs image work (PDF/TIFF pages); it reaches the
OMR library only through :mod:`omr.batch_adapter`.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from marking import batches, events, ledger
from marking.models import Card, RegisterEntry, ScanBatch
from marking.omr_queue import batch_topic
from marking.storage import StorageError, StorageFullError, open_store

from . import batch_adapter as adapter

Progress = Callable[[dict[str, Any]], None]


@dataclass
class IngestReport:
    batch_id: int
    batch_code: str
    files: int = 0
    pages: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    manifest_sha256: str | None = None
    rejects: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def list_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    return sorted(files, key=_natural)


def ingest_path(db, settings, path: str | os.PathLike, subject_code: str, scanner_id: str | None = None,
                progress: Progress | None = None, *, actor_id: int | None = None, batch_code: str | None = None,
                store=None, chunk: int = 20, pdf_dpi: float = 200, rescan_of: int | None = None,
                batch_id: int | None = None) -> IngestReport:
    """Ingest a folder or file of scans as one new batch (or into ``batch_id``)."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    store = store or open_store(settings)
    files = list_files(root)

    def create(session):
        if batch_id is not None:
            b = session.get(ScanBatch, batch_id)
            if b.status == "closed":
                raise batches.BatchError(f"batch {b.code} is closed; ingest into a new batch")
            return b.id, b.code
        subject = batches.find_subject(session, subject_code)
        b = batches.create_batch(session, subject, recognition_version=adapter.RECOGNITION_VERSION,
                                 settings_hash=adapter.SETTINGS_HASH, scanner_id=scanner_id, code=batch_code,
                                 actor_id=actor_id)
        return b.id, b.code

    bid, bcode = db.run(create, retry_integrity=False)
    report = IngestReport(batch_id=bid, batch_code=bcode)
    manifest_files: list[dict[str, Any]] = []
    pending: list[tuple[str, adapter.PageData, str | None]] = []   # (source name, page, sha)
    new_cards: list[int] = []

    def flush(files_done: int) -> None:
        if not pending:
            return
        rows = list(pending)

        def work(session) -> list[tuple[str, int, str, int | None, str | None]]:
            batch = session.get(ScanBatch, bid)
            out = []
            for name, page, sha in rows:
                pimg, card = batches.add_page(session, batch, source_name=name, source_page=page.page_no, sha256=sha,
                                              width=page.width, height=page.height, reject_reason=page.reject,
                                              rescan_of_id=rescan_of)
                out.append((name, page.page_no, pimg.status, card.id if card else None, pimg.reject_reason))
            events.publish(session, batch_topic(bid), "ingest.progress",
                           {"batch_id": bid, "files_done": files_done, "files_total": len(files),
                            "pages": report.pages, "accepted": report.accepted + sum(1 for o in out if o[2] == "accepted")})
            return out

        outcome = db.run(work)
        pending.clear()
        for name, page_no, status, card_id, reason in outcome:
            if status == "accepted":
                report.accepted += 1
                new_cards.append(card_id)
            elif status == "duplicate":
                report.duplicates += 1
            else:
                report.rejected += 1
                report.rejects.append({"file": name, "page": page_no, "reason": reason})
            for f in manifest_files:
                if f["name"] == name:
                    for p in f["pages"]:
                        if p["page"] == page_no:
                            p["status"] = status
                            if reason:
                                p["reason"] = reason

    for index, file in enumerate(files, start=1):
        name = str(file.relative_to(root)) if root.is_dir() else file.name
        entry: dict[str, Any] = {"name": name, "pages": []}
        manifest_files.append(entry)
        report.files += 1
        try:
            data = file.read_bytes()
        except OSError as exc:
            page = adapter.PageData(1, None, reject=f"unreadable_file: {exc}"[:200])
            entry["pages"].append({"page": 1, "sha256": None})
            pending.append((name, page, None))
            report.pages += 1
            continue
        entry["sha256"] = hashlib.sha256(data).hexdigest()
        entry["bytes"] = len(data)
        if not adapter.supported(file) and adapter.sniff(data) is None:
            page = adapter.PageData(1, None, reject=f"unsupported_file: {file.suffix or 'no extension'} is not a scan")
            entry["pages"].append({"page": 1, "sha256": None})
            pending.append((name, page, None))
            report.pages += 1
        else:
            container, pages = adapter.explode(data, pdf_dpi=pdf_dpi)
            if container:
                try:
                    store.put(data, label=name)   # the original container, kept as received
                    entry["container_stored"] = True
                except StorageError as exc:
                    entry["container_stored"] = False
                    entry["container_error"] = str(exc)[:200]
            for page in pages:
                sha = None
                if page.data is not None:
                    try:
                        sha = store.put(page.data, label=f"{name} page {page.page_no}")
                    except StorageFullError as exc:
                        page.reject, page.data = f"storage_full: {exc.strerror}"[:200], None
                    except StorageError as exc:
                        page.reject, page.data = f"storage_error: {exc.strerror}"[:200], None
                entry["pages"].append({"page": page.page_no, "sha256": sha})
                pending.append((name, page, sha))
                report.pages += 1
        if len(pending) >= chunk:
            flush(index)
            if progress:
                progress({"batch_id": bid, "files_done": index, "files_total": len(files), "pages": report.pages,
                          "accepted": report.accepted, "rejected": report.rejected, "duplicates": report.duplicates})
    flush(len(files))

    manifest = {"format": "mc-batch-manifest/1", "batch": bcode, "subject": subject_code, "scanner_id": scanner_id,
                "template_hash": None, "recognition_version": adapter.RECOGNITION_VERSION,
                "settings_hash": adapter.SETTINGS_HASH, "source": str(root.name),
                "ingested_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "files": manifest_files}

    def finish(session) -> str | None:
        batch = session.get(ScanBatch, bid)
        manifest["template_hash"] = batch.template_hash
        text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        try:
            sha = store.put(text, label=f"manifest of batch {bcode}")
        except StorageError:
            sha = None
        if batch_id is None:   # a fresh batch; re-scans added to a batch keep its first manifest
            batch.manifest_sha256 = sha
        if batch.status == "ingesting":
            batches.set_status(session, batch, "reading")
        ledger.append(session, actor_id=actor_id, action="batch.ingested", entity="scan_batch", entity_id=bid,
                      data={"files": report.files, "pages": report.pages, "accepted": report.accepted,
                            "rejected": report.rejected, "duplicates": report.duplicates, "manifest_sha256": sha,
                            "rescan_of": rescan_of})
        events.publish(session, batch_topic(bid), "ingest.done", {"batch_id": bid, "accepted": report.accepted,
                                                                  "rejected": report.rejected,
                                                                  "duplicates": report.duplicates})
        return sha

    report.manifest_sha256 = db.run(finish)
    if progress:
        progress({"batch_id": bid, "files_done": len(files), "files_total": len(files), "pages": report.pages,
                  "accepted": report.accepted, "rejected": report.rejected, "duplicates": report.duplicates,
                  "done": True})
    report.new_cards = new_cards  # type: ignore[attr-defined]
    return report


def ingest_rescan(db, settings, path: str | os.PathLike, original_card_id: int, user_id: int, *,
                  kind: str = "rescan", store=None) -> int:
    """R-OMR-5: a re-scan (or a transcription onto a fresh card) of an unreadable card.

    The new page joins the original's batch as a new card linked by ``rescan_of_id`` and
    is read twice like any card; the original card, image and reads stay untouched. A
    ``rescan`` register entry records it; the original's exception is then resolved with
    the action "rescan" by two technicians. Returns the new card id.
    """
    if kind not in ("rescan", "transcription"):
        raise ValueError("kind is 'rescan' or 'transcription'")
    with db.read() as session:
        original = session.get(Card, original_card_id)
        if original is None:
            raise batches.BatchError(f"no card {original_card_id}")
        batch = session.get(ScanBatch, original.batch_id)
    report = ingest_path(db, settings, path, "", batch_id=original.batch_id, rescan_of=original_card_id,
                         store=store, actor_id=user_id)
    if report.accepted != 1:
        raise batches.BatchError(f"a re-scan must be exactly one readable page; got {report.accepted} accepted "
                                 f"({report.rejects or 'duplicates: ' + str(report.duplicates)})")
    new_card = report.new_cards[0]  # type: ignore[attr-defined]

    def work(session) -> None:
        session.add(RegisterEntry(register="rescan", status="closed", reason_code=kind, card_id=original_card_id,
                                  raised_by=user_id, detail=json.dumps({"new_card_id": new_card, "kind": kind,
                                                                        "batch": batch.code})))
        ledger.append(session, actor_id=user_id, action="omr.rescan_added", entity="card", entity_id=original_card_id,
                      data={"new_card_id": new_card, "kind": kind})

    db.run(work, retry_integrity=False)
    return new_card
