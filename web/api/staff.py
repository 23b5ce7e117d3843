"""Technician and admin endpoints the consoles poll or fetch."""
from __future__ import annotations

from flask import jsonify

from .. import queries
from ..permissions import roles
from ..ui import db
from . import bp


@bp.route("/technician/batches")
@roles("technician", "admin")
def batches():
    """Scanner batches with card and OMR read progress."""
    return jsonify(batches=queries.batches(db()))
