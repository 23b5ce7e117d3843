"""Technician console (R-ROLE-3, R-OMR-*): R-OMR-1 trial runs, upload and ingest batches with
live progress, OMR exceptions (two-person), ID corrections, answer keys, spot checks and export.

Views call the batch services (``omr.ingest``, ``marking.batches``, ``marking.answer_keys``,
``marking.spotcheck``, ``marking.archive``); the services check roles and two-person
rules again and their refusals are shown as they are. Ingest runs in a background
thread of the web process (never in the request); progress is published by the services
to OutboxEvent topic ``batch:<id>`` and pushed to the page over Socket.IO.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from flask import (Blueprint, Flask, abort, current_app, flash, g, jsonify, redirect, render_template, request,
                   send_file, url_for)
from flask_babel import gettext as _
from sqlalchemy import func, select

from marking import answer_keys, archive, batches as batch_service, spotcheck, trials as trial_service
from marking.access import NotAllowed
from marking.models import Card, OmrRead, OutboxEvent, PageImage, ScanBatch, Subject, User
from marking.models.exam import CardTemplate
from marking.omr_queue import batch_topic, queue_status

from ..images import send_image
from ..permissions import roles
from ..ui import db, settings
from .uploads import Limits, UploadError, discard, stage_files

log = logging.getLogger("web.technician")
bp = Blueprint("technician", __name__, url_prefix="/technician")
TECH = ("technician", "admin")
VIEW = ("technician", "admin", "key_officer", "authority_officer")
KEY_ROLES = ("key_officer", "authority_officer", "admin", "technician")
CHECKERS = ("technician", "authority_officer", "key_officer", "admin")
EXPORTERS = ("technician", "authority_officer", "admin")
_jobs: dict[str, dict[str, Any]] = {}      # batch code → state of a background ingest in this process
_jobs_lock = threading.Lock()
_trial_jobs: dict[str, dict[str, Any]] = {}   # job id → state of a background trial run in this process
TRIAL_MAX_SYNTHETIC = 50
TRIAL_MAX_EXPECTED_BYTES = 4 * 1024 * 1024


def ingest_service():
    from omr.ingest import ingest_path
    return ingest_path


# --------------------------------------------------------------------------- helpers

def _subjects() -> list[dict[str, Any]]:
    with db().read() as s:
        return [{"id": sub.id, "code": sub.code, "name": sub.name, "has_template": sub.card_template_id is not None}
                for sub in s.execute(select(Subject).order_by(Subject.code)).scalars()]


def _run(ok: str, fn, back: str):
    """Call a service; flash its refusal as it is (the services own the rules)."""
    try:
        result = fn()
        flash(ok if not callable(ok) else ok(result), "ok")
    except Exception as exc:  # noqa: BLE001 - the service's own message for people
        log.info("refused: %s", exc)
        flash(str(exc), "error")
    return redirect(back)


def batch_progress(batch_id: int) -> dict[str, Any] | None:
    """Ingest and per-read-pass progress of one batch, plus the OMR node notice."""
    with db().read() as s:
        b = s.get(ScanBatch, batch_id)
        if b is None:
            return None
        pages = dict(s.execute(select(PageImage.status, func.count()).where(PageImage.batch_id == batch_id)
                               .group_by(PageImage.status)).all())
        cards = dict(s.execute(select(Card.status, func.count()).where(Card.batch_id == batch_id)
                               .group_by(Card.status)).all())
        reads: dict[int, dict[str, int]] = {1: {}, 2: {}}
        for read_no, status, n in s.execute(select(OmrRead.read_no, OmrRead.status, func.count())
                                            .join(Card, Card.id == OmrRead.card_id).where(Card.batch_id == batch_id)
                                            .group_by(OmrRead.read_no, OmrRead.status)).all():
            reads[read_no][status] = n
        last = s.execute(select(OutboxEvent.payload).where(OutboxEvent.topic == batch_topic(batch_id),
                                                           OutboxEvent.name == "ingest.progress")
                         .order_by(OutboxEvent.id.desc()).limit(1)).scalar_one_or_none()
        status, code = b.status, b.code
    job = _jobs.get(code, {})
    files_done = files_total = 0
    if last:
        data = json.loads(last)
        files_done, files_total = data.get("files_done", 0), data.get("files_total", 0)
    ingesting = status == "ingesting" and job.get("state") != "failed"
    ingest_pct = 100 if not ingesting else (100 * files_done // files_total if files_total else 0)
    passes = []
    for n in (1, 2):
        total = sum(reads[n].values())
        done = reads[n].get("done", 0) + reads[n].get("failed", 0)
        passes.append({"read": n, "done": done, "total": total, "failed": reads[n].get("failed", 0),
                       "pct": 100 * done // total if total else (0 if ingesting else 100)})
    queue = queue_status(db(), batch_id=batch_id)
    return {"id": batch_id, "code": code, "status": status, "ingest": {
                "pct": ingest_pct, "files_done": files_done, "files_total": files_total,
                "pages": sum(pages.values()), "accepted": pages.get("accepted", 0),
                "rejected": sum(v for k, v in pages.items() if k not in ("accepted",)),
                "state": job.get("state", "running" if ingesting else "done"), "error": job.get("error")},
            "reads": passes, "cards": sum(cards.values()), "card_status": cards,
            "exceptions": cards.get("exception", 0),
            "nodes": queue["nodes"], "alive": queue["alive"], "node_notice": queue["message"],
            "complete": not ingesting and all(p["done"] == p["total"] for p in passes)}


def _start_ingest(app: Flask, staging: Path, subject_code: str, batch_code: str, actor_id: int, dpi: float) -> None:
    service = ingest_service()
    the_db, the_settings = app.extensions["mc_db"], app.config["MC_SETTINGS"]
    with _jobs_lock:
        _jobs[batch_code] = {"state": "running", "error": None, "started": time.time()}

    def work() -> None:
        try:
            report = service(the_db, the_settings, staging, subject_code, actor_id=actor_id, batch_code=batch_code,
                             pdf_dpi=dpi)
            _jobs[batch_code].update(state="done", report=report.as_dict() if hasattr(report, "as_dict") else None)
        except Exception as exc:  # noqa: BLE001 - shown on the batch page
            log.exception("ingest of %s failed", batch_code)
            _jobs[batch_code].update(state="failed", error=str(exc)[:400])
        finally:
            discard(staging)

    threading.Thread(target=work, name=f"ingest-{batch_code}", daemon=True).start()


# --------------------------------------------------------------------------- batches

@bp.route("/")
@roles(*VIEW)
def index():
    status = batch_service.batch_status(db())
    subjects = _subjects()
    untried = [sub["code"] for sub in subjects if sub["has_template"]
               and not _trial_status(sub["code"])["passed_trial_id"]]
    return render_template("technician/index.html", batches=list(reversed(status["batches"])),
                           queue=status["queue"], subjects=subjects, untried=untried,
                           failed=[(c, j["error"]) for c, j in _jobs.items() if j.get("state") == "failed"])


@bp.route("/upload", methods=["POST"])
@roles("technician")
def upload():
    files = [f for f in request.files.getlist("files") if f and f.filename]
    if not files:
        flash(_("Choose a zip, PDF, TIFF or image files (or a folder) to upload."), "error")
        return redirect(url_for("technician.index"))
    subject = (request.form.get("subject") or "").strip()
    if subject not in {s["code"] for s in _subjects()}:
        flash(_("Choose a subject."), "error")
        return redirect(url_for("technician.index"))
    if not _trial_status(subject)["passed_trial_id"]:
        # R-OMR-1: refused before anything is staged (create_batch refuses it again in the ingest)
        flash(_("R-OMR-1: subject %(code)s has no passed trial run for its current card template and recognition "
                "settings, so no live batch can be read yet; nothing was uploaded. Run a trial first.",
                code=subject), "error")
        return redirect(url_for("technician.subject", code=subject, _anchor="trial"))
    code = (request.form.get("code") or "").strip()
    if code and not re.fullmatch(r"[A-Za-z0-9._-]{1,40}", code):
        flash(_("A batch code has letters, digits, dots, dashes and underscores (at most 40)."), "error")
        return redirect(url_for("technician.index"))
    code = code or f"{subject}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    with db().read() as s:
        if s.scalar(select(ScanBatch.id).where(ScanBatch.code == code)):
            flash(_("Batch %(code)s exists already; choose another code.", code=code), "error")
            return redirect(url_for("technician.index"))
    root = settings().data_dir / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="upload-", dir=root))
    try:
        staged = stage_files(files, staging, current_app.config.get("MC_UPLOAD_LIMITS") or Limits())
    except UploadError as exc:
        discard(staging)
        flash(str(exc), "error")
        return redirect(url_for("technician.index"))
    try:
        dpi = min(max(float(request.form.get("dpi") or 200), 72), 600)
    except ValueError:
        dpi = 200
    _start_ingest(current_app._get_current_object(), staging, subject, code, g.user.id, dpi)
    # the ingest creates the batch first thing; wait briefly so the page can follow it live
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db().read() as s:
            batch_id = s.scalar(select(ScanBatch.id).where(ScanBatch.code == code))
        if batch_id:
            flash(_("%(n)s file(s) received; ingest runs in the background.", n=staged), "ok")
            return redirect(url_for("technician.batch", batch_id=batch_id))
        if _jobs[code]["state"] == "failed":
            flash(_jobs[code]["error"], "error")
            return redirect(url_for("technician.index"))
        time.sleep(0.05)
    flash(_("%(n)s file(s) received; ingest runs in the background.", n=staged), "ok")
    return redirect(url_for("technician.index"))


@bp.route("/batches/<int:batch_id>")
@roles(*VIEW)
def batch(batch_id: int):
    progress = batch_progress(batch_id)
    if progress is None:
        abort(404)
    exceptions = batch_service.list_exceptions(db(), batch_id=batch_id)
    corrections = batch_service.list_exceptions(db(), batch_id=batch_id, registers=("id_correction",),
                                                statuses=("proposed",))
    return render_template("technician/batch.html", p=progress, exceptions=exceptions, corrections=corrections)


@bp.route("/batches/<int:batch_id>/progress")
@roles(*VIEW)
def progress(batch_id: int):
    p = batch_progress(batch_id)
    if p is None:
        abort(404)
    return jsonify(p)


@bp.route("/batches/<int:batch_id>/settle", methods=["POST"])
@roles(*TECH)
def settle(batch_id: int):
    return _run(lambda r: _("Batch settled: %(r)s", r=", ".join(f"{k} {v}" for k, v in r.items()
                                                                 if isinstance(v, (int, str)))),
                lambda: batch_service.settle_batch(db(), batch_id, actor_id=g.user.id),
                url_for("technician.batch", batch_id=batch_id))


# --------------------------------------------------------------------------- exceptions

def _exception(entry_id: int, registers=("omr_exception", "damaged_card", "rescan", "id_correction")):
    found = [e for e in batch_service.list_exceptions(db(), statuses=("open", "proposed", "confirmed", "closed"),
                                                      registers=registers) if e.entry_id == entry_id]
    if not found:
        abort(404)
    return found[0]


def _reads(card_id: int) -> list[dict[str, Any]]:
    from marking.omr_compare import summarise
    with db().read() as s:
        rows = s.execute(select(OmrRead).where(OmrRead.card_id == card_id).order_by(OmrRead.read_no)).scalars().all()
        out = []
        for r in rows:
            summary: dict[str, Any] = {}
            if r.status == "done" and r.result:
                try:
                    summary = summarise(json.loads(r.result))
                except Exception:  # noqa: BLE001 - a malformed result is shown as such
                    summary = {"error": "unreadable result"}
            out.append({"read_no": r.read_no, "node": r.node, "status": r.status, "summary": summary})
        return out


@bp.route("/exceptions/<int:entry_id>")
@roles(*TECH)
def exception(entry_id: int):
    entry = _exception(entry_id)
    reads = _reads(entry.card_id)
    codes = sorted({c for r in reads for c in (r["summary"].get("answers") or {})},
                   key=lambda c: (len(c), c))
    differs = {c for c in codes if len({(r["summary"].get("answers") or {}).get(c) for r in reads}) > 1}
    return render_template("technician/exception.html", e=entry, reads=reads, codes=codes, differs=differs)


@bp.route("/exceptions/<int:entry_id>/image")
@roles(*TECH)
def exception_image(entry_id: int):
    """The card image, with read ``read``'s overlay when asked (technicians only)."""
    entry = _exception(entry_id)
    read_no = request.args.get("read", type=int)
    if read_no not in (1, 2):
        return send_image(entry.page_sha256)
    try:
        import cv2
        import numpy as np

        from marking.storage import open_store
        from omr.overlay import draw_overlay
        from omr.template import load_template
        with db().read() as s:
            result = s.scalar(select(OmrRead.result).where(OmrRead.card_id == entry.card_id,
                                                          OmrRead.read_no == read_no))
            body = s.scalar(select(CardTemplate.body).join(ScanBatch, ScanBatch.card_template_id == CardTemplate.id)
                            .join(Card, Card.batch_id == ScanBatch.id).where(Card.id == entry.card_id))
        data = open_store(settings()).get(entry.page_sha256)
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        drawn = draw_overlay(image, load_template(json.loads(body)), json.loads(result))
        ok, png = cv2.imencode(".png", drawn)
        if not ok:
            raise ValueError("encode")
    except Exception:  # noqa: BLE001 - no overlay possible: the plain image
        return send_image(entry.page_sha256)
    response = current_app.response_class(png.tobytes(), mimetype="image/png")
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _parse_answers(text: str) -> dict[str, str]:
    """``1=A, 9=AC, 7=`` → {"1": "A", "9": "AC", "7": ""}."""
    out: dict[str, str] = {}
    for part in re.split(r"[,\n;]+", text or ""):
        if not part.strip():
            continue
        code, sep, value = part.partition("=")
        if not sep or not code.strip():
            raise ValueError(_("Write answers as item=letters, e.g. 1=A, 9=AC, 7= for blank."))
        out[code.strip()] = value.strip().upper()
    return out


