"""End to end in a real browser: blind double marking → third → arbitration with live counts,
and ten responses marked with the keyboard alone."""
from __future__ import annotations

import datetime as dt

import pyotp
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from marking import simulate
from marking.models import ItemDuty, Response
from marking.storage import LocalImageStore
from tests.e2e.e2e_support import OUTPUT
from tests.web.webhelpers import PASSWORD, TOTP_SECRET, png

pytestmark = pytest.mark.slow
_last_step: dict[str, int] = {}


def totp_code(username: str) -> str:
    """A TOTP code newer than the last one this user used (the server accepts each user's steps only
    in increasing order: no replay); the earliest such step keeps later ones for later logins."""
    totp = pyotp.TOTP(TOTP_SECRET)
    now = dt.datetime.now(dt.timezone.utc)
    for k in (-1, 0, 1):
        moment = now + dt.timedelta(seconds=30 * k)
        if totp.timecode(moment) > _last_step.get(username, -1):
            _last_step[username] = totp.timecode(moment)
            return totp.at(moment)
    raise AssertionError("no unused TOTP step")


def open_as(browser, base, username):
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    page = context.new_page()
    page.goto(base + "/auth/login")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', PASSWORD)
    page.press('input[name="password"]', "Enter")
    if "/auth/mfa" in page.url or page.locator('input[name="code"]').count():
        page.fill('input[name="code"]', totp_code(username))
        page.press('input[name="code"]', "Enter")
    expect(page.locator("#logout")).to_be_visible()
    return page


def mark_with_keyboard(page, score):
    score_box = page.locator("#score")
    expect(score_box).to_be_enabled()
    expect(score_box).to_be_focused()
    page.keyboard.type(score)
    page.keyboard.press("Enter")


def test_double_marking_third_and_arbitration_live(browser, server):
    base, world = server["base"], server["world"]
    leader = open_as(browser, base, "leader")
    leader.goto(f"{base}/leader/items/{world.item_id}")
    expect(leader.locator("#live-status")).to_have_class("live on")
    expect(leader.locator("#count-third")).to_have_text("0")

    m1 = open_as(browser, base, "marker1")
    m1.goto(f"{base}/marker/items/{world.item_id}")
    expect(m1.locator("#item-image")).to_be_visible()
    mark_with_keyboard(m1, "1")
    expect(m1.locator("#recent li")).to_have_count(1)
    m2 = open_as(browser, base, "marker2")
    m2.goto(f"{base}/marker/items/{world.item_id}")
    mark_with_keyboard(m2, "9")                       # gap 8 > threshold 2
    expect(leader.locator("#count-third")).to_have_text("1", timeout=15_000)   # live, no reload
    leader.screenshot(path=str(OUTPUT / "leader-third.png"))

    m3 = open_as(browser, base, "marker3")
    m3.goto(f"{base}/marker/items/{world.item_id}")
    expect(m3.locator("#earlier")).to_be_hidden()     # the third reader does not see the others
    mark_with_keyboard(m3, "5")
    expect(leader.locator("#count-arbitration")).to_have_text("1", timeout=15_000)
    expect(leader.locator("#count-third")).to_have_text("0")

    arb = leader.context.new_page()
    arb.goto(f"{base}/leader/items/{world.item_id}/queue/arbitration")
    expect(arb.locator("#earlier-list li")).to_have_count(3)
    arb.screenshot(path=str(OUTPUT / "arbitration.png"))
    mark_with_keyboard(arb, "6")
    expect(leader.locator("#count-resolved")).to_have_text("1", timeout=15_000)
    expect(leader.locator("#count-arbitration")).to_have_text("0")
    leader.screenshot(path=str(OUTPUT / "leader-resolved.png"))


def test_ten_responses_with_keyboard_alone(browser, server):
    base, world, db, settings = server["base"], server["world"], server["db"], server["settings"]
    simulate.create_responses_for_testing(db, world.subject_code, 10, seed=7, schools=("S09",))
    sha = LocalImageStore(settings.image_store).put(png("ten responses"))
    with db.write() as s:
        for r in s.execute(select(Response).where(Response.image_sha256.is_(None))).scalars():
            r.image_sha256 = sha
        s.add(ItemDuty(item_id=world.item2_id, user_id=world.users["marker1"], duty="marker"))
    page = open_as(browser, base, "marker1")
    page.goto(f"{base}/marker/items/{world.item2_id}")
    for n in range(10):
        mark_with_keyboard(page, str(n % 10))
        expect(page.locator("#done-today")).to_have_text(str(n + 1), timeout=15_000)
    page.screenshot(path=str(OUTPUT / "keyboard-ten.png"))
    expect(page.locator("#recent li")).to_have_count(10)


def test_security_headers_and_no_inline_script_errors(browser, server):
    page = open_as(browser, server["base"], "tech")
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(server["base"] + "/technician/")
    expect(page.locator("h1")).to_be_visible()
    assert not [e for e in errors if "Content Security Policy" in e]


