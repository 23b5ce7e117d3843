"""Team-leader calibration screens with the Flask test client (both databases)."""
from __future__ import annotations

import re


from marking import dispatch, submission
from webhelpers import login


def flashes(r) -> str:
    return " ".join(re.findall(r'class="flash [a-z]+" role="alert">([^<]*)<', r.get_data(as_text=True)))


def test_only_the_items_leader_and_admin(app, world):
    url = f"/leader/items/{world.item_id}/calibration"
    assert login(app, "leader").get(url).status_code == 200
    assert login(app, "admin").get(url).status_code == 200
    assert login(app, "leader").get(f"/leader/items/{world.item2_id}/calibration").status_code == 403
    for who in ("marker1", "tech", "keyoff"):
        assert login(app, who).get(url).status_code == 403
    assert login(app, "marker1").get(f"{url}/means.png").status_code == 403


def test_plots_are_png(app, world):
    leader = login(app, "leader")
    base = f"/leader/items/{world.item_id}/calibration"
    for path in (f"{base}/means.png", f"{base}/markers/{world.users['marker1']}/validity.png",
                 f"{base}/markers/{world.users['marker1']}/drift.png"):
        r = leader.get(path)
        assert r.status_code == 200 and r.mimetype == "image/png" and r.data[:4] == b"\x89PNG", path


def test_suspension_requeues(app, db, world):
    m1 = world.users["marker1"]
    view = dispatch.claim_next(db, m1, world.item_id)
    submission.submit_mark(db, m1, view.token, "5", request_id="r1")
    leader = login(app, "leader")
    r = leader.post(f"/leader/items/{world.item_id}/calibration/markers/{m1}/suspend", data={"note": "drift"})
    page = leader.get(r.headers["Location"])
    text = flashes(page)
    assert "1" in text and page.status_code == 200, text
    from calibration import suspension
    rows = suspension.suspensions(db, world.item_id)
    assert rows and rows[-1]["requeued"] == 1
    r = leader.post(f"/leader/items/{world.item_id}/calibration/markers/{m1}/resume", data={})
    assert "flash ok" in leader.get(r.headers["Location"]).get_data(as_text=True)


def test_scheme_needs_another_approver_and_trial(app, db, world):
    leader = login(app, "leader")
    base = f"/leader/items/{world.item_id}/calibration"
    r = leader.post(f"{base}/schemes", data={"text": "Award 2 points per correct idea."})
    assert "flash ok" in leader.get(r.headers["Location"]).get_data(as_text=True)
    from calibration import scheme
    sid = scheme.versions(db, world.item_id)[-1].id
    leader.post(f"{base}/schemes/{sid}/submit", data={})
    r = leader.post(f"{base}/schemes/{sid}/decide", data={"decision": "approve"})
    assert "flash error" in leader.get(r.headers["Location"]).get_data(as_text=True)   # not by its author
    r = leader.post(f"{base}/trial", data={"count": "2"})
    page = leader.get(r.headers["Location"])
    assert page.status_code == 200
    assert leader.get(f"{base}/trial/mark").status_code == 200
    r = leader.post("/api/v1/items/%d/claim" % world.item_id, json={"queue": "trial"})
    assert r.status_code in (200, 403, 409), r.get_data(as_text=True)


def test_item_analysis_export(app, world):
    leader = login(app, "leader")
    r = leader.get(f"/leader/items/{world.item_id}/calibration/analysis.html")
    assert r.status_code == 200 and b"<html" in r.data.lower()


def test_statistics_json_for_the_leader_only(app, db, world):
    """The live table's JSON: the same rows as the page (stats.marker_statistics), leader/admin only."""
    m1 = world.users["marker1"]
    view = dispatch.claim_next(db, m1, world.item_id)
    submission.submit_mark(db, m1, view.token, "5", request_id="stats-json")
    url = f"/leader/items/{world.item_id}/calibration/statistics"
    leader = login(app, "leader")
    r = leader.get(url)
    assert r.status_code == 200 and r.is_json
    from calibration import stats
    expected = {m["user_id"]: m for m in stats.marker_statistics(db, world.item_id)["markers"]}
    rows = {m["user_id"]: m for m in r.get_json()["markers"]}
    assert set(rows) == set(expected) and m1 in rows
    for key in ("username", "count", "mean", "exact", "seeds", "validity", "seed_bias", "rechecked",
                "recheck_changed", "recheck_change_rate"):
        assert rows[m1][key] == expected[m1][key], key
    assert rows[m1]["count"] == 1 and rows[m1]["username"] == "marker1"
    assert rows[m1]["rechecked"] == 0 and rows[m1]["recheck"] is None   # R-MARK-5: nothing re-checked yet
    assert rows[m1]["alarm"] is None and rows[m1]["alarm_label"]
    assert login(app, "admin").get(url).status_code == 200
    assert login(app, "marker1").get(url).status_code == 403
    assert leader.get(f"/leader/items/{world.item2_id}/calibration/statistics").status_code == 403
    page = leader.get(f"/leader/items/{world.item_id}/calibration").get_data(as_text=True)
    assert f'data-user="{m1}"' in page and "calibration.js" in page
    assert 'class="s-recheck"' in page
