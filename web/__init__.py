"""The web workbench: ``create_app`` wires one subsystem after another (Redash style).

Layers: web → marking (services own their transactions; views only call them).
Every route declares the roles allowed (``web.permissions``); an undeclared route is
refused, so a forgotten decorator fails closed (R-SEC-2, ASVS 8.2.1).
"""
from __future__ import annotations

from typing import Any

from flask import Flask

import calibration
from marking.config import Settings, load_settings
from marking.db import Database


def create_app(settings: Settings | None = None, db: Database | None = None,
               config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app. ``settings`` default: the environment; ``db``: opened from them.

    ``config`` overrides Flask config keys (tests: throttling limits, timeouts).
    Refuses to build in production without MC_SECRET_KEY (Settings.require_secret_key).
    """
    from . import (admin, api, auth, errors, health, i18n, leader, live, logs, marker, metrics, permissions,
                   security, technician, ui)

    settings = settings or load_settings()
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.from_mapping(
        SECRET_KEY=settings.require_secret_key(),
        MC_SETTINGS=settings,
        MC_ENV=settings.environment,
        MAX_CONTENT_LENGTH=512 * 1024 * 1024,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.environment == "production",
        SESSION_COOKIE_NAME="__Host-mc_csrf" if settings.environment == "production" else "mc_csrf",
        MC_SESSION_IDLE_MINUTES=30,
        MC_SESSION_ABSOLUTE_HOURS=12,
        MC_LOGIN_LIMIT="20 per minute",
        MC_MFA_LIMIT="10 per minute",
        MC_MFA_SKIP=settings.environment == "demo",   # demo only: see docs/web.md
        MC_OUTBOX_POLL_SECONDS=0.5,
        MC_OUTBOX_DRAIN=True,
        MC_HEARTBEAT_SECONDS=60,
        WTF_CSRF_TIME_LIMIT=None,           # the token lives as long as the login session
        WTF_CSRF_HEADERS=["X-CSRFToken"],
    )
    if config:
        app.config.update(config)
    app.config.setdefault("MC_TRUSTED_PROXIES", settings.trusted_proxies)
    if app.config["MC_TRUSTED_PROXIES"]:
        # Behind nginx: take the client address from X-Forwarded-For (limiter keys, /metrics, logs).
        from werkzeug.middleware.proxy_fix import ProxyFix
        hops = app.config["MC_TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    app.extensions["mc_db"] = db or Database(settings.database_url, ledger_chaining=settings.ledger_chaining)
    if settings.backup_on_key_change:   # R-DATA-2: backups around key locks and score-change decisions
        from marking import backup
        backup.install_change_backups(app.extensions["mc_db"], settings)
    calibration.install()  # the engine's calibration hooks (seeds, gates); idempotent

    logs.init_app(app)
    errors.init_app(app)
    security.init_app(app)
    i18n.init_app(app)
    auth.init_app(app)
    permissions.init_app(app)
    ui.init_app(app)
    health.init_app(app)
    metrics.init_app(app)
    marker.init_app(app)
    leader.init_app(app)
    technician.init_app(app)
    admin.init_app(app)
    api.init_app(app)
    live.init_app(app)
    return app