@bp.route("/exceptions/<int:entry_id>/propose", methods=["POST"])
@roles(*TECH)
def propose(entry_id: int):
    back = url_for("technician.exception", entry_id=entry_id)
    action = request.form.get("action", "")

    def go():
        resolution: dict[str, Any] = {"action": action}
        if action == "accept":
            resolution["answers"] = _parse_answers(request.form.get("answers", ""))
            if request.form.get("candidate_number"):
                resolution["candidate_number"] = request.form["candidate_number"].strip()
            if request.form.get("absent"):
                resolution["absent"] = request.form.get("absent") == "yes"
        elif action == "rescan":
            resolution["rescan_card_id"] = request.form.get("rescan_card_id", type=int)
        batch_service.propose_resolution(db(), entry_id, g.user.id, resolution,
                                         note=request.form.get("note", "")[:400])
    return _run(_("Proposal recorded; a second technician must confirm it."), go, back)


@bp.route("/exceptions/<int:entry_id>/confirm", methods=["POST"])
@roles(*TECH)
def confirm(entry_id: int):
    return _run(_("Resolution confirmed."), lambda: batch_service.confirm_resolution(db(), entry_id, g.user.id),
                url_for("technician.exception", entry_id=entry_id))


@bp.route("/id-corrections", methods=["POST"])
@roles(*TECH)
def propose_id_form():
    return propose_id(request.form.get("card_id", type=int) or 0)


