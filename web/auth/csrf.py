"""CSRF protection (ASVS 3.5.1): every state-changing request carries a token.

* **Before login** (the login form, a session that has ended): Flask-WTF's token,
  whose secret lives in the signed cookie session (``mc_csrf``).
* **With a login session**: a token bound to that server-side session,
  ``HMAC-SHA256(SECRET_KEY, "mc-csrf" ‖ session id)``. Each login makes a new session
  id and so a new token; logout, revocation and timeouts end it with the session. It
  is sent as ``X-CSRFToken`` (fetch) or the ``csrf_token`` form field, as before.

Why two: checking a logged-in request needs one HMAC over data the session check has
already loaded, where Flask-WTF opens the signed cookie session and unsigns its token
on every request (about 6 % of a server's CPU at the load target, issue 8). The login
itself clears the cookie session, so a logged-in browser stops sending that cookie.

Checked after the session is loaded and before authorisation, so a POST without a
valid token is refused (400, ``csrf``) whoever sends it. Over HTTPS the Referer must
name this host, as Flask-WTF requires (``WTF_CSRF_SSL_STRICT``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac

from flask import Flask, current_app, g, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf, same_origin

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
FORM_FIELD = "csrf_token"
HEADER = "X-CSRFToken"


def session_token(secret_key: str | bytes, session_id: str) -> str:
    """The CSRF token of one login session (``session_id``: the stored hash of its cookie)."""
    key = secret_key.encode() if isinstance(secret_key, str) else secret_key
    digest = hmac.new(key, b"mc-csrf\x00" + session_id.encode("ascii"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def token() -> str:
    """The token pages embed (``csrf_token()`` in templates): the session's when logged in."""
    user = g.get("user")
    if user is not None:
        return session_token(current_app.secret_key, user.session_id)
    return generate_csrf()


def check() -> None:
    """``before_request``, after the session check: raises CSRFError (400) when the token is wrong."""
    if request.method in SAFE_METHODS or not current_app.config.get("WTF_CSRF_ENABLED", True):
        return
    user = g.get("user")
    if user is None:
        current_app.extensions["csrf"].protect()
        return
    sent = request.headers.get(HEADER) or request.form.get(FORM_FIELD) or ""
    if not hmac.compare_digest(sent.encode("ascii", "replace"),
                               session_token(current_app.secret_key, user.session_id).encode("ascii")):
        raise CSRFError("The CSRF token is missing or does not belong to this session.")
    if request.is_secure and current_app.config.get("WTF_CSRF_SSL_STRICT", True):
        if not request.referrer:
            raise CSRFError("The referrer header is missing.")
        if not same_origin(request.referrer, f"https://{request.host}/"):
            raise CSRFError("The referrer does not match the host.")
    g.csrf_valid = True


class CookieSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, opened only when the request carries the cookie.

    Flask builds its signing serializer before it looks for the cookie; a logged-in
    browser no longer sends one (the login clears it), so most requests skip that work.
    """

    def open_session(self, app: Flask, request):
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    """Flask-WTF for the anonymous check and its token; :func:`check` runs every request's
    (register after the session check)."""
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False
    app.session_interface = CookieSessionInterface()
    CSRFProtect(app)
    app.before_request(check)
