"""Marker workbench pages (R-ROLE-1, R-SEC-1). Work happens through /api/v1 (web.api.marker)."""
from __future__ import annotations

from flask import Blueprint, Flask, abort, g, render_template

from .. import queries
from ..permissions import roles
from ..ui import db

bp = Blueprint("marker", __name__, url_prefix="/marker")

CONDITION_CODES = (("NR", "No response"), ("OT", "Off topic"), ("IL", "Illegible"), ("RF", "Refused / crossed out"))
FLAGS = (("handwriting_change", "Handwriting changes"), ("identity_written", "Identity written"),
         ("special_marks", "Special marks"), ("suspected_copying", "Suspected copying"))
PROBLEMS = (("illegible", "Image illegible"), ("wrong_image", "Wrong image"), ("cut_off", "Cut off"),
            ("blank", "Blank page"))


@bp.route("/")
@roles("marker", "team_leader")
def index():
    return render_template("marker/index.html", items=queries.duty_items(db(), g.user.id, "marker"))


@bp.route("/items/<int:item_id>")
@roles("marker", "team_leader")
def workbench(item_id: int):
    return render_workbench(item_id, "marking", ("marker",))


@bp.route("/items/<int:item_id>/qualify")
@roles("marker", "team_leader")
def qualify(item_id: int):
    """Qualification set through the normal workbench (calibration.standardisation.next_task)."""
    return render_workbench(item_id, "qualification", ("marker",))


@bp.route("/items/<int:item_id>/practice")
@roles("marker", "team_leader")
def practice(item_id: int):
    return render_workbench(item_id, "practice", ("marker",))


def render_workbench(item_id: int, queue: str, duties: tuple[str, ...]):
    item = queries.item_info(db(), item_id)
    if item is None or item["kind"] != "subjective":
        abort(404)
    if not queries.has_item_duty(db(), g.user.id, item_id, *duties, active=False):
        abort(403)
    return render_template("marker/workbench.html", item=item, queue=queue, codes=CONDITION_CODES,
                           flags=FLAGS, problems=PROBLEMS)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