@bp.route("/cards/<int:card_id>/id-correction", methods=["POST"])
@roles(*TECH)
def propose_id(card_id: int):
    back = request.form.get("back") or url_for("technician.index")
    if not back.startswith("/technician/"):
        back = url_for("technician.index")
    return _run(_("ID correction proposed; a second person must confirm it."),
                lambda: batch_service.propose_id_correction(db(), card_id, g.user.id,
                                                            (request.form.get("candidate_number") or "").strip(),
                                                            note=request.form.get("note", "")), back)


@bp.route("/id-corrections/<int:entry_id>/confirm", methods=["POST"])
@roles(*TECH)
def confirm_id(entry_id: int):
    entry = _exception(entry_id, ("id_correction",))
    return _run(_("ID correction confirmed."), lambda: batch_service.confirm_id_correction(db(), entry_id, g.user.id),
                url_for("technician.batch", batch_id=entry.batch_id))


# --------------------------------------------------------------------------- answer keys

@bp.route("/keys")
@roles(*KEY_ROLES)
def keys():
    listing = []
    for sub in _subjects():
        try:
            listing.append({"subject": sub, "keys": answer_keys.show_keys(db(), sub["code"])})
        except Exception:  # noqa: BLE001 - a subject without objective items
            listing.append({"subject": sub, "keys": []})
    return render_template("technician/keys.html", listing=listing)


