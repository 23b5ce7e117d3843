"""Liveness and readiness probes."""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify
from sqlalchemy import text

from marking import migrate

from .permissions import public

bp = Blueprint("health", __name__)


@bp.route("/healthz")
@public
def healthz():
    return jsonify(status="ok")


@bp.route("/readyz")
@public
def readyz():
    """Ready when the database answers and its schema is at the head revision."""
    db = current_app.extensions["mc_db"]
    try:
        with db.read() as s:
            s.execute(text("SELECT 1"))
        current, head = migrate.current_revision(db), migrate.head_revision()
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return jsonify(status="unavailable", reason=f"database: {exc.__class__.__name__}"), 503
    if current != head:
        return jsonify(status="unavailable", reason=f"schema at {current}, expected {head}"), 503
    live = current_app.extensions.get("mc_live")
    chainer = current_app.extensions.get("mc_chainer")
    backups = current_app.extensions.get("mc_backups")
    touches = current_app.extensions.get("mc_session_touches")
    return jsonify(status="ready", schema=current, outbox_drain=bool(live and live.drainer_running()),
                   ledger_chaining=db.ledger_chaining, ledger_chainer=bool(chainer and chainer.running()),
                   backup_scheduler=bool(backups and backups.running()),
                   session_touches=bool(touches and touches.running()))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
