"""Team-leader calibration screens (issue 7): trial marking, scheme draft/submit/decide,
standardisation sets, qualification status, marker statistics with validity and drift
plots (PNG, role-checked), suspensions with re-queue counts, item-analysis export.

Every view checks the team-leader duty on the item (or admin); the calibration services
check it again and their refusals are shown as they are.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from flask import abort, flash, g, jsonify, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _

from calibration import monitor, plots, scheme, standardisation, stats, suspension

from .. import queries
from ..permissions import roles
from ..ui import db
from . import LEADERS, _require, bp


def _back(item_id: int):
    return redirect(url_for("leader.calibration", item_id=item_id))


def _do(item_id: int, ok, fn):
    _require(item_id)
    try:
        result = fn()
        flash(ok(result) if callable(ok) else ok, "ok")
    except Exception as exc:  # noqa: BLE001 - the service's message for people
        flash(str(exc), "error")
    return _back(item_id)


STAT_KEYS = ("user_id", "username", "count", "mean", "exact", "seeds", "validity", "seed_bias", "pairs",
             "rechecked", "recheck_changed", "recheck_change_rate")


def _recheck_cell(m: dict) -> str | None:
    """'changed / re-checked' (R-MARK-5 back-reads of the marker's work), or None before any."""
    return f"{m['recheck_changed']} / {m['rechecked']}" if m.get("rechecked") else None


def _alarm_label(cause: str | None) -> str:
    return {"validity": _("Validity alarm"), "drift": _("Drift alarm")}.get(cause or "", _("No alarm"))


def marker_rows(item_id: int) -> dict:
    """The marker statistics table: stats.marker_statistics plus each marker's current alarm
    (calibration.monitor.evaluate, the check the monitor suspends on)."""
    data = stats.marker_statistics(db(), item_id)
    rows = []
    with db().read() as session:
        for m in data["markers"]:
            cause = monitor.evaluate(session, m["user_id"], item_id).cause
            rows.append({**{k: m.get(k) for k in STAT_KEYS}, "recheck": _recheck_cell(m),
                         "alarm": cause, "alarm_label": _alarm_label(cause)})
    return {"group": data["group"], "markers": rows}


@bp.route("/items/<int:item_id>/calibration/statistics")
@roles(*LEADERS)
def statistics(item_id: int):
    """The marker statistics table as JSON, for the page's live refresh (calibration.js)."""
    _require(item_id)
    response = jsonify(marker_rows(item_id))
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/items/<int:item_id>/calibration")
@roles(*LEADERS)
def calibration(item_id: int):
    _require(item_id)
    info = queries.item_info(db(), item_id)
    if info is None:
        abort(404)
    return render_template("leader/calibration.html", item=info, versions=scheme.versions(db(), item_id),
                           trial=scheme.trial_marks(db(), item_id), sets=standardisation.sets(db(), item_id),
                           qualification=standardisation.qualification_status(db(), item_id),
                           statistics=marker_rows(item_id),
                           suspensions=suspension.suspensions(db(), item_id))


@bp.route("/items/<int:item_id>/calibration/trial", methods=["POST"])
@roles("team_leader")
def start_trial(item_id: int):
    count = request.form.get("count", type=int) or 5
    return _do(item_id, lambda ids: _("Trial set reserved: %(n)s responses.", n=len(ids)),
               lambda: scheme.start_trial(db(), g.user.id, item_id, count))


@bp.route("/items/<int:item_id>/calibration/trial/mark")
@roles("team_leader")
def trial_workbench(item_id: int):
    from ..marker import render_workbench
    _require(item_id)
    return render_workbench(item_id, "trial", ("team_leader",))


@bp.route("/items/<int:item_id>/calibration/schemes", methods=["POST"])
@roles(*LEADERS)
def draft_scheme(item_id: int):
    return _do(item_id, _("Scheme draft saved."),
               lambda: scheme.draft_scheme(db(), g.user.id, item_id, request.form.get("text", "")))


@bp.route("/items/<int:item_id>/calibration/schemes/<int:scheme_id>/submit", methods=["POST"])
@roles(*LEADERS)
def submit_scheme(item_id: int, scheme_id: int):
    return _do(item_id, _("Scheme submitted for approval by another person."),
               lambda: scheme.submit_scheme(db(), g.user.id, scheme_id))


@bp.route("/items/<int:item_id>/calibration/schemes/<int:scheme_id>/decide", methods=["POST"])
@roles(*LEADERS)
def decide_scheme(item_id: int, scheme_id: int):
    approve = request.form.get("decision") == "approve"
    return _do(item_id, _("Scheme approved.") if approve else _("Scheme rejected."),
               lambda: scheme.decide_scheme(db(), g.user.id, scheme_id, approve, note=request.form.get("note", "")))


@bp.route("/items/<int:item_id>/calibration/sets", methods=["POST"])
@roles("team_leader")
def define_set(item_id: int):
    ids = [int(x) for x in request.form.get("response_ids", "").replace(",", " ").split() if x.isdigit()]
    entries = [{"response_id": rid, "purpose": request.form.get("purpose", "qualification"),
                "definitive": request.form.get("definitive", ""), "tolerance": request.form.get("tolerance") or None,
                "rationale": request.form.get("rationale", "")} for rid in ids]
    return _do(item_id, lambda rows: _("%(n)s responses added to the sets.", n=len(rows)),
               lambda: standardisation.define(db(), g.user.id, item_id, entries))


@bp.route("/items/<int:item_id>/calibration/sets/<int:row_id>/retire", methods=["POST"])
@roles("team_leader")
def retire_set(item_id: int, row_id: int):
    return _do(item_id, _("Response retired from the set."), lambda: standardisation.retire(db(), g.user.id, row_id))


@bp.route("/items/<int:item_id>/calibration/markers/<int:user_id>/suspend", methods=["POST"])
@roles(*LEADERS)
def suspend(item_id: int, user_id: int):
    def go():
        sid = suspension.suspend(db(), g.user.id, user_id, item_id, note=request.form.get("note", ""))
        return next((s for s in suspension.suspensions(db(), item_id) if s["id"] == sid), {})
    return _do(item_id, lambda row: _("Marker suspended; %(n)s marks re-queued.", n=row.get("requeued", 0)), go)


@bp.route("/items/<int:item_id>/calibration/markers/<int:user_id>/resume", methods=["POST"])
@roles(*LEADERS)
def resume(item_id: int, user_id: int):
    return _do(item_id, _("Marker resumed; they re-qualify before marking again."),
               lambda: suspension.resume(db(), g.user.id, user_id, item_id, note=request.form.get("note", "")))


def _png(data: bytes):
    response = send_file(__import__("io").BytesIO(data), mimetype="image/png")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.route("/items/<int:item_id>/calibration/markers/<int:user_id>/validity.png")
@roles(*LEADERS)
def validity_png(item_id: int, user_id: int):
    _require(item_id)
    series = stats.drift_series(db(), user_id, item_id)
    return _png(plots.validity_plot(series["seed_within"], series["validity_threshold"], series["validity_window"]))


@bp.route("/items/<int:item_id>/calibration/markers/<int:user_id>/drift.png")
@roles(*LEADERS)
def drift_png(item_id: int, user_id: int):
    _require(item_id)
    series = stats.drift_series(db(), user_id, item_id)
    return _png(plots.drift_plot(series["pairs"], series["cusum_pairs"]))


@bp.route("/items/<int:item_id>/calibration/means.png")
@roles(*LEADERS)
def means_png(item_id: int):
    _require(item_id)
    data = stats.marker_statistics(db(), item_id)
    return _png(plots.marker_means_plot(data["markers"], data["group"]["mean"]))


@bp.route("/items/<int:item_id>/calibration/analysis.<fmt>")
@roles(*LEADERS)
def analysis(item_id: int, fmt: str):
    """The subject's item analysis as HTML or PDF (calibration.analysis.export_report)."""
    from calibration import analysis as item_analysis
    _require(item_id)
    if fmt not in ("html", "pdf"):
        abort(404)
    info = queries.item_info(db(), item_id)
    with tempfile.TemporaryDirectory() as tmp:
        paths = item_analysis.export_report(db(), info["subject_code"], Path(tmp))
        data = paths[fmt].read_bytes()
    response = send_file(__import__("io").BytesIO(data), as_attachment=True,
                         mimetype="text/html" if fmt == "html" else "application/pdf",
                         download_name=f"item-analysis-{info['subject_code']}.{fmt}")
    response.headers["Cache-Control"] = "private, no-store"
    return response