@bp.route("/keys/enter", methods=["POST"])
@roles("key_officer")
def enter_key():
    subject = request.form.get("subject", "")

    def go():
        return answer_keys.enter_key(db(), subject, g.user.id, _parse_answers(request.form.get("answers", "")))
    return _run(lambda k: _("Key version %(v)s entered; SHA-256 %(h)s. Two other people must sign it off.",
                            v=k.version, h=k.content_hash), go, url_for("technician.keys"))


@bp.route("/keys/<int:key_id>/sign", methods=["POST"])
@roles("key_officer", "authority_officer")
def sign_key(key_id: int):
    as_role = request.form.get("as_role", "reviewer")
    return _run(_("Key signed off."), lambda: answer_keys.sign_key(
        db(), key_id, g.user.id, as_role, expected_hash=request.form.get("expected_hash") or None),
        url_for("technician.keys"))


@bp.route("/keys/<int:key_id>/lock", methods=["POST"])
@roles("key_officer", "authority_officer", "admin")
def lock_key(key_id: int):
    return _run(_("Key locked; objective answers rescored."), lambda: answer_keys.lock_key(db(), key_id, g.user.id),
                url_for("technician.keys"))


# --------------------------------------------------------------------------- R-OMR-1 trial runs

def _trial_status(code: str) -> dict[str, Any]:
    """Whether the current template, recognition version and settings have a passed trial."""
    from omr.batch_adapter import RECOGNITION_VERSION, SETTINGS_HASH
    return trial_service.trial_status(db(), code, recognition_version=RECOGNITION_VERSION,
                                      settings_hash=SETTINGS_HASH)


