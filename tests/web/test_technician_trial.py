"""R-OMR-1 trial runs in the technician console (both databases): a technician runs a
trial from the subject page, sees the report and the trial listed, and only then can
upload a live batch; a scanned deck with a wrong expected answer fails naming the card;
other roles are refused, CSRF is enforced, and bad input records nothing."""
from __future__ import annotations

import io
import json
import re
import time
import zipfile

import pytest
from sqlalchemy import func, select

from marking import users
from marking.models import OmrTrialRun, ScanBatch, User, UserRole
from tests.batches.batch_helpers import erasure_trial_deck, trial_deck
from tests.batches.conftest import build_world as build_batch_world
from webhelpers import PASSWORD, TOTP_SECRET, login

from test_technician import flashes, follow, upload_zip, wait_ingested


@pytest.fixture
def tworld(db, app):
    """The batch world *without* a trial run, technicians etc. able to log in in English,
    plus a team leader."""
    world = build_batch_world(db, trial=False)
    with db.write() as s:
        s.add(User(username="leader", display_name="leader", password_hash=users.hash_password(PASSWORD),
                   totp_secret=TOTP_SECRET, roles=[UserRole(role="team_leader"), UserRole(role="marker")]))
        for u in s.execute(select(User)).scalars():
            u.password_hash = users.hash_password(PASSWORD)
            u.locale = "en"
            if u.username == "authority":
                u.totp_secret = TOTP_SECRET
    app.config["MC_TRIAL_SYNTHETIC_DPI"] = 100    # small, fast cards; the same reading code
    return world


def trials_recorded(db) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(OmrTrialRun))


def staged_left(settings) -> list[str]:
    root = settings.data_dir / "uploads"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def run_to_report(actor, r, timeout=120):
    """Follow a started trial: poll its progress until done, then open the report."""
    assert r.status_code == 302 and "/technician/trial-jobs/" in r.headers["Location"], \
        flashes(follow(actor, r))
    job_url = r.headers["Location"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = actor.get(job_url + "/progress").get_json()
        if p["state"] != "running":
            break
        time.sleep(0.05)
    assert p["state"] == "done", p
    page = actor.get(job_url)
    assert page.status_code == 302 and f"/trials/{p['trial_id']}" in page.headers["Location"]
    return p, actor.get(page.headers["Location"]).get_data(as_text=True)


def scanned_deck(tmp_path, world, *, wrong_card=None, n=2, doubts=None):
    """The zip of n scanned test cards and their expected answers (see ``trial_deck``;
    with ``doubts``, the two cards of ``erasure_trial_deck`` instead)."""
    folder = tmp_path / "deck"
    cards = (trial_deck(folder, world.roll, n=n, wrong_card=wrong_card) if doubts is None
             else erasure_trial_deck(folder, world.roll, doubts))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.iterdir()):
            z.write(p, p.name)
    buf.seek(0)
    return buf, json.dumps({"cards": cards}).encode()


def post_scans(actor, zip_buf, expected: bytes, name="expected.json"):
    return actor.post("/technician/subjects/00015/trial",
                      data={"source": "scans", "files": (zip_buf, "trial-deck.zip"),
                            "expected": (io.BytesIO(expected), name)},
                      content_type="multipart/form-data")


def test_synthetic_trial_from_the_page_then_upload(app, db, settings, tworld, tmp_path):
    tech = login(app, "tech1")
    # no passed trial: the console says so, and an upload is refused before anything is staged
    assert 'id="trial-needed"' in tech.get("/technician/").get_data(as_text=True)
    page = tech.get("/technician/subjects/00015").get_data(as_text=True)
    assert "No passed trial" in page and "No trial runs yet." in page and 'id="trial-form"' in page
    r = upload_zip(tech, tmp_path, n=1)
    assert r.status_code == 302 and r.headers["Location"].endswith("/technician/subjects/00015#trial")
    assert "R-OMR-1" in flashes(follow(tech, r))
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(ScanBatch)) == 0
    assert staged_left(settings) == []

    r = tech.post("/technician/subjects/00015/trial", data={"source": "synthetic", "cards": "1"})
    p, report = run_to_report(tech, r)
    assert p["total"] == 1 and p["done"] == 1 and p["passed"] is True
    assert 'id="trial-verdict"' in report and "PASSED" in report and "live batches of this subject may be" in report
    page = tech.get("/technician/subjects/00015").get_data(as_text=True)
    rows = re.findall(r'<tr data-trial="(\d+)">(.*?)</tr>', page, re.S)
    assert [int(i) for i, _ in rows] == [p["trial_id"]] and "tech1" in rows[0][1] and "PASSED" in rows[0][1]
    assert "synthetic" in rows[0][1]
    assert f"Trial #{p['trial_id']} passed" in page
    assert 'id="trial-needed"' not in tech.get("/technician/").get_data(as_text=True)

    r = upload_zip(tech, tmp_path / "live", n=1)
    assert r.status_code == 302 and "/technician/batches/" in r.headers["Location"], flashes(follow(tech, r))
    wait_ingested(db, int(r.headers["Location"].rsplit("/", 1)[1]))


def test_upload_refusal_names_r_omr_1(app, db, settings, tworld, tmp_path):
    tech = login(app, "tech1")
    r = upload_zip(tech, tmp_path, n=1)
    message = flashes(follow(tech, r))
    assert "R-OMR-1" in message and "nothing was uploaded" in message and "Run a trial first" in message
    with db.read() as s:
        assert s.scalar(select(func.count()).select_from(ScanBatch)) == 0
    assert staged_left(settings) == []


