"""Deny by default (R-SEC-2, R-ROLE-4, ASVS 8.2.1): every route × every role, plus anonymous."""
from __future__ import annotations

import re

import pytest

from web.permissions import ATTR, AUTHENTICATED, PUBLIC, roles
from webhelpers import ROLE_USER, login

PREFIX_ROLES = {"/leader": {"team_leader", "admin"}, "/technician": {"technician", "admin", "key_officer",
                                                                      "authority_officer"},
                "/admin": {"admin", "authority_officer"}, "/api/v1/leader": {"team_leader", "admin"},
                "/api/v1/technician": {"technician", "admin"}}


def concrete(rule) -> str:
    return re.sub(r"<(?:int:)?([^<>]+)>", lambda m: "1" if "int:" in m.group(0) else "x", rule.rule)


def routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            yield rule, method


def test_every_route_declares_access(app):
    missing = [r.endpoint for r, _ in routes(app) if getattr(app.view_functions[r.endpoint], ATTR, None) is None]
    assert missing == []


def test_undeclared_route_is_refused(app, world):
    app.add_url_rule("/forgotten", "forgotten", lambda: "secret")
    admin = login(app, "admin")
    r = admin.get("/forgotten")
    assert r.status_code == 403 and b"secret" not in r.data


def test_matrix(app, world):
    actors = {role: login(app, user) for role, user in ROLE_USER.items()}
    anonymous = app.test_client()
    checked = 0
    for rule, method in routes(app):
        access = getattr(app.view_functions[rule.endpoint], ATTR)
        url = concrete(rule)
        # anonymous: only public routes
        if access != PUBLIC:
            r = anonymous.open(url, method=method, headers={"Accept": "application/json"})
            assert r.status_code in (400, 401, 302), (url, method, r.status_code)   # 400: CSRF first on POST
        for role, actor in actors.items():
            allowed = access in (PUBLIC, AUTHENTICATED) or role in access
            if allowed and method != "GET":
                continue      # an allowed state change would really happen (logout, disable, ...)
            r = actor.get(url) if method == "GET" else actor.post(url, json={})
            if not allowed:
                assert r.status_code == 403, (role, url, method, r.status_code)
                checked += 1
            for prefix, allowed in PREFIX_ROLES.items():
                if url.startswith(prefix) and role == "marker":
                    assert r.status_code == 403, ("a marker reached", url, method, r.status_code)
    assert checked > 50


@pytest.mark.parametrize("path", ["/leader/", "/technician/", "/admin/", "/api/v1/leader/items",
                                  "/api/v1/technician/batches", "/admin/ledger"])
def test_marker_never_reaches_other_consoles(app, world, path):
    assert login(app, "marker1").get(path).status_code == 403


def test_leader_object_check(app, world):
    """A team leader of another item is refused that item's dashboard (object level)."""
    leader = login(app, "leader")
    assert leader.get(f"/api/v1/leader/items/{world.item_id}/summary").status_code == 200
    assert leader.get(f"/api/v1/leader/items/{world.item2_id}/summary").status_code == 403


def test_roles_decorator_rejects_unknown_role():
    with pytest.raises(ValueError):
        roles("superuser")
