"""Technician console (R-ROLE-3, R-OMR-*): batches with live ingest/read progress, upload,
OMR exceptions, answer keys, spot checks and export.

Built against what the batches engineer has landed: batch/card/read progress comes from
the models (``web.queries.batches``) and live updates from OutboxEvent topic
``batch:<id>`` (marking.omr_queue.batch_topic). Upload calls ``marking.ingest`` when it
exists; until then the page says so (docs/web.md, "Gaps").
"""
from __future__ import annotations

import importlib
import tempfile
from pathlib import Path

from flask import Blueprint, Flask, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select
from werkzeug.utils import secure_filename

from marking.models import AnswerKey, Card, ScanBatch, Subject

from .. import queries
from ..permissions import roles
from ..ui import db, settings

bp = Blueprint("technician", __name__, url_prefix="/technician")
UPLOAD_SUFFIXES = (".zip", ".pdf", ".tif", ".tiff", ".png", ".jpg", ".jpeg")


def ingest_service():
    """The batches engineer's ingest entry point, if it has landed."""
    for name in ("marking.ingest", "omr.ingest"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        for fn in ("ingest_upload", "ingest_batch", "ingest_path", "ingest"):
            if hasattr(module, fn):
                return getattr(module, fn)
    return None


@bp.route("/")
@roles("technician", "admin")
def index():
    with db().read() as s:
        subjects = [(sub.id, sub.code, sub.name) for sub in s.execute(select(Subject).order_by(Subject.code)).scalars()]
    return render_template("technician/index.html", batches=queries.batches(db()), subjects=subjects,
                           ingest_available=ingest_service() is not None)


@bp.route("/upload", methods=["POST"])
@roles("technician")
def upload():
    service = ingest_service()
    if service is None:
        flash(_("Batch ingest is not available in this build yet."), "error")
        return redirect(url_for("technician.index"))
    files = [f for f in request.files.getlist("files") if f and f.filename]
    if not files:
        flash(_("Choose a zip, PDF, TIFF or image files (or a folder) to upload."), "error")
        return redirect(url_for("technician.index"))
    staging = Path(tempfile.mkdtemp(prefix="upload-", dir=settings().data_dir if settings().data_dir.exists() else None))
    for f in files:
        name = secure_filename(f.filename.replace("/", "_")) or "upload.bin"
        if not name.lower().endswith(UPLOAD_SUFFIXES):
            flash(_("%(name)s is not a zip, PDF, TIFF or image file.", name=f.filename), "error")
            return redirect(url_for("technician.index"))
        f.save(staging / name)
    try:
        result = service(db(), settings(), staging, subject_id=int(request.form.get("subject_id") or 0),
                         code=request.form.get("code") or None, actor_id=g.user.id)
        flash(_("Batch received: %(result)s", result=result), "ok")
    except Exception as exc:  # noqa: BLE001 - the ingest's own message
        flash(str(exc), "error")
    return redirect(url_for("technician.index"))


@bp.route("/batches/<int:batch_id>")
@roles("technician", "admin")
def batch(batch_id: int):
    with db().read() as s:
        b = s.get(ScanBatch, batch_id)
        if b is None:
            return redirect(url_for("technician.index"))
        exceptions = s.execute(select(Card).where(Card.batch_id == batch_id, Card.status == "exception")
                               .order_by(Card.id)).scalars().all()
        info = {"id": b.id, "code": b.code, "status": b.status}
        cards = [{"id": c.id, "status": c.status} for c in exceptions]
    return render_template("technician/batch.html", batch=info, exceptions=cards,
                           progress=next((x for x in queries.batches(db()) if x["id"] == batch_id), None))


@bp.route("/keys")
@roles("technician", "key_officer", "authority_officer", "admin")
def keys():
    with db().read() as s:
        rows = s.execute(select(AnswerKey, Subject.code).join(Subject).order_by(Subject.code, AnswerKey.version)).all()
        listing = [{"subject": code, "version": k.version, "status": k.status, "hash": k.content_hash[:12]}
                   for k, code in rows]
    return render_template("technician/keys.html", keys=listing)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
