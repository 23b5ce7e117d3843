"""Every error gets a clear message: JSON ``{"error", "message"}`` for API/fetch calls,
a friendly page for HTML (section 8 of issue 6)."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DataError
from werkzeug.exceptions import HTTPException

from marking.access import LeaseError, NotAllowed
from marking.scores import ScoreError

from .permissions import Denied

log = logging.getLogger("web.errors")


def wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def error_response(status: int, code: str, message: str):
    if wants_json():
        return jsonify(error=code, message=message), status
    if status == 401 and code in ("login_required",):
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if status == 401 and code == "mfa_required":
        return redirect(url_for("auth.mfa", next=request.full_path.rstrip("?")))
    return render_template("errors/error.html", status=status, code=code, message=message), status


def service_error(exc: Exception):
    """Map a marking-service refusal to an HTTP answer (used by views that call services)."""
    from marking.dispatch import CapReached

    if isinstance(exc, CapReached):
        return error_response(409, "cap_reached", str(exc))
    if isinstance(exc, LeaseError):
        return error_response(409, "lease_lost", str(exc))
    if isinstance(exc, NotAllowed):
        return error_response(403, "not_allowed", str(exc))
    if isinstance(exc, ScoreError):
        return error_response(422, "invalid_score", str(exc))
    if isinstance(exc, LookupError):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, (ValueError, TypeError)):
        return error_response(422, "invalid", str(exc))
    raise exc


def init_app(app: Flask) -> None:
    @app.errorhandler(Denied)
    def _denied(exc: Denied):
        messages = {"undeclared": _("This address is not available."),
                    "login_required": _("Please log in."),
                    "mfa_required": _("Two-factor verification is required."),
                    "forbidden": _("Your role does not allow this.")}
        return error_response(exc.status, exc.code, messages.get(exc.code, exc.message))

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError):
        return error_response(400, "csrf", _("The form expired or did not come from this site. "
                                              "Reload the page and try again."))

    @app.errorhandler(NotAllowed)
    def _not_allowed(exc: NotAllowed):
        return service_error(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if exc.code == 429:
            return error_response(429, "too_many_requests",
                                  _("Too many attempts. Wait a minute and try again."))
        messages = {404: _("Nothing here: the address is wrong or the item no longer exists."),
                    405: _("This action is not available here."),
                    413: _("The upload is too large.")}
        return error_response(exc.code or 500, exc.name.lower().replace(" ", "_"),
                              messages.get(exc.code, exc.description or exc.name))

    @app.errorhandler(DataError)
    @app.errorhandler(OverflowError)
    def _unstorable(exc: Exception):
        # A request value the database cannot take (an id beyond 64 bits, a NUL character in
        # a text field) is the client's error, not the server's: 422, never a 500.
        log.info("refused unstorable value on %s %s: %s", request.method, request.path,
                 str(exc).splitlines()[0][:200])
        return error_response(422, "invalid", "A value in the request is out of range or contains "
                                              "characters that cannot be stored.")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, HTTPException):
            return _http(exc)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "server_error",
                              _("Something went wrong on the server. It has been logged; please try again."))