def _trials_of(code: str) -> list[dict[str, Any]]:
    """The subject's trial runs, newest first, with who ran them."""
    records = trial_service.list_trials(db(), code)
    with db().read() as s:
        names = dict(s.execute(select(User.id, User.username)
                               .where(User.id.in_({r.run_by for r in records} or {0}))).all())
    return [dict(r.as_dict(), run_by_name=names.get(r.run_by, r.run_by)) for r in reversed(records)]


def _mismatch_lines(cards: list[dict[str, Any]]) -> list[str]:
    from omr.trial import describe
    return [describe(c["card"], m) for c in cards for m in c["mismatches"]]


def _start_trial(app: Flask, prepared, actor_id: int) -> str:
    """Read a prepared trial deck in a background thread; returns the job id.

    In the background, like the ingest: every card is read twice (methods A and B) with
    the full recognition pipeline, which on a real answer-card template takes a good
    fraction of a second per read, so even the default deck of 4 cards (and up to 50, or
    a scanned deck) would hold a request — and a web worker — for too long. The deck is
    prepared (and bad input refused) in the request; only the reading runs here.
    """
    from omr.trial import read_trial
    the_db = app.extensions["mc_db"]
    job_id = secrets.token_urlsafe(12)
    with _jobs_lock:
        _trial_jobs[job_id] = {"state": "running", "subject": prepared.subject, "source": prepared.source,
                               "done": 0, "total": len(prepared.deck), "error": None, "trial_id": None,
                               "started": time.time()}

    def progress(event: dict[str, Any]) -> None:
        _trial_jobs[job_id].update(done=event["done"], total=event["total"])

    def work() -> None:
        try:
            report = read_trial(the_db, prepared, actor_id=actor_id, progress=progress)
            _trial_jobs[job_id].update(state="done", trial_id=report.trial_id, passed=report.passed)
        except Exception as exc:  # noqa: BLE001 - shown on the trial page
            log.exception("trial run of %s failed", prepared.subject)
            _trial_jobs[job_id].update(state="failed", error=str(exc)[:400])

    threading.Thread(target=work, name=f"trial-{prepared.subject}", daemon=True).start()
    return job_id


def _public_error(exc: Exception, replacements: dict[str, str]) -> str:
    """A service refusal for the technician, with the server's staging paths replaced by
    the names the technician uploaded."""
    text = str(exc)
    for path, name in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, name)
    return text


