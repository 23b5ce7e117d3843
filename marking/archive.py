"""Archival export of a subject's objective results as a BagIt package (RFC 8493; R-OMR-6, R-DATA-1).

Layout::

    <bag>/bagit.txt                 BagIt-Version: 1.0 / Tag-File-Character-Encoding: UTF-8
    <bag>/bag-info.txt              Source-Organization, Bagging-Date, External-Identifier,
                                    Payload-Oxum, Bag-Size, exam session/subject, key version
    <bag>/manifest-sha256.txt       "<sha256>  data/<path>" for every payload file
    <bag>/tagmanifest-sha256.txt    the same for bagit.txt, bag-info.txt, manifest-sha256.txt
    <bag>/data/scripts.csv          per script: candidate number, absent, objective score
                                    (exact), key version, then every objective item's filled options
    <bag>/data/objective_answers.csv  per script and item: filled options, state, score, key version
    <bag>/data/answer_keys.json     every key version with hashes and sign-offs
    <bag>/data/images.csv           the image manifest: every received page with its SHA-256,
                                    source file/page, status, reject reason, card and script
    <bag>/data/batches.json         batches with their frozen template/settings hashes, manifests,
                                    and the passed trial run each was created under (R-OMR-1)
    <bag>/data/trial_runs.json      every R-OMR-1 trial run of the subject: frozen values, counts,
                                    result, who ran it and its per-card report (with its SHA-256)
    <bag>/data/spot_checks.csv      the spot-check sample and outcomes
    <bag>/data/register.csv         OMR exceptions and ID corrections with before/after and who
    <bag>/data/images/<sha256>      (optional) the page images themselves

``verify_export(path)`` re-hashes everything against both manifests, checks the
Payload-Oxum and that no file was added or removed. The export is recorded in the
ledger with the sha256 of its tag manifest (the authority signs for that value).
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .checksums import sha256_file
from . import ledger
from .batches import find_subject
from .models import (AnswerKey, AnswerKeySignoff, Candidate, Card, ExamSession, Item, ObjectiveAnswer, OmrTrialRun,
                     PageImage, RegisterEntry, ScanBatch, Script, SpotCheck, User)
from .scores import format_points, from_cp

BAGIT_TXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"


def _csv(rows: list[list[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue().encode("utf-8")


def _json(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).hexdigest()


def _pts(cp: int | None) -> str | None:
    return None if cp is None else format_points(from_cp(cp))


def _trial_of(session, batch: ScanBatch) -> int | None:
    """The passed trial run the batch was created under (R-OMR-1), as ``create_batch``
    recorded it in the ledger: the record, not a re-derivation from the frozen values."""
    recorded = ledger.recorded_data(session, action="batch.created", entity="scan_batch", entity_id=str(batch.id))
    return json.loads(recorded[0]).get("trial_run_id") if recorded else None


def collect(session, subject) -> dict[str, bytes]:
    """The payload files (name under data/ → bytes)."""
    exam = session.get(ExamSession, subject.session_id)
    items = session.execute(select(Item).where(Item.subject_id == subject.id, Item.kind == "objective")
                            .order_by(Item.ordinal)).scalars().all()
    keys = session.execute(select(AnswerKey).where(AnswerKey.subject_id == subject.id)
                           .order_by(AnswerKey.version)).scalars().all()
    current = next((k for k in reversed(keys) if k.status == "locked"), None)
    users = {u.id: u.username for u in session.execute(select(User)).scalars()}
    scripts = session.execute(select(Script, Candidate.candidate_no).outerjoin(Candidate, Candidate.id == Script.candidate_id)
                              .where(Script.subject_id == subject.id).order_by(Candidate.candidate_no)).all()
    answers: dict[tuple[int, int, int], ObjectiveAnswer] = {}
    for row in session.execute(select(ObjectiveAnswer).join(Script, Script.id == ObjectiveAnswer.script_id)
                               .where(Script.subject_id == subject.id)).scalars():
        answers[(row.script_id, row.item_id, row.key_id)] = row
    key_version = {k.id: k.version for k in keys}

    head = ["candidate_no", "anon_code", "absent", "objective_score", "key_version"] + [f"item_{i.code}" for i in items]
    script_rows: list[list[Any]] = [head]
    long_rows: list[list[Any]] = [["candidate_no", "item", "chosen", "state", "score", "key_version"]]
    for script, number in scripts:
        chosen = []
        for item in items:
            row = answers.get((script.id, item.id, current.id)) if current else None
            chosen.append(row.chosen if row else None)
        script_rows.append([number, script.anon_code, "1" if script.absent else "0", _pts(script.objective_cp),
                            current.version if current and script.objective_cp is not None else None] + chosen)
    by_script = {s.id: n for s, n in scripts}
    codes = {i.id: i.code for i in items}
    for (sid, iid, kid), row in sorted(answers.items(), key=lambda kv: (by_script.get(kv[0][0]) or "", kv[0][2], kv[0][1])):
        long_rows.append([by_script.get(sid), codes.get(iid), row.chosen, row.state, _pts(row.score_cp), key_version[kid]])

    key_docs = []
    for k in keys:
        signoffs = session.execute(select(AnswerKeySignoff).where(AnswerKeySignoff.key_id == k.id)
                                   .order_by(AnswerKeySignoff.user_id)).scalars().all()
        key_docs.append({"version": k.version, "status": k.status, "content_hash": k.content_hash,
                         "locked_hash": k.locked_hash, "entered_by": users.get(k.entered_by),
                         "locked_at": k.locked_at.isoformat() if k.locked_at else None,
                         "signoffs": [{"user": users.get(s.user_id), "as_role": s.as_role,
                                       "signed_at": s.signed_at.isoformat()} for s in signoffs],
                         "body": json.loads(k.body)})

    trials = session.execute(select(OmrTrialRun).where(OmrTrialRun.subject_id == subject.id)
                             .order_by(OmrTrialRun.id)).scalars().all()
    trial_docs = [{"id": t.id, "source": t.source, "template_hash": t.template_hash,
                   "recognition_version": t.recognition_version, "settings_hash": t.settings_hash,
                   "cards_read": t.cards_read, "mismatches": t.mismatches, "cards_failed": t.cards_failed,
                   "passed": t.passed, "run_by": users.get(t.run_by), "started_at": t.started_at.isoformat(),
                   "finished_at": t.finished_at.isoformat(), "report_sha256": t.report_sha256,
                   "report": json.loads(t.report)} for t in trials]
    batches = session.execute(select(ScanBatch).where(ScanBatch.subject_id == subject.id).order_by(ScanBatch.id)).scalars().all()
    batch_docs = [{"code": b.code, "status": b.status, "scanner_id": b.scanner_id, "template_hash": b.template_hash,
                   "recognition_version": b.recognition_version, "settings_hash": b.settings_hash,
                   "manifest_sha256": b.manifest_sha256, "created_at": b.created_at.isoformat(),
                   "closed_at": b.closed_at.isoformat() if b.closed_at else None,
                   "trial_run_id": _trial_of(session, b)} for b in batches]
    code_of = {b.id: b.code for b in batches}
    image_rows: list[list[Any]] = [["page_sha256", "batch", "source_name", "source_page", "status", "reject_reason",
                                    "duplicate_of_page_sha256", "card_id", "page_code", "card_status", "rescan_of_card_id",
                                    "candidate_no"]]
    pages = session.execute(select(PageImage, Card).outerjoin(Card, Card.page_image_id == PageImage.id)
                            .where(PageImage.batch_id.in_([b.id for b in batches] or [0])).order_by(PageImage.id)).all()
    sha_of = {p.id: p.sha256 for p, _ in pages}
    for page, card in pages:
        image_rows.append([page.sha256, code_of[page.batch_id], page.source_name, page.source_page, page.status,
                           page.reject_reason, sha_of.get(page.duplicate_of_id), card.id if card else None,
                           card.page_code if card else None, card.status if card else None,
                           card.rescan_of_id if card else None,
                           by_script.get(card.script_id) if card and card.script_id else None])
    card_ids = [c.id for _, c in pages if c is not None] or [0]
    spot_rows: list[list[Any]] = [["card_id", "page_sha256", "outcome", "checked_by", "checked_at", "note"]]
    card_sha = {c.id: p.sha256 for p, c in pages if c is not None}
    for check in session.execute(select(SpotCheck).where(SpotCheck.card_id.in_(card_ids)).order_by(SpotCheck.card_id)).scalars():
        spot_rows.append([check.card_id, card_sha.get(check.card_id), check.outcome, users.get(check.checked_by),
                          check.checked_at.isoformat() if check.checked_at else None, check.note])
    reg_rows: list[list[Any]] = [["entry_id", "register", "status", "reason", "card_id", "before", "after",
                                  "proposed_by", "confirmed_by", "decided_at"]]
    for e in session.execute(select(RegisterEntry).where(RegisterEntry.card_id.in_(card_ids)).order_by(RegisterEntry.id)).scalars():
        reg_rows.append([e.id, e.register, e.status, e.reason_code, e.card_id, e.before, e.after,
                         users.get(e.proposed_by), users.get(e.confirmed_by),
                         e.decided_at.isoformat() if e.decided_at else None])
    return {
        "scripts.csv": _csv(script_rows),
        "objective_answers.csv": _csv(long_rows),
        "answer_keys.json": _json({"session": exam.code, "subject": subject.code, "keys": key_docs}),
        "images.csv": _csv(image_rows),
        "batches.json": _json({"session": exam.code, "subject": subject.code, "batches": batch_docs}),
        "trial_runs.json": _json({"session": exam.code, "subject": subject.code, "trial_runs": trial_docs}),
        "spot_checks.csv": _csv(spot_rows),
        "register.csv": _csv(reg_rows),
    }, {"session": exam.code, "key_version": current.version if current else None,
        "page_shas": [p.sha256 for p, _ in pages if p.sha256 and p.status == "accepted"]}


def export_bag(db, subject_code: str, out_dir: str | os.PathLike, *, actor_id: int | None = None,
               store=None, include_images: bool = False, organization: str = "Marking centre",
               now: dt.datetime | None = None) -> Path:
    """Write the subject's BagIt package under ``out_dir``; return the bag directory."""
    now = now or dt.datetime.now(dt.timezone.utc)
    with db.read() as session:
        subject = find_subject(session, subject_code)
        payload, meta = collect(session, subject)
        subject_id = subject.id
    bag = Path(out_dir) / f"{meta['session']}-{subject_code}-{now:%Y%m%dT%H%M%SZ}"
    if bag.exists():
        raise FileExistsError(f"{bag} exists; an export is never overwritten")
    (bag / "data").mkdir(parents=True)
    manifest: list[tuple[str, str]] = []
    octets = 0
    for name, data in sorted(payload.items()):
        manifest.append((_write(bag / "data" / name, data), f"data/{name}"))
        octets += len(data)
    if include_images:
        if store is None:
            raise ValueError("include_images needs the image store")
        for sha in sorted(set(meta["page_shas"])):
            data = store.get(sha)
            digest = _write(bag / "data" / "images" / sha, data)
            if digest != sha:
                raise RuntimeError(f"image {sha} in the store does not match its hash (fixity failure)")
            manifest.append((digest, f"data/images/{sha}"))
            octets += len(data)
    manifest.sort(key=lambda m: m[1])
    _write(bag / "bagit.txt", BAGIT_TXT.encode("utf-8"))
    info = [("Source-Organization", organization), ("Bagging-Date", now.strftime("%Y-%m-%d")),
            ("External-Identifier", f"{meta['session']}/{subject_code}/objective-results"),
            ("External-Description", "Objective results per script with every filled option, answer keys, "
                                     "image manifest, spot checks, register and trial runs (R-OMR-6, R-OMR-1)"),
            ("Exam-Session", meta["session"]), ("Subject-Code", subject_code),
            ("Answer-Key-Version", str(meta["key_version"] or "")),
            ("Payload-Oxum", f"{octets}.{len(manifest)}"), ("Bag-Size", f"{octets} bytes")]
    _write(bag / "bag-info.txt", "".join(f"{k}: {v}\n" for k, v in info).encode("utf-8"))
    _write(bag / "manifest-sha256.txt", "".join(f"{h}  {p}\n" for h, p in manifest).encode("utf-8"))
    tags = [(hashlib.sha256((bag / n).read_bytes()).hexdigest(), n)
            for n in ("bag-info.txt", "bagit.txt", "manifest-sha256.txt")]
    tag_text = "".join(f"{h}  {p}\n" for h, p in tags).encode("utf-8")
    tag_sha = _write(bag / "tagmanifest-sha256.txt", tag_text)
    with db.write() as session:
        ledger.append(session, actor_id=actor_id, action="export.bag", entity="subject", entity_id=subject_id,
                      data={"bag": bag.name, "tagmanifest_sha256": tag_sha, "payload_oxum": f"{octets}.{len(manifest)}",
                            "include_images": include_images})
    return bag


