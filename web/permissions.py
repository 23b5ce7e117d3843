"""Deny by default: every endpoint declares who may call it (Redash ``permissions.py`` style).

R-ROLE-4, R-SEC-2, ASVS 8.2.1/8.3.1. Declarations:

* ``@roles("marker", ...)`` — a logged-in user holding one of the roles;
* ``@authenticated`` — any logged-in user (own profile, logout, language);
* ``@public`` — anyone (login page, health probes, static files).

``check_request`` runs before every request: an endpoint without a declaration is
refused (403) and logged, so forgetting the decorator fails closed. Object-level checks
(item duties, lease ownership) stay in the marking services and in the image endpoints.
"""
from __future__ import annotations

import logging
from typing import Callable

from flask import Flask, current_app, g, request

from marking.models.people import ROLES

log = logging.getLogger("web.authz")

PUBLIC = "public"
AUTHENTICATED = "authenticated"
# MFA-gated roles: a session of a user holding one of them must pass TOTP first.
MFA_ROLES = frozenset({"team_leader", "authority_officer", "admin"})
ATTR = "_mc_access"
PRE_MFA_ATTR = "_mc_pre_mfa"


class Denied(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def roles(*allowed: str) -> Callable:
    unknown = set(allowed) - set(ROLES)
    if unknown or not allowed:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def deco(fn):
        setattr(fn, ATTR, frozenset(allowed))
        return fn
    return deco


def public(fn):
    setattr(fn, ATTR, PUBLIC)
    return fn


def authenticated(fn):
    setattr(fn, ATTR, AUTHENTICATED)
    return fn


def pre_mfa(fn):
    """Reachable with a password-only session (MFA prompt, enrolment, logout)."""
    setattr(fn, PRE_MFA_ATTR, True)
    return fn


def declaration(endpoint: str):
    view = current_app.view_functions.get(endpoint)
    if endpoint == "static":
        return PUBLIC
    return getattr(view, ATTR, None)


def check_request() -> None:
    endpoint = request.endpoint
    if endpoint is None:   # 404/405 are answered by Flask itself
        return
    access = declaration(endpoint)
    if access is None:
        log.warning("refused %s %s: endpoint %s declares no access", request.method, request.path, endpoint)
        raise Denied(403, "undeclared", "This address is not available.")
    if access == PUBLIC:
        return
    user = g.get("user")
    if user is None:
        raise Denied(401, "login_required", "Please log in.")
    view = current_app.view_functions[endpoint]
    if user.mfa_pending and not getattr(view, PRE_MFA_ATTR, False):
        raise Denied(401, "mfa_required", "Two-factor verification is required.")
    if access == AUTHENTICATED:
        return
    if not user.roles & access:
        log.warning("refused %s %s for %s: needs %s", request.method, request.path, user.username,
                    sorted(access))
        raise Denied(403, "forbidden", "Your role does not allow this.")


def init_app(app: Flask) -> None:
    app.before_request(check_request)
