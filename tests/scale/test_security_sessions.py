"""Session revocation across real server processes (two ``marking-centre serve`` on one database).

A session is a database row, so whatever ends it in one process ends it everywhere:
an admin's "End sessions" posted to server B, a new login of the same account on B
(no account lending), logout on A, and disabling the account all make the old cookie
useless on the other server at its next request.
"""
from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlencode

import pyotp
import pytest

from marking.db import Database
from marking.models import User, UserRole
from scripts import bench_marking as bm

pytestmark = pytest.mark.timeout(120)
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def form_post(s: bm.Session, path: str, fields: dict, csrf_from: str) -> tuple[int, dict]:
    token = s.get_csrf(csrf_from)
    status, headers, _ = s.request("POST", path, urlencode({**fields, "csrf_token": token}).encode(),
                                   {"Content-Type": "application/x-www-form-urlencoded"})
    return status, headers


def admin_login(port: int, username: str) -> bm.Session:
    s = bm.Session(port, "127.3.0.1")
    status, headers = form_post(s, "/auth/login", {"username": username, "password": bm.PASSWORD}, "/auth/login")
    assert status == 302 and "/auth/mfa" in headers["Location"], (status, headers)
    mfa_path = re.sub(r"^https?://[^/]+", "", headers["Location"])
    totp = pyotp.TOTP(TOTP_SECRET)
    now = dt.datetime.now(dt.timezone.utc)
    for code in (totp.at(now), totp.at(now + dt.timedelta(seconds=30)), totp.at(now - dt.timedelta(seconds=30))):
        status, headers = form_post(s, "/auth/mfa", {"code": code}, mfa_path)
        if status == 302:
            break
    else:
        raise AssertionError("TOTP refused")
    s.get_csrf("/auth/login")
    return s


def works(s: bm.Session, port: int) -> bool:
    s.port = port
    s.close()
    status, _ = s.get_json("/api/v1/marker/items")
    return status == 200


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_revocation_reaches_every_server_process(db_url, servers, password_hash):
    db = Database(db_url)
    try:
        world = bm.populate(db, markers=3, responses=10, password_hash=password_hash)
        with db.write() as s:
            admin = User(username="admin1", display_name="Admin", password_hash=password_hash,
                         totp_secret=TOTP_SECRET)
            admin.roles = [UserRole(role="admin")]
            s.add(admin)
        a, b = servers(db_url, threads=4), servers(db_url, threads=4, log=None)
        m1, m2, m3 = bm.login_all(a.port, world.usernames, workers=3)
        assert works(m1, a.port) and works(m1, b.port)          # one session, valid on both processes

        # 1. an admin ends marker 1's sessions on server B → refused on A
        adm = admin_login(b.port, "admin1")
        status, _ = form_post(adm, f"/admin/users/{world.markers[0]}/sessions/end", {}, "/admin/")
        assert status in (302, 303)
        assert not works(m1, a.port) and not works(m1, b.port)

        # 2. the same account logs in again on B → the first session dies on A (no account lending)
        assert works(m2, a.port)
        again = bm.Session(b.port, "127.3.0.2")
        again.login(world.usernames[1])
        assert works(again, b.port) and not works(m2, a.port)

        # 3. logout on A → the cookie is useless on B
        assert works(m3, a.port)
        m3.port = a.port
        m3.close()
        status, _ = m3.post_json("/auth/logout", {})
        assert status in (302, 303)
        assert not works(m3, b.port)

        # 4. disabling the account (another process: this one) ends the session at the next request
        assert works(again, a.port)
        with db.write() as s:
            s.get(User, world.markers[1]).active = False
        assert not works(again, a.port) and not works(again, b.port)
    finally:
        db.dispose()