@bp.route("/subjects/<code>/trial", methods=["POST"])
@roles(*TECH)
def trial(code: str):
    """Run an R-OMR-1 trial: a synthetic deck, or scanned test cards with their expected answers."""
    from omr.trial import prepare_trial
    back = url_for("technician.subject", code=code, _anchor="trial")
    if code not in {s["code"] for s in _subjects()}:
        abort(404)
    source = request.form.get("source", "synthetic")
    staging = None
    try:
        if source == "synthetic":
            try:
                n = int(request.form.get("cards") or 4)
            except ValueError:
                n = 0
            if not 1 <= n <= TRIAL_MAX_SYNTHETIC:
                flash(_("A synthetic trial deck has 1 to %(max)s cards.", max=TRIAL_MAX_SYNTHETIC), "error")
                return redirect(back)
            dpi = float(current_app.config.get("MC_TRIAL_SYNTHETIC_DPI", 150))
            prepared = prepare_trial(db(), code, actor_id=g.user.id, synthetic=n, dpi=dpi)
        elif source == "scans":
            files = [f for f in request.files.getlist("files") if f and f.filename]
            expected = request.files.get("expected")
            if not files:
                flash(_("Choose the scanned test cards (zip, PDF, TIFF or images) for the trial."), "error")
                return redirect(back)
            if expected is None or not expected.filename:
                flash(_("Choose the expected-answers JSON file of the test cards."), "error")
                return redirect(back)
            root = settings().data_dir / "uploads"
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix="trial-", dir=root))
            cards_dir = staging / "cards"
            cards_dir.mkdir()
            # the same staging, type checks, limits and safe unpacking as a batch upload
            stage_files(files, cards_dir, current_app.config.get("MC_UPLOAD_LIMITS") or Limits())
            entries = list(cards_dir.iterdir())
            if len(entries) == 1 and entries[0].is_dir() and entries[0].name.endswith("-unzipped"):
                cards_dir = entries[0]   # one zip: card names are relative to the zip, as the technician wrote them
            body = expected.stream.read(TRIAL_MAX_EXPECTED_BYTES + 1)
            if len(body) > TRIAL_MAX_EXPECTED_BYTES:
                raise UploadError(_("The expected-answers file is too large."))
            expected_path = staging / "expected.json"
            expected_path.write_bytes(body)
            names = {str(expected_path): expected.filename, str(cards_dir): _("the uploaded cards")}
            try:
                prepared = prepare_trial(db(), code, actor_id=g.user.id, cards_dir=cards_dir,
                                         expected_file=expected_path)
            except UnicodeDecodeError:
                raise UploadError(_("The expected-answers file is not UTF-8 text.")) from None
            except (batch_service.BatchError, FileNotFoundError) as exc:
                raise UploadError(_public_error(exc, names)) from None
            except (ValueError, TypeError, KeyError, AttributeError) as exc:   # a malformed entry
                raise UploadError(_("The expected-answers file could not be used: %(error)s",
                                    error=_public_error(exc, names))) from None
        else:
            flash(_("Choose a synthetic deck or scanned test cards."), "error")
            return redirect(back)
    except (UploadError, batch_service.BatchError, NotAllowed) as exc:
        log.info("trial refused: %s", exc)
        flash(str(exc), "error")     # nothing was read or recorded
        return redirect(back)
    finally:
        if staging is not None:
            discard(staging)     # the prepared cards hold their bytes
    job_id = _start_trial(current_app._get_current_object(), prepared, g.user.id)
    flash(_("Trial run started: %(n)s card(s) are read by both methods.", n=len(prepared.deck)), "ok")
    return redirect(url_for("technician.trial_job", job_id=job_id))


def _trial_job(job_id: str) -> dict[str, Any]:
    job = _trial_jobs.get(job_id)
    if job is None:
        abort(404)
    return job


@bp.route("/trial-jobs/<job_id>")
@roles(*TECH)
def trial_job(job_id: str):
    job = _trial_job(job_id)
    if job["state"] == "done":
        return redirect(url_for("technician.trial_report", code=job["subject"], trial_id=job["trial_id"]))
    return render_template("technician/trial.html", code=job["subject"], job=job, job_id=job_id)


@bp.route("/trial-jobs/<job_id>/progress")
@roles(*TECH)
def trial_job_progress(job_id: str):
    job = _trial_job(job_id)
    return jsonify({k: job.get(k) for k in ("state", "subject", "source", "done", "total", "error", "trial_id",
                                            "passed")})


