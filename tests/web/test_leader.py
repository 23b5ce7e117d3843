"""Team-leader console: double marking → third → arbitration, live counts, suspend/resume, registers."""
from __future__ import annotations

import uuid

from sqlalchemy import select

from marking.models import ItemDuty, Response
from webhelpers import login


def mark(actor, item_id, score, queue="marking"):
    task = actor.post(f"/api/v1/items/{item_id}/claim", json={"queue": queue}).get_json()["task"]
    assert task, queue
    r = actor.post("/api/v1/tasks/submit", json={"token": task["token"], "score": score,
                                                 "request_id": uuid.uuid4().hex})
    assert r.status_code == 200, r.get_json()
    return task


def test_gap_goes_third_then_arbitration(app, world1, db):
    world = world1
    m1, m2, m3, leader = (login(app, n) for n in ("marker1", "marker2", "marker3", "leader"))
    mark(m1, world.item_id, "1")
    mark(m2, world.item_id, "9")                    # gap 8 > threshold 2 → third
    summary = leader.get(f"/api/v1/leader/items/{world.item_id}/summary").get_json()["summary"]
    assert summary["third"] == 1
    third = m3.post(f"/api/v1/items/{world.item_id}/claim", json={}).get_json()["task"]
    assert third["earlier_marks"] == []             # third reader is blind by default policy
    m3.post("/api/v1/tasks/submit", json={"token": third["token"], "score": "5", "request_id": "t3"})
    summary = leader.get(f"/api/v1/leader/items/{world.item_id}/summary").get_json()["summary"]
    assert summary["arbitration"] == 1 and summary["third"] == 0
    page = leader.get(f"/leader/items/{world.item_id}/queue/arbitration")
    assert page.status_code == 200
    task = leader.post(f"/api/v1/items/{world.item_id}/claim", json={"queue": "arbitration"}).get_json()["task"]
    assert sorted(m["score"] for m in task["earlier_marks"]) == ["1", "5", "9"]   # the arbiter sees every mark
    assert "marker_id" not in str(task)
    assert leader.get(task["image_url"]).status_code == 200
    r = leader.post("/api/v1/tasks/submit", json={"token": task["token"], "score": "6", "request_id": "arb"})
    assert r.status_code == 200
    summary = leader.get(f"/api/v1/leader/items/{world.item_id}/summary").get_json()["summary"]
    assert summary["arbitration"] == 0 and summary["resolved"] == 1
    table = leader.get(f"/api/v1/leader/items/{world.item_id}/markers").get_json()["markers"]
    row = {m["username"]: m for m in table}
    assert row["marker1"]["total"] == 1 and row["marker1"]["third_rate_pct"] == 100
    assert leader.get(f"/leader/items/{world.item_id}").status_code == 200


def test_suspend_and_resume_marker(app, world, db):
    leader, m1 = login(app, "leader"), login(app, "marker1")
    r = leader.post(f"/leader/items/{world.item_id}/markers/{world.users['marker1']}", data={"status": "suspended"})
    assert r.status_code == 302
    with db.read() as s:
        status = s.execute(select(ItemDuty.status).where(ItemDuty.user_id == world.users["marker1"],
                                                         ItemDuty.duty == "marker")).scalar()
    assert status == "suspended"
    assert m1.post(f"/api/v1/items/{world.item_id}/claim", json={}).status_code == 403
    r = leader.post(f"/api/v1/leader/items/{world.item_id}/duties/{world.users['marker1']}", json={"status": "active"})
    assert r.get_json()["status"] == "active"
    assert m1.post(f"/api/v1/items/{world.item_id}/claim", json={}).status_code == 200


def test_problem_register_decision(app, world, db):
    m1, leader = login(app, "marker1"), login(app, "leader")
    task = m1.post(f"/api/v1/items/{world.item_id}/claim", json={}).get_json()["task"]
    entry = m1.post("/api/v1/tasks/problem", json={"token": task["token"], "kind": "blank"}).get_json()["entry_id"]
    page = leader.get(f"/leader/items/{world.item_id}").get_data(as_text=True)
    assert f"#{entry}" in page
    assert leader.get(f"/api/v1/leader/entries/{entry}/image").status_code == 200
    assert m1.get(f"/api/v1/leader/entries/{entry}/image").status_code == 403
    r = leader.post(f"/leader/items/{world.item_id}/problems/{entry}", data={"action": "score", "condition_code": "NR"})
    assert r.status_code == 302
    with db.read() as s:
        assert s.execute(select(Response.status).where(Response.status == "resolved")).first() is not None
