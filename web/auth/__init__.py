"""Accounts: login, logout, TOTP two-factor, language (R-ROLE-4; ASVS 5.0 L2).

* Passwords: argon2id through ``marking.users.verify_password``.
* Throttling: Flask-Limiter on the login and MFA forms (memory storage, or Redis when
  MC_REDIS_URL is set) plus a per-account progressive delay from ``User.failed_logins``
  — never a hard lock-out, so nobody can lock a colleague out (ASVS 6.3.1).
* Sessions: server-side (``web.auth.sessions``); a new login ends the account's
  other sessions; logout, idle/absolute expiry and disabling end them for real.
* TOTP (pyotp) for team leaders, authority officers and admins, with enrolment.
  In the demo environment only (MC_ENV=demo) the MFA step is skipped (docs/web.md).
"""
from __future__ import annotations

import datetime as dt
import threading
from urllib.parse import urlparse

import pyotp
from flask import (Blueprint, Flask, current_app, flash, g, jsonify, redirect, render_template, request,
                   session, url_for)
from flask_babel import gettext as _
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from marking import ledger, users
from marking.models import User
from marking.models.base import utcnow

from ..permissions import authenticated, pre_mfa, public
from . import sessions

bp = Blueprint("auth", __name__, url_prefix="/auth")

DELAY_AFTER_FAILURES = 3
MAX_DELAY_SECONDS = 300
_DUMMY_HASH = users._hasher.hash("not-a-real-password-0")  # equal work for unknown names
_totp_lock = threading.Lock()
LOCALES = ("zh_CN", "en")


def cookie_name() -> str:
    return "__Host-mc_session" if current_app.config["MC_ENV"] == "production" else "mc_session"


def db():
    return current_app.extensions["mc_db"]


def delay_remaining(user: User, now: dt.datetime) -> int:
    """Seconds the account must wait before the next password check (progressive, capped)."""
    if user.failed_logins < DELAY_AFTER_FAILURES or user.last_failed_at is None:
        return 0
    delay = min(MAX_DELAY_SECONDS, 2 ** (user.failed_logins - DELAY_AFTER_FAILURES + 1))
    remaining = (user.last_failed_at + dt.timedelta(seconds=delay) - now).total_seconds()
    return max(0, int(remaining + 0.999))


def _safe_next(target: str | None) -> str | None:
    if not target:
        return None
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def _set_cookie(response, token: str) -> None:
    response.set_cookie(cookie_name(), token, httponly=True, samesite="Lax", path="/",
                        secure=current_app.config["MC_ENV"] == "production")


def load_user() -> None:
    token = request.cookies.get(cookie_name())
    g.user = sessions.load(db(), token, idle_minutes=current_app.config["MC_SESSION_IDLE_MINUTES"],
                           mfa_skip=current_app.config["MC_MFA_SKIP"],
                           touches=current_app.extensions.get("mc_session_touches")) if token else None


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if request.method == "GET":
        return render_template("auth/login.html", next=_safe_next(request.args.get("next")))
    username = (request.form.get("username") or "").strip()
    password = request.form.get("password") or ""
    now = utcnow()
    with db().read() as s:
        user = users.get_by_username(s, username) if username else None
        wait = delay_remaining(user, now) if user is not None else 0
    if wait:
        flash(_("Too many failed attempts for this account. Try again in %(n)s seconds.", n=wait), "error")
        return render_template("auth/login.html", username=username), 429
    ok = users.verify_password(user, password) if user is not None else _burn(password)
    if not ok or user is None or not user.active:
        if user is not None:
            with db().write() as s:
                row = s.get(User, user.id)
                row.failed_logins = (row.failed_logins or 0) + 1
                row.last_failed_at = now
        flash(_("Unknown user name or wrong password."), "error")
        return render_template("auth/login.html", username=username), 401
    with db().write() as s:
        row = s.get(User, user.id)
        row.failed_logins = 0
        row.last_failed_at = None
        if users.needs_rehash(row):
            try:
                row.password_hash = users.hash_password(password)
            except users.UserError:
                pass
    mfa_required = sessions.needs_mfa(user.role_names) and not current_app.config["MC_MFA_SKIP"]
    token = sessions.start_session(db(), user.id, ip=request.remote_addr,
                                   user_agent=request.headers.get("User-Agent"),
                                   absolute_hours=current_app.config["MC_SESSION_ABSOLUTE_HOURS"],
                                   mfa_passed=not mfa_required)
    session.clear()   # the pre-login CSRF secret goes: the new session has its own token (web.auth.csrf)
    target = _safe_next(request.form.get("next")) or url_for("ui.home")
    if mfa_required:
        target = url_for("auth.mfa_enrol" if not user.totp_secret else "auth.mfa", next=target)
    response = redirect(target)
    _set_cookie(response, token)
    return response


def _burn(password: str) -> bool:
    try:
        users._hasher.verify(_DUMMY_HASH, password)
    except Exception:  # noqa: BLE001 - always a mismatch; only the work matters
        pass
    return False