def test_technician_upload_progress(browser, server, tmp_path):
    """(b) Upload a small batch in the browser; two OMR node threads read it against the server's
    database; the ingest and both read-pass bars reach 100 % live (Socket.IO), without a reload."""
    import threading

    from marking import batches
    from omr.worker import Worker
    from tests.batches.batch_cards import small_template
    from tests.batches.batch_helpers import write_cards

    from tests.batches.conftest import pass_trial
    db, settings = server["db"], server["settings"]
    batches.attach_template(db, "00015", small_template())
    pass_trial(db, "00015", server["world"].users["tech"])      # R-OMR-1: a trial run before live reading
    folder = tmp_path / "scans"
    write_cards(folder, [f"4501262{n:05d}" for n in range(1, 5)], 4)
    page = open_as(browser, server["base"], "tech")
    page.goto(server["base"] + "/technician/")
    page.select_option('select[name="subject"]', "00015")
    page.set_input_files('#upload-form input[name="files"][multiple]', sorted(str(p) for p in folder.iterdir()))
    page.click("#upload-button")
    page.wait_for_url("**/technician/batches/*")
    expect(page.locator("#live-status")).to_have_class("live on")
    expect(page.locator("#ingest-pct")).to_have_text("100", timeout=30_000)
    expect(page.locator("#node-notice")).to_be_visible()          # no OMR node yet: the page says so
    store = LocalImageStore(settings.image_store)
    workers = [Worker(db, store, node, poll_seconds=0.05) for node in ("omr-a", "omr-b")]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        expect(page.locator("#read1-pct")).to_have_text("100", timeout=60_000)
        expect(page.locator("#read2-pct")).to_have_text("100", timeout=60_000)
        expect(page.locator("#read2-count")).to_have_text("4 / 4")
        expect(page.locator("#b-complete")).to_be_visible()
        page.screenshot(path=str(OUTPUT / "technician-upload-progress.png"), full_page=True)
    finally:
        for w in workers:
            w.stopping.set()
        for t in threads:
            t.join(30)


def test_calibration_statistics_live(browser, server):
    """Issue 7: the team leader watches a marker's statistics (and plots) change live when a mark
    arrives, without reloading the calibration page."""
    import re

    from calibration import stats
    from marking import dispatch, submission

    base, world, db, settings = server["base"], server["world"], server["db"], server["settings"]
    simulate.create_responses_for_testing(db, world.subject_code, 2, seed=11, schools=("S08",))
    sha = LocalImageStore(settings.image_store).put(png("calibration live"))
    with db.write() as s:
        for r in s.execute(select(Response).where(Response.image_sha256.is_(None))).scalars():
            r.image_sha256 = sha
    m2 = world.users["marker2"]
    before = next((m["count"] for m in stats.marker_statistics(db, world.item_id)["markers"]
                   if m["user_id"] == m2), 0)

    page = open_as(browser, base, "leader")
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/leader/items/{world.item_id}/calibration")
    expect(page.locator("#live-status")).to_have_class("live on")
    row = page.locator(f'#statistics tr[data-user="{m2}"]')
    if before:
        expect(row.locator(".s-count")).to_have_text(str(before))
    else:
        expect(row).to_have_count(0)
    page.evaluate("window.__notReloaded = true")

    view = dispatch.claim_next(db, m2, world.item_id)
    submission.submit_mark(db, m2, view.token, "4", request_id="e2e-calibration-live")

    expect(row.locator(".s-count")).to_have_text(str(before + 1), timeout=15_000)   # live, no reload
    expect(row.locator(".s-username")).to_have_text("marker2")
    expect(row.locator(".s-recheck")).to_have_text("–")   # R-MARK-5 back-reads: none of marker2's yet
    expect(page.locator("#calibration-live img.plot")).to_have_attribute("src", re.compile(r"[?&]v=\d+"))
    expect(row.locator("img.live-plot").first).to_have_attribute("src", re.compile(r"/validity\.png(\?v=\d+)?$"))
    assert page.evaluate("window.__notReloaded === true")
    assert not errors, errors
    page.locator("#calibration-live").screenshot(path=str(OUTPUT / "calibration-live.png"))


def test_live_refresh_fires_during_a_stream_of_events(browser, server):
    """Pages refresh on live events at most every N ms — and still refresh while events keep
    coming (a restarting debounce would wait for the stream to stop, i.e. all day)."""
    page = browser.new_page()
    page.goto(server["base"] + "/auth/login")
    runs = page.evaluate("""() => new Promise(resolve => {
        let runs = 0;
        const refresh = MC.coalesce(() => { runs += 1; }, 200);
        const stream = setInterval(refresh, 20);          // an event every 20 ms
        setTimeout(() => { clearInterval(stream); resolve(runs); }, 1100);
    })""")
    page.close()
    assert 4 <= runs <= 6
