"""Accounts and sessions (R-ROLE-4; ASVS 5.0 L2): argon2, server-side sessions, CSRF, throttling, TOTP."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from marking.models import LoginSession, User
from web import create_app
from webhelpers import PASSWORD, csrf_of, login


def test_login_sets_server_side_session(app, world, db):
    actor = login(app, "marker1")
    cookie = actor.client.get_cookie("mc_session")
    assert cookie is not None and cookie.http_only
    with db.read() as s:
        rows = s.execute(select(LoginSession)).scalars().all()
    assert len(rows) == 1 and rows[0].id != cookie.value and len(rows[0].id) == 64   # only the sha256 is stored
    assert actor.get("/auth/whoami").get_json()["username"] == "marker1"


def test_wrong_password_generic_message(app, world):
    client = app.test_client()
    token = csrf_of(client)
    for name in ("marker1", "nobody"):
        r = client.post("/auth/login", data={"username": name, "password": "wrong-password", "csrf_token": token})
        assert r.status_code == 401
        assert "wrong password" in r.get_data(as_text=True) or "密码" in r.get_data(as_text=True)


def test_csrf_required_on_forms_and_fetch(app, world):
    client = app.test_client()
    r = client.post("/auth/login", data={"username": "marker1", "password": PASSWORD})
    assert r.status_code == 400
    actor = login(app, "marker1")
    r = actor.client.post(f"/api/v1/items/{world.item_id}/claim", json={})     # no X-CSRFToken
    assert r.status_code == 400 and r.get_json()["error"] == "csrf"
    r = actor.client.post(f"/api/v1/items/{world.item_id}/claim", json={}, headers={"X-CSRFToken": "forged"})
    assert r.status_code == 400
    assert actor.post(f"/api/v1/items/{world.item_id}/claim", json={}).status_code == 200


def test_a_logged_in_requests_token_is_its_sessions(app, world):
    """web.auth.csrf: after login the token is bound to the login session, not to the cookie session."""
    client = app.test_client()
    before = csrf_of(client)   # Flask-WTF's, from the login page
    assert client.get_cookie("mc_csrf") is not None
    r = client.post("/auth/login", data={"username": "marker1", "password": PASSWORD, "csrf_token": before})
    assert r.status_code == 302
    assert client.get_cookie("mc_csrf") is None   # the login cleared the cookie session
    url = f"/api/v1/items/{world.item_id}/claim"
    r = client.post(url, json={}, headers={"X-CSRFToken": before})   # the pre-login token is refused now
    assert r.status_code == 400 and r.get_json()["error"] == "csrf"
    token = csrf_of(client, "/auth/login")
    assert token != before and client.get_cookie("mc_csrf") is None   # a page does not bring the cookie back
    assert client.post(url, json={}, headers={"X-CSRFToken": token}).status_code == 200

    again = login(app, "marker1")   # a new login: a new session, a new token; the old one is dead
    assert again.token != token
    r = again.client.post(url, json={}, headers={"X-CSRFToken": token})
    assert r.status_code == 400 and r.get_json()["error"] == "csrf"
    assert again.post(url, json={}).status_code == 200


def test_over_https_a_logged_in_post_needs_a_same_origin_referrer(app, world):
    actor = login(app, "marker1")
    url = f"/api/v1/items/{world.item_id}/claim"
    secure = {"base_url": "https://localhost"}
    r = actor.post(url, json={}, **secure)
    assert r.status_code == 400 and r.get_json()["error"] == "csrf"
    r = actor.post(url, json={}, headers={"Referer": "https://evil.example/"}, **secure)
    assert r.status_code == 400
    assert actor.post(url, json={}, headers={"Referer": "https://localhost/marker/"}, **secure).status_code == 200


def test_logout_ends_session_server_side(app, world):
    actor = login(app, "marker1")
    cookie = actor.client.get_cookie("mc_session").value
    assert actor.post("/auth/logout", data={}).status_code == 302
    replay = app.test_client()
    replay.set_cookie("mc_session", cookie)
    assert replay.get("/auth/whoami").status_code in (302, 401)


def test_new_login_ends_other_session(app, world):
    first = login(app, "marker1")
    assert first.get("/auth/whoami").status_code == 200
    second = login(app, "marker1")
    assert second.get("/auth/whoami").status_code == 200
    assert first.get("/auth/whoami", headers={"Accept": "application/json"}).status_code == 401


def test_disable_ends_sessions(app, world):
    marker = login(app, "marker1")
    admin = login(app, "admin")
    r = admin.post(f"/admin/users/{world.users['marker1']}/active", data={"active": "0"})
    assert r.status_code == 302
    assert marker.get("/auth/whoami", headers={"Accept": "application/json"}).status_code == 401
    client = app.test_client()
    r = client.post("/auth/login", data={"username": "marker1", "password": PASSWORD, "csrf_token": csrf_of(client)})
    assert r.status_code == 401


def test_idle_and_absolute_timeouts(app, world, db):
    marker = login(app, "marker1")
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    with db.write() as s:
        s.execute(update(LoginSession).values(last_seen_at=old))
    assert marker.get("/auth/whoami", headers={"Accept": "application/json"}).status_code == 401
    marker = login(app, "marker1")
    with db.write() as s:
        s.execute(update(LoginSession).where(LoginSession.revoked_at.is_(None))
                  .values(expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))
    assert marker.get("/auth/whoami", headers={"Accept": "application/json"}).status_code == 401
    with db.read() as s:
        reasons = {r for (r,) in s.execute(select(LoginSession.revoked_reason)).all()}
    assert {"idle_timeout", "absolute_timeout"} <= reasons


def test_progressive_delay_without_lockout(app, world, db):
    client = app.test_client()
    token = csrf_of(client)
    for _ in range(3):
        client.post("/auth/login", data={"username": "marker2", "password": "nope-nope", "csrf_token": token})
    r = client.post("/auth/login", data={"username": "marker2", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429      # delayed, even with the right password
    with db.write() as s:           # the delay passes: no hard lock-out
        s.execute(update(User).where(User.username == "marker2")
                  .values(last_failed_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)))
    r = client.post("/auth/login", data={"username": "marker2", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 302


def test_rate_limit_per_address(settings, db, world):
    app = create_app(settings, db, config={"TESTING": True, "MC_LOGIN_LIMIT": "3 per minute"})
    client = app.test_client()
    token = csrf_of(client)
    codes = [client.post("/auth/login", data={"username": f"x{i}", "password": "whatever1", "csrf_token": token}
                         ).status_code for i in range(4)]
    assert codes[:3] == [401, 401, 401] and codes[3] == 429


def test_totp_required_for_leader(app, world):
    client = app.test_client()
    r = client.post("/auth/login", data={"username": "leader", "password": PASSWORD, "csrf_token": csrf_of(client)})
    assert "/auth/mfa" in r.headers["Location"]
    assert client.get("/leader/", headers={"Accept": "application/json"}).status_code == 401
    token = csrf_of(client, "/auth/mfa")
    assert client.post("/auth/mfa", data={"code": "000000", "csrf_token": token}).status_code == 401
    leader = login(app, "leader")
    assert leader.get("/leader/").status_code == 200


def test_totp_enrolment(app, world, db):
    import pyotp
    import re
    with db.write() as s:
        s.execute(update(User).where(User.username == "admin").values(totp_secret=None))
    client = app.test_client()
    r = client.post("/auth/login", data={"username": "admin", "password": PASSWORD, "csrf_token": csrf_of(client)})
    assert "/auth/mfa/enrol" in r.headers["Location"]
    page = client.get("/auth/mfa/enrol").get_data(as_text=True)
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page).group(1)
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)
    r = client.post("/auth/mfa/enrol", data={"code": pyotp.TOTP(secret).now(), "csrf_token": token})
    assert r.status_code == 302
    assert client.get("/admin/").status_code == 200
    with db.read() as s:
        assert s.execute(select(User.totp_secret).where(User.username == "admin")).scalar() == secret


def test_security_headers(app, world):
    r = app.test_client().get("/auth/login")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert "<script>" not in r.get_data(as_text=True)   # no inline scripts


def test_production_refuses_without_secret(tmp_path, db_url):
    import pytest
    from marking.config import ConfigError, load_settings
    settings = load_settings(tmp_path, env={"MC_ENV": "production", "MC_DATABASE_URL": db_url})
    with pytest.raises(ConfigError):
        create_app(settings)
