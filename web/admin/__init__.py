"""Administration: exam specification import, users from CSV, account disabling and
session revocation, ledger verification and checkpoints, backups, results export;
authority approvals of score changes that cross the pass mark (R-QC-3)."""
from __future__ import annotations

import io
import tempfile
from pathlib import Path

from flask import (Blueprint, Flask, Response, flash, g, redirect, render_template, request, session,
                   url_for)
from flask_babel import gettext as _
from sqlalchemy import select

from marking import backup, changes, course_results, examspec, ledger, users
from marking.cli_commands import checkpoint_store
from marking.models import LoginSession, Subject, User
from marking.models.base import utcnow

from ..auth.sessions import revoke_user_sessions
from ..permissions import roles
from ..ui import db, settings

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _upload_to_temp(field: str, suffix: str) -> Path | None:
    f = request.files.get(field)
    if not f or not f.filename:
        return None
    handle = tempfile.NamedTemporaryFile(delete=False, suffix=suffix)
    f.save(handle)
    handle.close()
    return Path(handle.name)


@bp.route("/")
@roles("admin")
def index():
    with db().read() as s:
        people = s.execute(select(User).order_by(User.username)).scalars().all()
        live = {uid for (uid,) in s.execute(select(LoginSession.user_id).where(
            LoginSession.revoked_at.is_(None), LoginSession.expires_at > utcnow())).all()}
        accounts = [{"id": u.id, "username": u.username, "display_name": u.display_name,
                     "roles": sorted(u.role_names), "level": u.qualification_level, "active": u.active,
                     "mfa": bool(u.totp_secret), "online": u.id in live} for u in people]
        subjects = [(sub.code, sub.name) for sub in s.execute(select(Subject).order_by(Subject.code)).scalars()]
    try:
        backups = [p.name for p in backup.list_backups(settings())][-10:]
    except Exception:  # noqa: BLE001
        backups = []
    passwords = session.pop("one_time_passwords", None)
    return render_template("admin/index.html", accounts=accounts, subjects=subjects, backups=backups,
                           passwords=passwords, spec_errors=session.pop("spec_errors", None))


@bp.route("/spec", methods=["POST"])
@roles("admin")
def import_spec():
    path = _upload_to_temp("spec", ".yaml")
    if path is None:
        flash(_("Choose an exam specification file."), "error")
        return redirect(url_for("admin.index"))
    from web.cli import Context
    try:
        summary = examspec.import_spec(db(), path, actor_id=g.user.id,
                                       template_inspector=Context.template_inspector)
        flash(_("Imported %(session)s: %(subjects)s subjects, %(items)s items, %(candidates)s candidates.",
                **{k: summary[k] for k in ("session", "subjects", "items", "candidates")}), "ok")
    except examspec.SpecError as exc:
        session["spec_errors"] = [e.replace(str(path), request.files["spec"].filename or "spec") for e in exc.errors][:200]
        flash(_("The specification has errors; nothing was imported."), "error")
    finally:
        path.unlink(missing_ok=True)
    return redirect(url_for("admin.index"))


@bp.route("/users/import", methods=["POST"])
@roles("admin")
def import_users():
    path = _upload_to_temp("csv", ".csv")
    if path is None:
        flash(_("Choose a CSV file."), "error")
        return redirect(url_for("admin.index"))
    try:
        parsed, errors = users.parse_users_csv(path)
        if errors:
            session["spec_errors"] = [e.replace(str(path), "CSV") for e in errors][:200]
            flash(_("The CSV file has errors; nothing was imported."), "error")
        else:
            results = users.import_users(db(), parsed, actor_id=g.user.id)
            # One-time passwords are shown once, to the admin, and never stored (R-ROLE-4).
            session["one_time_passwords"] = [(u, p) for u, p in results if p]
            flash(_("%(n)s users imported.", n=len(results)), "ok")
    except users.UserError as exc:
        flash(str(exc), "error")
    finally:
        path.unlink(missing_ok=True)
    return redirect(url_for("admin.index"))