@bp.route("/subjects/<code>/trials/<int:trial_id>")
@roles(*CHECKERS)
def trial_report(code: str, trial_id: int):
    try:
        record, cards = trial_service.trial_report(db(), trial_id)
    except batch_service.BatchError:
        abort(404)
    if record.subject != code:
        abort(404)
    with db().read() as s:
        who = s.scalar(select(User.username).where(User.id == record.run_by))
    return render_template("technician/trial.html", code=code, record=record, who=who, cards=cards,
                           lines=_mismatch_lines(cards), trial=_trial_status(code))


# --------------------------------------------------------------------------- spot checks and export

@bp.route("/subjects/<code>")
@roles(*CHECKERS)
def subject(code: str):
    if code not in {s["code"] for s in _subjects()}:
        abort(404)
    try:
        checks = spotcheck.spot_check_status(db(), code)
    except Exception:  # noqa: BLE001
        checks = {"counts": {}, "checks": []}
    exports = sorted((p.name for p in _export_dir().glob(f"*-{code}-*.zip")), reverse=True)
    running = [(job_id, j) for job_id, j in _trial_jobs.items() if j["subject"] == code and j["state"] == "running"]
    return render_template("technician/subject.html", code=code, checks=checks, exports=exports,
                           verification=_verifications.get(code), trial=_trial_status(code),
                           trials=_trials_of(code), running=running, max_synthetic=TRIAL_MAX_SYNTHETIC)


@bp.route("/subjects/<code>/spotcheck/sample", methods=["POST"])
@roles(*CHECKERS)
def sample(code: str):
    rate = request.form.get("rate_pm", type=int) or spotcheck.DEFAULT_RATE_PM
    return _run(lambda r: _("Sample drawn: %(n)s of %(p)s cards.", n=len(r["sample"]), p=r["population"]),
                lambda: spotcheck.sample_spot_check(db(), code, actor_id=g.user.id, rate_pm=rate),
                url_for("technician.subject", code=code))


@bp.route("/spotcheck/<int:card_id>", methods=["POST"])
@roles(*CHECKERS)
def record(card_id: int):
    code = request.form.get("subject", "")
    return _run(_("Spot check recorded."), lambda: spotcheck.record_spot_check(
        db(), card_id, g.user.id, request.form.get("outcome", ""), note=request.form.get("note", "")),
        url_for("technician.subject", code=code) if code else url_for("technician.index"))


@bp.route("/cards/<int:card_id>/image")
@roles(*CHECKERS)
def card_image(card_id: int):
    """A card's page image (spot checks), after the role check."""
    with db().read() as s:
        sha = s.scalar(select(PageImage.sha256).join(Card, Card.page_image_id == PageImage.id)
                       .where(Card.id == card_id))
    return send_image(sha)


_verifications: dict[str, dict[str, Any]] = {}


def _export_dir() -> Path:
    path = settings().data_dir / "exports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def export_zip(code: str, actor_id: int, include_images: bool = False) -> tuple[str, dict[str, Any]]:
    """Write the BagIt export, verify it, zip it; returns the zip name and the verification."""
    out = _export_dir()
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        bag = archive.export_bag(db(), code, tmp, actor_id=actor_id, include_images=include_images)
        verification = archive.verify_export(bag).as_dict()
        base = out / bag.name
        name = Path(shutil.make_archive(str(base), "zip", root_dir=tmp, base_dir=bag.name)).name
    verification["zip"] = name
    _verifications[code] = verification
    return name, verification


@bp.route("/subjects/<code>/export", methods=["POST"])
@roles(*EXPORTERS)
def export(code: str):
    try:
        name, v = export_zip(code, g.user.id, include_images=bool(request.form.get("include_images")))
        if v["ok"]:
            flash(_("Export %(name)s written and verified: %(n)s files, all checksums match.", name=name,
                    n=v["files"]), "ok")
        else:
            flash(_("Export %(name)s failed verification: %(p)s", name=name, p="; ".join(v["problems"])), "error")
    except Exception as exc:  # noqa: BLE001
        flash(str(exc), "error")
    return redirect(url_for("technician.subject", code=code))


@bp.route("/exports/<name>")
@roles(*EXPORTERS)
def download(name: str):
    if not re.fullmatch(r"[A-Za-z0-9._-]+\.zip", name):
        abort(404)
    path = _export_dir() / name
    if not path.is_file():
        abort(404)
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=name)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