@bp.route("/logout", methods=["POST"])
@authenticated
@pre_mfa
def logout():
    token = request.cookies.get(cookie_name())
    if token:
        sessions.end_session(db(), token, "logout")
    session.clear()
    response = redirect(url_for("auth.login"))
    response.delete_cookie(cookie_name(), path="/")
    return response


def _verify_totp(user_id: int, secret: str, code: str) -> bool:
    code = (code or "").strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return False
    totp = pyotp.TOTP(secret)
    now = utcnow()
    for offset in (0, -1, 1):
        moment = now + dt.timedelta(seconds=30 * offset)
        if totp.at(moment) == code:
            step = totp.timecode(moment)
            last = current_app.extensions.setdefault("mc_totp_last", {})  # user id -> last step used
            with _totp_lock:
                if last.get(user_id, -1) >= step:
                    return False    # a code is accepted once (no replay)
                last[user_id] = step
            return True
    return False


@bp.route("/mfa", methods=["GET", "POST"])
@authenticated
@pre_mfa
def mfa():
    user = g.user
    if not user.mfa_pending:
        return redirect(url_for("ui.home"))
    if not user.totp_enrolled:
        return redirect(url_for("auth.mfa_enrol"))
    if request.method == "GET":
        return render_template("auth/mfa.html", next=_safe_next(request.args.get("next")))
    with db().read() as s:
        secret = s.get(User, user.id).totp_secret
    if not _verify_totp(user.id, secret, request.form.get("code", "")):
        flash(_("That code is not valid. Use the current 6-digit code from your authenticator."), "error")
        return render_template("auth/mfa.html", next=_safe_next(request.form.get("next"))), 401
    sessions.mark_mfa_passed(db(), user.session_id)
    return redirect(_safe_next(request.form.get("next")) or url_for("ui.home"))


@bp.route("/mfa/enrol", methods=["GET", "POST"])
@authenticated
@pre_mfa
def mfa_enrol():
    user = g.user
    if user.totp_enrolled and user.mfa_pending:
        return redirect(url_for("auth.mfa"))
    if request.method == "GET" or "mfa_pending_secret" not in session:
        secret = session.get("mfa_pending_secret") or pyotp.random_base32()
        session["mfa_pending_secret"] = secret
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name="Marking centre")
        return render_template("auth/mfa_enrol.html", secret=secret, uri=uri)
    secret = session["mfa_pending_secret"]
    if not _verify_totp(user.id, secret, request.form.get("code", "")):
        flash(_("That code is not valid. Check the secret in your authenticator and try again."), "error")
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name="Marking centre")
        return render_template("auth/mfa_enrol.html", secret=secret, uri=uri), 401
    with db().write() as s:
        row = s.get(User, user.id)
        row.totp_secret = secret
        ledger.append(s, actor_id=user.id, action="user.mfa_enrolled", entity="user", entity_id=user.id,
                      data={"username": user.username})
    session.pop("mfa_pending_secret", None)
    sessions.mark_mfa_passed(db(), user.session_id)
    flash(_("Two-factor sign-in is set up."), "ok")
    return redirect(url_for("ui.home"))


@bp.route("/locale", methods=["POST"])
@authenticated
@pre_mfa
def set_locale():
    locale = request.form.get("locale") or (request.get_json(silent=True) or {}).get("locale")
    if locale not in LOCALES:
        return jsonify(error="bad_locale", message=_("Unknown language.")), 422
    with db().write() as s:
        s.get(User, g.user.id).locale = locale
    back = _safe_next(request.form.get("next")) or url_for("ui.home")
    return redirect(back)


@bp.route("/whoami")
@authenticated
@pre_mfa
def whoami():
    u = g.user
    return jsonify(username=u.username, display_name=u.display_name, roles=sorted(u.roles),
                   locale=u.locale, mfa_pending=u.mfa_pending)


def init_app(app: Flask) -> None:
    from . import csrf

    settings = app.config["MC_SETTINGS"]
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.redis_url or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    app.before_request(load_user)
    csrf.init_app(app)   # after the session check: a logged-in request's token is its session's
    app.register_blueprint(bp)
    # One limiter per app (tests build many apps); it throttles only the credential
    # checks (POST), per client address.
    limiter = Limiter(key_func=get_remote_address, default_limits=[], app=app)
    # No default or application-wide limits, so the limiter's own before_request check
    # finds nothing to count on any request; the decorated views below check theirs
    # when called. Without the hook every request saves its cost (1.7 % of a server's
    # CPU at the load target, issue 8).
    app.before_request_funcs[None].remove(limiter._check_request_limit)
    app.extensions["mc_limiter"] = limiter
    for endpoint, key in (("auth.login", "MC_LOGIN_LIMIT"), ("auth.mfa", "MC_MFA_LIMIT"),
                          ("auth.mfa_enrol", "MC_MFA_LIMIT")):
        rule = app.config[key]
        app.view_functions[endpoint] = limiter.limit(rule, methods=["POST"])(app.view_functions[endpoint])
