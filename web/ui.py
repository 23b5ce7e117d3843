"""Shared page furniture: the home page, template context, helpers for views."""
from __future__ import annotations

from flask import Blueprint, Flask, current_app, g, redirect, render_template, url_for
from flask_babel import get_locale

from .auth import csrf
from .permissions import authenticated

bp = Blueprint("ui", __name__)

# role -> (endpoint, label) of the console it opens
CONSOLES = (
    ("marker", "marker.index", "Marking"),
    ("team_leader", "leader.index", "Team leader"),
    ("technician", "technician.index", "Scanning"),
    ("key_officer", "technician.keys", "Answer keys"),
    ("authority_officer", "admin.authority", "Authority approvals"),
    ("admin", "admin.index", "Administration"),
)


def db():
    return current_app.extensions["mc_db"]


def settings():
    return current_app.config["MC_SETTINGS"]


def consoles_for(user) -> list[tuple[str, str]]:
    return [(endpoint, label) for role, endpoint, label in CONSOLES if user is not None and role in user.roles]


@bp.route("/")
@authenticated
def home():
    consoles = consoles_for(g.user)
    if len(consoles) == 1:
        return redirect(url_for(consoles[0][0]))
    return render_template("home.html", consoles=consoles)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def _context():
        user = g.get("user")
        return {"current_user": user, "consoles": consoles_for(user) if user and not user.mfa_pending else [],
                "csrf_token": csrf.token, "locale": "zh_CN" if str(get_locale()).startswith("zh") else "en",
                "mc_env": current_app.config["MC_ENV"],
                "mfa_skipped": current_app.config["MC_MFA_SKIP"]}
