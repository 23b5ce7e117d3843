"""Team-leader endpoints: live dashboard numbers, register images, suspend/resume a marker."""
from __future__ import annotations

from flask import abort, g, jsonify, request
from sqlalchemy import select

from calibration import suspension
from marking import dispatch
from marking.models import ItemDuty, RegisterEntry, Response

from .. import queries
from ..errors import error_response
from ..images import send_image
from ..permissions import roles
from ..ui import db
from . import bp

LEADERS = ("team_leader", "admin")


def require_item_leader(item_id: int) -> None:
    """Object-level check: the item's team leader (active duty) or an admin (R-ROLE-2)."""
    if "admin" in g.user.roles:
        return
    if not queries.has_item_duty(db(), g.user.id, item_id, "team_leader"):
        abort(403)


@bp.route("/leader/items")
@roles(*LEADERS)
def leader_items():
    """Items the caller leads."""
    return jsonify(items=queries.duty_items(db(), g.user.id, "team_leader"))


@bp.route("/leader/items/<int:item_id>/summary")
@roles(*LEADERS)
def leader_summary(item_id: int):
    """Queue counts (normal, third, arbitration, review, problem, abnormal) and progress."""
    require_item_leader(item_id)
    return jsonify(summary=queries.leader_summary(db(), item_id), tasks=dispatch.queue_counts(db(), item_id))


@bp.route("/leader/items/<int:item_id>/markers")
@roles(*LEADERS)
def leader_markers(item_id: int):
    """The marker table: status, marks today/total, speed, agreement, third-marking rate."""
    require_item_leader(item_id)
    return jsonify(markers=queries.marker_table(db(), item_id))


@bp.route("/leader/entries/<int:entry_id>/image")
@roles(*LEADERS)
def entry_image(entry_id: int):
    """The response image of a register entry (problem, abnormal, dispute) for the item's leader."""
    with db().read() as s:
        row = s.execute(select(Response.item_id, Response.image_sha256)
                        .join(RegisterEntry, RegisterEntry.response_id == Response.id)
                        .where(RegisterEntry.id == entry_id)).first()
    if row is None:
        abort(404)
    require_item_leader(row.item_id)
    return send_image(row.image_sha256)


@bp.route("/leader/items/<int:item_id>/duties/<int:user_id>", methods=["POST"])
@roles(*LEADERS)
def set_duty(item_id: int, user_id: int):
    """Suspend or resume a marker on the item (ItemDuty.status; recorded in the ledger)."""
    require_item_leader(item_id)
    data = request.get_json(silent=True) or request.form
    status = data.get("status")
    reason = str(data.get("reason") or "")[:200]
    if status not in ("active", "suspended"):
        return error_response(422, "bad_status", "status must be active or suspended")
    try:
        return jsonify(ok=True, status=change_duty(item_id, user_id, status, reason))
    except ValueError as exc:  # already suspended / not suspended: a clear 409, nothing changed
        return error_response(409, "duty_unchanged", str(exc))


def change_duty(item_id: int, user_id: int, status: str, reason: str) -> str:
    """Suspend or resume through calibration.suspension: suspending holds dispatch and
    re-queues the marker's marks since their last passed seed (issue 7); both go through
    the ledger. Returns the marker's duty status afterwards."""
    if status == "suspended":
        suspension.suspend(db(), g.user.id, user_id, item_id, note=reason)
    else:
        suspension.resume(db(), g.user.id, user_id, item_id, note=reason)
    with db().read() as s:
        return s.execute(select(ItemDuty.status).where(ItemDuty.item_id == item_id, ItemDuty.user_id == user_id,
                                                       ItemDuty.duty == "marker")).scalar_one()
