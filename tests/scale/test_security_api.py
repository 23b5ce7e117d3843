"""Security of the JSON API (in-process app, real argon2 cost, real TOTP).

* IDOR: a marker cannot fetch, submit, renew, release, report or revise another marker's
  task or mark (404/403/409, never the data); a marker gets no response id, candidate or
  script from a claim; leader and technician images are refused to markers.
* CSRF: state-changing POSTs without the token (or with another session's token) are
  refused and change nothing.
* SQL injection: every JSON field and path parameter of the API, with classic payloads,
  on SQLite and PostgreSQL: never a 500, no row appears or disappears, the ledger verifies,
  no password hash or foreign data in any answer.
"""
from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from marking import ledger
from marking.models import LedgerEvent, Mark, MarkTask, User
from marking.models.work import MarkAssignment

from tests.web.webhelpers import build_world, login

pytestmark = pytest.mark.timeout(180)

PAYLOADS = [
    "' OR '1'='1", "1' OR 1=1--", "'; DROP TABLE mark; --", "1; DELETE FROM app_user", "\" OR \"\"=\"",
    "1 UNION SELECT password_hash FROM app_user--", "%27%20OR%201=1", "\\'", "' || pg_sleep(5) --",
    "admin'--", "\x00", "1e309", "-1", "99999999999999999999999", "ﾟ'ﾟ", "${7*7}",
]


@pytest.fixture
def app(settings, db):
    from web import create_app
    app = create_app(settings, db, config={"TESTING": True, "MC_LOGIN_LIMIT": "1000 per minute"})
    yield app
    app.extensions["mc_live"].stop()


def counts(db) -> dict:
    with db.read() as s:
        return {name: s.execute(select(func.count()).select_from(model)).scalar_one()
                for name, model in (("user", User), ("mark", Mark), ("task", MarkTask),
                                    ("assignment", MarkAssignment), ("ledger", LedgerEvent))}


def no_leak(resp) -> None:
    body = resp.get_data(as_text=True)
    assert resp.status_code < 500, (resp.status_code, body[:300])
    assert "$argon2id$" not in body, body[:300]          # no password hash, whatever was asked
    assert "Traceback" not in body and "sqlalchemy" not in body.lower(), body[:300]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_idor_tasks_images_marks(app, db, settings):
    world = build_world(db, settings, responses=4)
    m1, m2 = login(app, "marker1"), login(app, "marker2")
    item = world.item_id
    t1 = m1.post(f"/api/v1/items/{item}/claim", json={}).get_json()["task"]
    t2 = m2.post(f"/api/v1/items/{item}/claim", json={}).get_json()["task"]
    assert t1["token"] != t2["token"]
    for key in ("response_id", "script_id", "candidate_no", "candidate", "anon_code", "image_ref"):
        assert key not in t1, key
    # the holder sees the image; the other marker gets 404 (not even "exists")
    assert m1.get(t1["image_url"]).status_code == 200
    r = m2.get(t1["image_url"])
    assert r.status_code == 404 and not r.data.startswith(b"\x89PNG")
    before = counts(db)
    for path, payload in (("/api/v1/tasks/submit", {"token": t1["token"], "score": "5", "request_id": "x1"}),
                          ("/api/v1/tasks/renew", {"token": t1["token"]}),
                          ("/api/v1/tasks/release", {"token": t1["token"]}),
                          ("/api/v1/tasks/problem", {"token": t1["token"], "kind": "illegible"})):
        r = m2.post(path, json=payload)
        assert r.status_code in (403, 404, 409, 422), (path, r.status_code)
        no_leak(r)
    assert counts(db) == before
    with db.read() as s:
        task = s.execute(select(MarkTask).where(MarkTask.lease_token == t1["token"])).scalar_one()
        assert task.status == "leased" and task.marker_id == world.users["marker1"]
    # marker1's mark cannot be revised or read by marker2
    mark_id = m1.post("/api/v1/tasks/submit", json={"token": t1["token"], "score": "5",
                                                   "request_id": "m1-1"}).get_json()["result"]["mark_id"]
    r = m2.post(f"/api/v1/marks/{mark_id}/revise", json={"score": "0"})
    assert r.status_code in (403, 404), r.status_code
    no_leak(r)
    with db.read() as s:
        assert s.get(Mark, mark_id).score_cp == 500
    recent = m2.get(f"/api/v1/marker/items/{item}/recent").get_json()["marks"]
    assert all(m.get("mark_id", m.get("id")) != mark_id for m in recent)
    # a used token no longer opens the image, even for its former holder
    assert m1.get(t1["image_url"]).status_code == 404
    # markers cannot reach leader or technician images by id
    for url in ("/api/v1/leader/entries/1/image", "/technician/cards/1/image", "/technician/exceptions/1/image",
                f"/api/v1/leader/items/{item}/markers", f"/api/v1/leader/items/{item}/summary"):
        r = m2.get(url)
        assert r.status_code in (403, 404), (url, r.status_code)
        no_leak(r)
    # a marker without a duty on the second item cannot claim it
    r = m2.post(f"/api/v1/items/{world.item2_id}/claim", json={})
    assert r.status_code == 403


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_csrf_required_on_state_changing_posts(app, db, settings):
    world = build_world(db, settings, responses=2)
    m1, m2 = login(app, "marker1"), login(app, "marker2")
    before = counts(db)
    for headers in ({"X-CSRFToken": ""}, {"X-CSRFToken": m2.token}, {"X-CSRFToken": "forged-token"}):
        r = m1.client.post(f"/api/v1/items/{world.item_id}/claim", json={}, headers=headers)
        assert r.status_code == 400 and r.get_json()["error"] == "csrf", (headers, r.status_code)
    r = m1.client.post(f"/api/v1/items/{world.item_id}/claim", json={})   # no header at all
    assert r.status_code == 400
    r = m1.client.post("/api/v1/tasks/submit", json={"token": "x", "score": "1", "request_id": "r"})
    assert r.status_code == 400
    assert counts(db) == before
    # logout without the token does not end the session
    r = m1.client.post("/auth/logout")
    assert r.status_code == 400
    assert m1.get("/api/v1/marker/items").status_code == 200
    # the login form itself needs the token
    fresh = app.test_client()
    r = fresh.post("/auth/login", data={"username": "marker3", "password": "correct horse battery"})
    assert r.status_code == 400
    # with the token the same claim works (the refusals above were about CSRF only)
    assert m1.post(f"/api/v1/items/{world.item_id}/claim", json={}).status_code == 200


