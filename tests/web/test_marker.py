"""Marker workbench API: claim → submit → next, blind by construction (R-SEC-1), image IDOR."""
from __future__ import annotations

import json
import uuid

from sqlalchemy import select

from marking.models import Candidate, Mark

from webhelpers import login


def claim(actor, item_id, queue="marking"):
    r = actor.post(f"/api/v1/items/{item_id}/claim", json={"queue": queue})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["task"]


def submit(actor, task, score, item_id=None, **extra):
    body = {"token": task["token"], "score": score, "request_id": uuid.uuid4().hex, **extra}
    if item_id is not None:
        body.update(next=True, item_id=item_id)
    return actor.post("/api/v1/tasks/submit", json=body)


def test_claim_submit_next_and_blindness(app, world, db):
    m1 = login(app, "marker1")
    page = m1.get(f"/marker/items/{world.item_id}")
    assert page.status_code == 200 and b'id="score"' in page.data
    task = claim(m1, world.item_id)
    assert task["image_url"].startswith("/api/v1/tasks/")
    assert "image_ref" not in task and task["earlier_marks"] == []
    r = submit(m1, task, "7.5", item_id=world.item_id, dwell_ms=4000)
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    assert out["result"]["score"] == "7.5" and out["next"]["token"] != task["token"]
    # R-SEC-1: nothing identifying and no other marker's score anywhere in what a marker gets
    with db.read() as s:
        names = [c.name for c in s.execute(select(Candidate)).scalars()]
        numbers = [c.candidate_no for c in s.execute(select(Candidate)).scalars()]
    m2 = login(app, "marker2")
    t2 = claim(m2, world.item_id)
    blob = json.dumps(t2) + page.get_data(as_text=True) + json.dumps(out)
    blob += m1.get(f"/api/v1/marker/items/{world.item_id}/recent").get_data(as_text=True)
    for secret in names + numbers:
        assert secret not in blob
    # marker1's 7.5 nowhere in marker2's task (its lease time is left out: "…:07.5…" is a time)
    assert "7.5" not in json.dumps({k: v for k, v in t2.items() if k != "lease_expires_at"})
    assert t2["earlier_marks"] == []


def test_score_validation_max_and_step(app, world):
    m1 = login(app, "marker1")
    task = claim(m1, world.item_id)
    for bad in ("10.5", "3.25", "abc", "-1", ""):
        r = submit(m1, task, bad)
        assert r.status_code == 422, (bad, r.get_json())
        assert r.get_json()["message"]
    assert submit(m1, task, None, condition_code="NR").status_code == 200


def test_image_requires_live_lease_of_caller(app, world):
    """ASVS 8.2.2 / R-SEC-1: an image is served only to the holder of a live lease (IDOR)."""
    m1, m2 = login(app, "marker1"), login(app, "marker2")
    task = claim(m1, world.item_id)
    ok = m1.get(task["image_url"])
    assert ok.status_code == 200 and ok.mimetype == "image/png"
    assert "private" in ok.headers["Cache-Control"]
    assert m2.get(task["image_url"]).status_code == 404        # not their lease
    assert login(app, "tech").get(task["image_url"]).status_code == 403
    assert app.test_client().get(task["image_url"]).status_code == 401
    assert submit(m1, task, "5").status_code == 200
    assert m1.get(task["image_url"]).status_code == 404        # lease ended with the submit
    assert m1.get(f"/api/v1/tasks/{uuid.uuid4()}/image").status_code == 404


def test_foreign_or_stale_token_refused(app, world):
    m1, m2 = login(app, "marker1"), login(app, "marker2")
    task = claim(m1, world.item_id)
    r = submit(m2, task, "5")
    assert r.status_code == 409 and r.get_json()["error"] == "lease_lost"
    assert m2.post("/api/v1/tasks/renew", json={"token": task["token"]}).status_code == 409
    assert m1.post("/api/v1/tasks/renew", json={"token": task["token"]}).status_code == 200
    assert m1.post("/api/v1/tasks/release", json={"token": task["token"]}).status_code == 200
    assert submit(m1, task, "5").status_code == 409


def test_idempotent_retry_and_progress(app, world, db):
    m1 = login(app, "marker1")
    task = claim(m1, world.item_id)
    body = {"token": task["token"], "score": "4", "request_id": "retry-1"}
    a = m1.post("/api/v1/tasks/submit", json=body).get_json()
    b = m1.post("/api/v1/tasks/submit", json=body).get_json()
    assert a["result"]["mark_id"] == b["result"]["mark_id"] and b["result"]["replayed"]
    with db.read() as s:
        assert len(s.execute(select(Mark)).scalars().all()) == 1
    p = m1.get(f"/api/v1/marker/items/{world.item_id}/progress").get_json()
    assert p["done_today"] == 1 and p["cap"] == 650
    recent = m1.get(f"/api/v1/marker/items/{world.item_id}/recent").get_json()["marks"]
    assert recent[0]["score"] == "4" and recent[0]["revisable"] is True


def test_problem_report_and_flags(app, world):
    m1 = login(app, "marker1")
    task = claim(m1, world.item_id)
    r = m1.post("/api/v1/tasks/problem", json={"token": task["token"], "kind": "illegible"})
    assert r.status_code == 200 and r.get_json()["entry_id"]
    task = claim(m1, world.item_id)
    r = submit(m1, task, "6", flags=["handwriting_change"])
    assert r.status_code == 200
    r = submit(m1, claim(m1, world.item_id), "6", flags=["not-a-flag"])
    assert r.status_code == 422


def test_no_duty_no_work(app, world):
    r = login(app, "marker1").post(f"/api/v1/items/{world.item2_id}/claim", json={})
    assert r.status_code == 403 and "duty" in r.get_json()["message"]
    assert login(app, "marker1").get(f"/marker/items/{world.item2_id}").status_code == 403


def test_marker_revises_own_unused_mark(app, world):
    m1, m2 = login(app, "marker1"), login(app, "marker2")
    task = claim(m1, world.item_id)
    mark_id = submit(m1, task, "6").get_json()["result"]["mark_id"]
    assert m2.post(f"/api/v1/marks/{mark_id}/revise", json={"score": "3"}).status_code == 403
    r = m1.post(f"/api/v1/marks/{mark_id}/revise", json={"score": "6.5", "request_id": "rv1"})
    assert r.status_code == 200 and r.get_json()["score"] == "6.5", r.get_json()
    r = m1.post(f"/api/v1/marks/{mark_id}/revise", json={"score": "10.5"})
    assert r.status_code == 422 and r.get_json()["message"]