@dataclass
class BagVerification:
    ok: bool
    files: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "files": self.files, "problems": list(self.problems)}


def _read_manifest(path: Path, problems: list[str]) -> dict[str, str]:
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            problems.append(f"{path.name}:{number}: malformed line")
            continue
        entries[name] = digest
    return entries


def verify_export(path: str | os.PathLike) -> BagVerification:
    """Validate a bag: structure, both manifests, Payload-Oxum, no added or missing files."""
    bag = Path(path)
    problems: list[str] = []
    for required in ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt"):
        if not (bag / required).is_file():
            problems.append(f"{required} is missing")
    if not (bag / "data").is_dir():
        problems.append("data/ is missing")
    if problems:
        return BagVerification(False, 0, problems)
    if not (bag / "bagit.txt").read_text(encoding="utf-8").startswith("BagIt-Version: 1."):
        problems.append("bagit.txt does not declare BagIt-Version 1.x")
    manifest = _read_manifest(bag / "manifest-sha256.txt", problems)
    tagmanifest = _read_manifest(bag / "tagmanifest-sha256.txt", problems)
    octets = 0
    for name, digest in manifest.items():
        file = bag / name
        if not name.startswith("data/") or ".." in Path(name).parts:
            problems.append(f"manifest names {name} outside data/")
            continue
        if not file.is_file():
            problems.append(f"{name} is listed in the manifest but missing")
            continue
        octets += file.stat().st_size
        if sha256_file(file) != digest:
            problems.append(f"{name} does not match its checksum (modified)")
    on_disk = {str(p.relative_to(bag)).replace(os.sep, "/") for p in (bag / "data").rglob("*") if p.is_file()}
    for extra in sorted(on_disk - set(manifest)):
        problems.append(f"{extra} is in data/ but not in the manifest (added)")
    for name, digest in tagmanifest.items():
        file = bag / name
        if not file.is_file():
            problems.append(f"tag file {name} is missing")
        elif sha256_file(file) != digest:
            problems.append(f"tag file {name} does not match its checksum (modified)")
    info = {}
    for line in (bag / "bag-info.txt").read_text(encoding="utf-8").splitlines():
        k, _, v = line.partition(": ")
        info[k] = v
    oxum = info.get("Payload-Oxum")
    if oxum and oxum != f"{octets}.{len(manifest)}":
        problems.append(f"Payload-Oxum {oxum} does not match the payload ({octets}.{len(manifest)})")
    return BagVerification(not problems, len(manifest), problems)
