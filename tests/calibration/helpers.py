"""Builders for calibration tests: a staffed item with standardisation sets."""
from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from sqlalchemy import select

from calibration import config, standardisation
from marking import dispatch, simulate, submission
from marking.models import MarkTask, Response, StandardisationResponse

from tests.marking.factories import NOW, staffed_subject

ITEM = dict(code="Q1", max_cp=1000, step_cp=50, threshold_cp=200)


def true_score(response_id: int) -> int:
    """A deterministic 'true' score in cp (0.5 steps in 2..8) for a response."""
    return 200 + (int(hashlib.sha256(str(response_id).encode()).hexdigest(), 16) % 13) * 50


def setup(db, *, markers=4, responses=60, qual=15, seeds=8, practice=2, settings=None, code="00015"):
    ids = staffed_subject(db, markers=markers, code=code, item_specs=[dict(ITEM)])
    simulate.create_responses_for_testing(db, code, responses, seed=1)
    item = ids["items"][0]
    leader = ids["leaders"][0]
    with db.write() as s:
        for r in s.execute(select(Response).where(Response.item_id == item)).scalars():
            r.image_sha256 = hashlib.sha256(f"img{r.id}".encode()).hexdigest()
        config.set_for_item(s, item, {"qualification_size": 5, "seed_rate": 4, "seed_rate_start": 4,
                                      "validity_min_seeds": 3, "validity_window": 4, "self_check_pm": 0,
                                      **(settings or {})}, actor_id=leader, now=NOW)
        rids = s.execute(select(Response.id).where(Response.item_id == item).order_by(Response.id.desc())
                         ).scalars().all()
    entries = []
    for k, rid in enumerate(rids[:qual + seeds + practice]):
        purpose = "qualification" if k < qual else "seed" if k < qual + seeds else "practice"
        entries.append({"response_id": rid, "purpose": purpose,
                        "definitive": str(true_score(rid) / 100)})
    standardisation.define(db, leader, item, entries, now=NOW)
    ids["item"] = item
    ids["leader"] = leader
    return ids


def definitive(db, response_id: int) -> int | None:
    with db.read() as s:
        return s.execute(select(StandardisationResponse.definitive_cp)
                         .where(StandardisationResponse.response_id == response_id)).scalar_one_or_none()


def task_of(db, token: str) -> MarkTask:
    with db.read() as s:
        return s.execute(select(MarkTask).where(MarkTask.lease_token == token)).scalar_one()


def qualify(db, user: int, item: int, *, good=True, now=NOW):
    standardisation.start_attempt(db, user, item, now=now)
    while True:
        view = standardisation.next_task(db, user, item, now=now)
        if view is None:
            return
        task = task_of(db, view.token)
        cp = definitive(db, task.response_id)
        if not good:
            cp = min(1000, cp + 300)
        submission.submit_mark(db, user, view.token, str(cp / 100), request_id=str(uuid.uuid4()), now=now)


class Clock:
    def __init__(self, start=NOW):
        self.now = start

    def tick(self, seconds=30) -> dt.datetime:
        self.now = self.now + dt.timedelta(seconds=seconds)
        return self.now


def mark_next(db, user: int, item: int, clock: Clock, *, seed_offset_cp: int = 0, live_offset_cp: int = 0):
    """Claim and mark one task in the marking queue. Returns (view, task) or None."""
    now = clock.tick()
    view = dispatch.claim_next(db, user, item, now=now)
    if view is None:
        return None
    task = task_of(db, view.token)
    if task.slot == "seed":
        cp = definitive(db, task.response_id) + seed_offset_cp
    else:
        cp = true_score(task.response_id) + live_offset_cp
    cp = max(0, min(1000, cp))
    submission.submit_mark(db, user, view.token, str(cp / 100), request_id=str(uuid.uuid4()),
                           dwell_ms=20_000, now=clock.tick(20))
    return view, task


import pytest  # noqa: E402

import calibration  # noqa: E402


@pytest.fixture(autouse=True)
def calibration_hooks():
    """Hooks are process-global registries: install for each calibration test, then remove."""
    calibration.install()
    yield
    calibration.uninstall()