def test_scanned_trial_with_a_wrong_expected_answer_fails_naming_the_card(app, db, settings, tworld, tmp_path):
    tech = login(app, "tech1")
    zip_buf, expected = scanned_deck(tmp_path, tworld, wrong_card=1, n=2)
    p, report = run_to_report(tech, post_scans(tech, zip_buf, expected))
    assert p["passed"] is False
    assert "FAILED" in report and "no passed trial" in report
    lines = re.findall(r"<li>([^<]*)</li>", report)
    assert lines and all(line.startswith("scan-0001.jpg: method ") for line in lines), lines
    assert any("item 3" in line for line in lines)
    page = tech.get("/technician/subjects/00015").get_data(as_text=True)
    rows = re.findall(r'<tr data-trial="(\d+)">(.*?)</tr>', page, re.S)
    assert len(rows) == 1 and "FAILED" in rows[0][1] and "scans" in rows[0][1]
    assert "No passed trial" in page
    assert staged_left(settings) == []
    # the same deck with the right answers passes, and is listed first (newest first)
    zip_buf, expected = scanned_deck(tmp_path / "again", tworld, n=2)
    p2, report = run_to_report(tech, post_scans(tech, zip_buf, expected))
    assert p2["passed"] is True and "PASSED" in report
    page = tech.get("/technician/subjects/00015").get_data(as_text=True)
    assert [int(i) for i in re.findall(r'<tr data-trial="(\d+)">', page)] == [p2["trial_id"], p["trial_id"]]


def test_scanned_trial_with_a_declared_doubt_passes_and_shows_it(app, db, settings, tworld, tmp_path):
    tech = login(app, "tech1")
    zip_buf, expected = scanned_deck(tmp_path, tworld, doubts=["2"])
    p, report = run_to_report(tech, post_scans(tech, zip_buf, expected))
    assert p["passed"] is True and "PASSED" in report
    cells = re.findall(r'<td class="doubts">([^<]*)</td>', report)
    assert cells == ["2", "–"], cells   # the first card's deliberate doubt, flagged by both methods


@pytest.mark.parametrize("username", ["marker1", "leader", "keyofficer"])
def test_other_roles_are_refused(app, db, tworld, username):
    actor = login(app, username)
    r = actor.post("/technician/subjects/00015/trial", data={"source": "synthetic", "cards": "1"})
    assert r.status_code == 403
    assert actor.get("/technician/trial-jobs/anything/progress").status_code == 403
    assert trials_recorded(db) == 0


def test_csrf_is_enforced(app, db, tworld):
    tech = login(app, "tech1")
    r = tech.client.post("/technician/subjects/00015/trial", data={"source": "synthetic", "cards": "1"})
    assert r.status_code == 400
    r = tech.client.post("/technician/subjects/00015/trial",
                         data={"source": "synthetic", "cards": "1", "csrf_token": "forged"})
    assert r.status_code == 400
    assert trials_recorded(db) == 0


@pytest.mark.parametrize("case,message", [
    ("bad_json", "trial-answers.json: not valid JSON"),
    ("not_utf8", "not UTF-8"),
    ("no_cards", "Choose the scanned test cards"),
    ("no_expected", "Choose the expected-answers JSON file"),
    ("wrong_name", "scan-0000.jpg: no expected answers for this card in trial-answers.json"),
    ("missing_card", "expected answers name cards that are not in the uploaded cards: ghost.jpg"),
    ("bad_page", "could not be used"),
    ("too_many", "1 to 50 cards"),
    ("not_a_zip", "does not look like the file type"),
])
def test_bad_input_is_a_clear_error_and_records_nothing(app, db, settings, tworld, tmp_path, case, message):
    tech = login(app, "tech1")
    zip_buf, expected = scanned_deck(tmp_path, tworld, n=1)
    body = json.loads(expected)
    data = {"source": "scans", "files": (zip_buf, "trial-deck.zip")}
    if case == "bad_json":
        data["expected"] = (io.BytesIO(b'{"cards": [ {"file": '), "trial-answers.json")
    elif case == "not_utf8":
        data["expected"] = (io.BytesIO(b"\xff\xfe\x00{"), "trial-answers.json")
    elif case == "no_cards":
        data = {"source": "scans", "expected": (io.BytesIO(expected), "trial-answers.json")}
    elif case == "no_expected":
        pass
    elif case == "wrong_name":
        body["cards"][0]["file"] = "card-01.jpg"
        data["expected"] = (io.BytesIO(json.dumps(body).encode()), "trial-answers.json")
    elif case == "missing_card":
        body["cards"].append(dict(body["cards"][0], file="ghost.jpg"))
        data["expected"] = (io.BytesIO(json.dumps(body).encode()), "trial-answers.json")
    elif case == "bad_page":
        body["cards"][0]["page"] = "first"
        data["expected"] = (io.BytesIO(json.dumps(body).encode()), "trial-answers.json")
    elif case == "too_many":
        data = {"source": "synthetic", "cards": "51"}
    elif case == "not_a_zip":
        data["files"] = (io.BytesIO(b"MZ\x90\x00"), "trial-deck.zip")
        data["expected"] = (io.BytesIO(expected), "trial-answers.json")
    r = tech.post("/technician/subjects/00015/trial", data=data, content_type="multipart/form-data")
    assert r.status_code == 302 and r.headers["Location"].endswith("/technician/subjects/00015#trial")
    shown = flashes(follow(tech, r))
    assert message in shown, shown
    assert str(settings.data_dir) not in shown            # no server paths in messages
    assert trials_recorded(db) == 0
    assert staged_left(settings) == []