@bp.route("/users/<int:user_id>/active", methods=["POST"])
@roles("admin")
def set_active(user_id: int):
    active = request.form.get("active") == "1"
    with db().write() as s:
        user = s.get(User, user_id)
        if user is None:
            flash(_("No such user."), "error")
            return redirect(url_for("admin.index"))
        if user.id == g.user.id and not active:
            flash(_("You cannot disable your own account."), "error")
            return redirect(url_for("admin.index"))
        user.active = active
        ended = 0 if active else revoke_user_sessions(s, user.id, "disabled")
        ledger.append(s, actor_id=g.user.id, action="user.enabled" if active else "user.disabled", entity="user",
                      entity_id=user.id, data={"username": user.username, "sessions_ended": ended})
    flash(_("Account updated."), "ok")
    return redirect(url_for("admin.index"))


@bp.route("/users/<int:user_id>/sessions/end", methods=["POST"])
@roles("admin")
def end_sessions(user_id: int):
    with db().write() as s:
        n = revoke_user_sessions(s, user_id, "admin")
    flash(_("%(n)s sessions ended.", n=n), "ok")
    return redirect(url_for("admin.index"))


@bp.route("/ledger")
@roles("admin", "authority_officer")
def ledger_status():
    try:
        store = checkpoint_store(settings())
        checkpoints = store.read_all()[-20:]
    except ledger.LedgerError as exc:
        store, checkpoints = None, []
        flash(str(exc), "error")
    result = ledger.verify(db(), store)
    return render_template("admin/ledger.html", result=result.as_dict(), checkpoints=checkpoints)


@bp.route("/ledger/checkpoint", methods=["POST"])
@roles("admin")
def ledger_checkpoint():
    try:
        cp = ledger.checkpoint_now(db(), checkpoint_store(settings()))
        flash(_("Checkpoint written at sequence %(seq)s.", seq=cp.seq), "ok")
    except ledger.LedgerError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.ledger_status"))


@bp.route("/backups", methods=["POST"])
@roles("admin")
def make_backup():
    try:
        path = backup.create_backup(db(), settings(), label="manual")
        flash(_("Backup written: %(name)s", name=path.name), "ok")
    except backup.BackupError as exc:
        flash(str(exc), "error")
    return redirect(url_for("admin.index"))


@bp.route("/export/<subject_code>.csv")
@roles("admin", "authority_officer")
def export_results(subject_code: str):
    out = io.StringIO()
    try:
        course_results.export_csv(db(), subject_code, out)
    except (LookupError, ValueError) as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.index"))
    with db().write() as s:
        ledger.append(s, actor_id=g.user.id, action="results.exported", entity="subject", entity_id=subject_code,
                      data={"subject": subject_code, "bytes": len(out.getvalue().encode())})
    return Response(out.getvalue().encode("utf-8-sig"), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename=results-{subject_code}.csv",
                             "Cache-Control": "private, no-store"})


@bp.route("/authority")
@roles("authority_officer", "admin")
def authority():
    try:
        pending = changes.pending_changes(db(), g.user.id)
    except Exception as exc:  # noqa: BLE001
        flash(str(exc), "error")
        pending = []
    rows = [{"id": c.id, "script_id": c.script_id, "item_id": c.item_id, "before": f"{c.before_num}/{c.before_den}",
             "after": f"{c.after_num}/{c.after_den}", "reason": c.reason_code, "note": c.note,
             "requested_by": c.requested_by} for c in pending]
    return render_template("admin/authority.html", changes=rows)


@bp.route("/authority/<int:change_id>", methods=["POST"])
@roles("authority_officer")
def decide_change(change_id: int):
    try:
        changes.decide_change(db(), g.user.id, change_id, request.form.get("approve") == "1",
                              note=request.form.get("note", ""))
        flash(_("Decision recorded."), "ok")
    except Exception as exc:  # noqa: BLE001
        flash(str(exc), "error")
    return redirect(url_for("admin.authority"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
