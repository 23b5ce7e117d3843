"""Team-leader console (R-ROLE-2, R-MARK-3/4/5/8): queues with live counts, arbitration and
review workspaces, problem/abnormal/dispute registers, the marker table, suspend/resume."""
from __future__ import annotations

from flask import Blueprint, Flask, abort, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _

from marking import problems, review

from .. import queries
from ..api.leader import change_duty
from ..marker import render_workbench
from ..permissions import roles
from ..ui import db

bp = Blueprint("leader", __name__, url_prefix="/leader")
LEADERS = ("team_leader", "admin")


def _require(item_id: int) -> None:
    if "admin" not in g.user.roles and not queries.has_item_duty(db(), g.user.id, item_id, "team_leader"):
        abort(403)


@bp.route("/")
@roles(*LEADERS)
def index():
    return render_template("leader/index.html", items=queries.duty_items(db(), g.user.id, "team_leader"))


@bp.route("/items/<int:item_id>")
@roles(*LEADERS)
def item(item_id: int):
    _require(item_id)
    info = queries.item_info(db(), item_id)
    if info is None:
        abort(404)
    registers = {}
    for register in ("problem", "abnormal", "review_dispute"):
        try:
            registers[register] = problems.leader_queue(db(), g.user.id, item_id, register)
        except Exception:  # noqa: BLE001 - e.g. an admin without the item duty
            registers[register] = []
    return render_template("leader/item.html", item=info, summary=queries.leader_summary(db(), item_id),
                           markers=queries.marker_table(db(), item_id), registers=registers,
                           problem_kinds=problems.PROBLEM_KINDS, abnormal_decisions=problems.ABNORMAL_DECISIONS)


@bp.route("/items/<int:item_id>/queue/<queue>")
@roles("team_leader")
def work(item_id: int, queue: str):
    """Arbitration / extra-read / review workspace: the workbench with earlier marks."""
    if queue not in ("arbitration", "extra", "review"):
        abort(404)
    _require(item_id)
    return render_workbench(item_id, queue, ("team_leader", "reviewer"))


def _done(item_id: int, ok_message: str, fn):
    try:
        fn()
        flash(ok_message, "ok")
    except Exception as exc:  # noqa: BLE001 - shown to the leader as it is
        flash(str(exc), "error")
    return redirect(url_for("leader.item", item_id=item_id))


@bp.route("/items/<int:item_id>/problems/<int:entry_id>", methods=["POST"])
@roles("team_leader")
def decide_problem(item_id: int, entry_id: int):
    _require(item_id)
    action = request.form.get("action", "")
    return _done(item_id, _("Problem decided."), lambda: problems.decide_problem(
        db(), g.user.id, entry_id, action, score=request.form.get("score") or None,
        condition_code=request.form.get("condition_code") or None, note=request.form.get("note", "")))


@bp.route("/items/<int:item_id>/abnormal/<int:entry_id>", methods=["POST"])
@roles("team_leader")
def decide_abnormal(item_id: int, entry_id: int):
    _require(item_id)
    decision = request.form.get("decision", "")
    return _done(item_id, _("Abnormal script decided."), lambda: problems.decide_abnormal(
        db(), g.user.id, entry_id, decision, new_score=request.form.get("score") or None,
        note=request.form.get("note", "")))


@bp.route("/items/<int:item_id>/disputes/<int:entry_id>", methods=["POST"])
@roles("team_leader")
def decide_dispute(item_id: int, entry_id: int):
    _require(item_id)
    return _done(item_id, _("Re-check dispute decided."), lambda: review.decide_dispute(
        db(), g.user.id, entry_id, score=request.form.get("score") or None, note=request.form.get("note", "")))


@bp.route("/items/<int:item_id>/markers/<int:user_id>", methods=["POST"])
@roles(*LEADERS)
def duty(item_id: int, user_id: int):
    _require(item_id)
    status = request.form.get("status")
    if status not in ("active", "suspended"):
        abort(422)
    try:
        change_duty(item_id, user_id, status, request.form.get("reason", ""))
    except ValueError as exc:
        flash(str(exc), "error")
        return redirect(url_for("leader.item", item_id=item_id))
    flash(_("Marker suspended.") if status == "suspended" else _("Marker resumed."), "ok")
    return redirect(url_for("leader.item", item_id=item_id))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

from . import calibration as _calibration  # noqa: E402,F401  (routes register on bp)
