"""Marking endpoints: claim, submit (then the next task), renew, release, report, image.

Views call the marking services (``marking.dispatch``, ``marking.submission``,
``marking.problems``); the services check duties, qualification, exclusions, caps and
lease ownership. What goes back to a marker never names a candidate nor carries
another marker's score (R-SEC-1): the TaskView is blind by construction, its image
reference is replaced by a lease-checked URL.
"""
from __future__ import annotations

from typing import Any

from flask import abort, g, jsonify, request, url_for

from marking import dispatch, problems, submission, workbench

from .. import queries
from ..errors import error_response, service_error
from ..images import send_image
from ..permissions import roles
from ..ui import db
from . import bp

WORKERS = ("marker", "team_leader")
CALIBRATION_QUEUES = ("trial", "qualification", "practice")


def deal(user_id: int, item_id: int, queue: str):
    """The next task of a queue: normal dispatch, or calibration (trial, qualification, practice)."""
    if queue == "trial":
        from calibration import scheme
        return scheme.next_trial_task(db(), user_id, item_id)
    if queue in ("qualification", "practice"):
        from calibration import standardisation
        if queue == "qualification":
            standardisation.start_attempt(db(), user_id, item_id)   # opens or continues the attempt
        return standardisation.next_task(db(), user_id, item_id, queue)
    return dispatch.claim_next(db(), user_id, item_id, queue=queue)


def body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def task_json(view: dispatch.TaskView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    data = view.as_dict()
    data.pop("image_ref", None)
    data["image_url"] = url_for("api.task_image", token=view.token) if view.image_ref else None
    return data


def result_json(result: submission.SubmitResult) -> dict[str, Any]:
    return {"mark_id": result.mark_id, "score": result.score, "condition_code": result.condition_code,
            "replayed": result.replayed}


@bp.route("/marker/items")
@roles(*WORKERS)
def my_items():
    """Items the caller marks (active and suspended duties)."""
    return jsonify(items=queries.duty_items(db(), g.user.id, "marker"))


@bp.route("/items/<int:item_id>/claim", methods=["POST"])
@roles(*WORKERS)
def claim(item_id: int):
    """Deal the next response of the item under a lease (queue: marking, arbitration, extra, review)."""
    queue = body().get("queue", "marking")
    if queue not in dispatch.QUEUES and queue not in CALIBRATION_QUEUES:
        return error_response(422, "bad_queue", f"unknown queue {queue!r}")
    try:
        view = deal(g.user.id, item_id, queue)
    except Exception as exc:  # noqa: BLE001 - mapped to a clear message
        return service_error(exc)
    return jsonify(task=task_json(view), empty=view is None)


@bp.route("/tasks/submit", methods=["POST"])
@roles(*WORKERS)
def submit():
    """Submit the caller's mark for a leased task; with ``next`` the next task is dealt at once."""
    data = body()
    token = str(data.get("token") or "")
    score = data.get("score")
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        score = str(score)   # never a binary float on the score path (R-MARK-2)
    item_id = data.get("item_id")
    queue = data.get("queue", "marking")
    fields = dict(request_id=str(data.get("request_id") or ""), condition_code=data.get("condition_code") or None,
                  flags=data.get("flags") or (),
                  dwell_ms=int(data["dwell_ms"]) if isinstance(data.get("dwell_ms"), int) else None)
    if data.get("next") and isinstance(item_id, int) and queue in dispatch.QUEUES:
        # The workbench's usual step: the mark and the next task in one transaction.
        try:
            both = workbench.submit_and_claim_next(db(), g.user.id, token, score, item_id=item_id, queue=queue,
                                                   **fields)
        except Exception as exc:  # noqa: BLE001
            return service_error(exc)
        out = {"result": result_json(both.result), "next": task_json(both.next)}
        if both.next_error:
            out["next_error"] = both.next_error
        return jsonify(out)
    try:
        result = submission.submit_mark(db(), g.user.id, token, score, **fields)
    except Exception as exc:  # noqa: BLE001
        return service_error(exc)
    out: dict[str, Any] = {"result": result_json(result)}
    if data.get("next") and isinstance(item_id, int):
        try:
            if queue not in CALIBRATION_QUEUES:
                queue = "marking"
            out["next"] = task_json(deal(g.user.id, item_id, queue))
        except Exception as exc:  # noqa: BLE001 - the mark is saved; say why nothing follows
            out["next"] = None
            out["next_error"] = str(exc)
    return jsonify(out)


@bp.route("/tasks/renew", methods=["POST"])
@roles(*WORKERS)
def renew():
    """Heartbeat: keep the caller's lease alive while the page is open."""
    try:
        until = dispatch.renew_lease(db(), g.user.id, str(body().get("token") or ""))
    except Exception as exc:  # noqa: BLE001
        return service_error(exc)
    return jsonify(lease_expires_at=until.isoformat())


@bp.route("/tasks/release", methods=["POST"])
@roles(*WORKERS)
def release():
    """Hand a task back unmarked (it will not be dealt to the caller again)."""
    try:
        dispatch.release_task(db(), g.user.id, str(body().get("token") or ""))
    except Exception as exc:  # noqa: BLE001
        return service_error(exc)
    return jsonify(ok=True)


@bp.route("/tasks/problem", methods=["POST"])
@roles(*WORKERS)
def report_problem():
    """Report a problem (illegible, wrong image, cut off, blank) instead of a score."""
    data = body()
    try:
        entry = problems.report_problem(db(), g.user.id, str(data.get("token") or ""), str(data.get("kind") or ""),
                                        note=str(data.get("note") or ""))
    except Exception as exc:  # noqa: BLE001
        return service_error(exc)
    return jsonify(entry_id=entry)


@bp.route("/tasks/<token>/image")
@roles(*WORKERS)
def task_image(token: str):
    """The item image of a task — only while the caller holds a live lease on it."""
    task = queries.own_lease(db(), g.user.id, token)
    if task is None:
        abort(404)
    return send_image(queries.response_image(db(), task.response_id))


@bp.route("/marker/items/<int:item_id>/progress")
@roles(*WORKERS)
def progress(item_id: int):
    """The caller's own progress on the item today: done, cap, speed."""
    return jsonify(queries.marker_progress(db(), g.user.id, item_id))


@bp.route("/marker/items/<int:item_id>/recent")
@roles(*WORKERS)
def recent(item_id: int):
    """The caller's own latest marks on the item (never others' marks or outcomes)."""
    return jsonify(marks=queries.recent_marks(db(), g.user.id, item_id))


@bp.route("/marks/<int:mark_id>/revise", methods=["POST"])
@roles(*WORKERS)
def revise(mark_id: int):
    """Revise the caller's own unresolved mark (through the engine; ledger reason marker_revision)."""
    data = body()
    try:
        result = submission.revise_mark(db(), g.user.id, mark_id, data.get("score"),
                                        condition_code=data.get("condition_code") or None,
                                        request_id=str(data.get("request_id") or ""))
    except Exception as exc:  # noqa: BLE001 - mapped to a clear message by service_error
        return service_error(exc)
    return jsonify(ok=True, score=result.score, unchanged=result.replayed)