def test_sql_injection_on_every_api_field(app, db, settings):
    world = build_world(db, settings, responses=4)
    m1, leader = login(app, "marker1"), login(app, "leader")
    item = world.item_id
    task = m1.post(f"/api/v1/items/{item}/claim", json={}).get_json()["task"]
    before = counts(db)
    for p in PAYLOADS:
        calls = [
            (m1, f"/api/v1/items/{item}/claim", {"queue": p}),
            (m1, "/api/v1/tasks/submit", {"token": p, "score": "5", "request_id": "sqli"}),
            (m1, "/api/v1/tasks/submit", {"token": task["token"], "score": p, "request_id": "sqli"}),
            (m1, "/api/v1/tasks/submit", {"token": task["token"], "score": "5", "request_id": p,
                                         "condition_code": p}),
            (m1, "/api/v1/tasks/submit", {"token": task["token"], "score": "5", "request_id": "sqli",
                                         "flags": [p], "dwell_ms": p, "item_id": p, "next": p, "queue": p}),
            (m1, "/api/v1/tasks/renew", {"token": p}),
            (m1, "/api/v1/tasks/release", {"token": p}),
            (m1, "/api/v1/tasks/problem", {"token": p, "kind": p, "note": p}),
            (m1, "/api/v1/tasks/problem", {"token": task["token"], "kind": p, "note": p}),
            (m1, "/api/v1/marks/1/revise", {"score": p, "condition_code": p, "request_id": p}),
            (leader, f"/api/v1/leader/items/{item}/duties/{world.users['marker2']}", {"status": p, "reason": p}),
        ]
        for actor, path, payload in calls:
            no_leak(actor.post(path, json=payload))
        q = quote(p, safe="")
        for actor, path in ((m1, f"/api/v1/tasks/{q}/image"), (m1, f"/api/v1/items/{q}/claim"),
                            (m1, f"/api/v1/marker/items/{q}/progress"), (m1, f"/api/v1/marker/items/{q}/recent"),
                            (m1, f"/api/v1/marks/{q}/revise"), (leader, f"/api/v1/leader/items/{q}/summary"),
                            (leader, f"/api/v1/leader/items/{q}/markers"), (leader, f"/api/v1/leader/entries/{q}/image"),
                            (m1, f"/api/v1/marker/items?item={q}&id={q}")):
            no_leak(actor.get(path))
            no_leak(actor.post(path, json={}))
        # query-string and header variants on the claim
        no_leak(m1.post(f"/api/v1/items/{item}/claim?queue={q}", json={"queue": "marking"},
                        headers={"X-Forwarded-For": p[:50].replace("\x00", "")}))
    after = counts(db)
    assert after["user"] == before["user"] and after["mark"] == before["mark"]
    assert after["task"] == before["task"]
    assert ledger.verify(db, None).ok
    # the leased task is still the marker's and can be submitted normally
    r = m1.post("/api/v1/tasks/submit", json={"token": task["token"], "score": "5", "request_id": "final"})
    assert r.status_code == 200, r.get_data(as_text=True)
