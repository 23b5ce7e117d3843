"""JSON API under /api/v1 (used by the workbench pages' fetch calls; CSRF via X-CSRFToken).

The OpenAPI 3 document at /api/v1/openapi.json is generated from the routes: their
methods, path parameters, docstrings and declared roles.
"""
from __future__ import annotations

import re

from flask import Blueprint, Flask, current_app, jsonify

from ..permissions import ATTR, AUTHENTICATED, PUBLIC, public

bp = Blueprint("api", __name__, url_prefix="/api/v1")

from . import leader, marker, staff  # noqa: E402,F401  (routes register on bp)


@bp.route("/openapi.json")
@public
def openapi():
    """This document."""
    paths: dict = {}
    for rule in current_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        view = current_app.view_functions[rule.endpoint]
        access = getattr(view, ATTR, None)
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        doc = (view.__doc__ or rule.endpoint).strip()
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op = {
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "summary": doc.splitlines()[0],
                "description": doc,
                "parameters": [{"name": a, "in": "path", "required": True,
                                "schema": {"type": "integer" if "int:" in rule.rule and f"int:{a}" in rule.rule
                                           else "string"}} for a in sorted(rule.arguments)],
                "responses": {"200": {"description": "OK", "content": {"application/json": {}}},
                              "401": {"$ref": "#/components/responses/Error"},
                              "403": {"$ref": "#/components/responses/Error"}},
                "x-roles": "public" if access == PUBLIC else ("any logged-in user" if access == AUTHENTICATED
                                                              else sorted(access or [])),
            }
            if access != PUBLIC:
                op["security"] = [{"session": []}]
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                op["requestBody"] = {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}
                op["parameters"].append({"name": "X-CSRFToken", "in": "header", "required": True,
                                         "schema": {"type": "string"}})
            paths.setdefault(path, {})[method.lower()] = op
    return jsonify({
        "openapi": "3.0.3",
        "info": {"title": "Marking centre workbench API", "version": "1"},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "mc_session"}},
            "responses": {"Error": {"description": "An error with a message for people",
                                    "content": {"application/json": {"schema": {
                                        "type": "object", "properties": {"error": {"type": "string"},
                                                                         "message": {"type": "string"}}}}}}},
        },
        "paths": dict(sorted(paths.items())),
    })


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
