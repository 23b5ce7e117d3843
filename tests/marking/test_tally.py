"""Marker tallies (issue 8): the counts a claim checks, kept by a trigger, equal a recount."""
from __future__ import annotations

import datetime as dt

import pytest
from alembic import command
from sqlalchemy import select, text

from calibration.common import LIVE_MARK_KINDS
from marking import dispatch, migrate, simulate
from marking.centre_time import centre_day
from marking.models import Item, MarkTask
from marking.models.work import MarkAssignment, MarkerItemTally
from marking.tally_triggers import LIVE_READS, RECOUNT

from tests.calibration.helpers import Clock, calibration_hooks, mark_next, qualify, setup  # noqa: F401
from tests.marking.factories import NOW, staffed_subject


def kept(db) -> dict:
    with db.read() as s:
        return {(r.marker_id, r.item_id): (r.live_total, r.day, r.live_on_day, r.live_since_seed)
                for r in s.execute(select(MarkerItemTally)).scalars()}


def recounted(db) -> dict:
    with db.read() as s:
        rows = s.execute(text(RECOUNT)).all()

    def as_date(value):   # SQLite returns the recount's MAX(day) as text
        return value if value is None or isinstance(value, dt.date) else dt.date.fromisoformat(value)

    return {(r.marker_id, r.item_id): (int(r.live_total), as_date(r.day), int(r.live_on_day), int(r.live_since_seed))
            for r in rows}


def test_the_tallys_live_reads_are_the_ones_the_cap_and_the_schedules_count():
    assert LIVE_READS == dispatch.MARKING_SLOTS == LIVE_MARK_KINDS


def test_tallies_equal_a_recount_after_live_reads_seeds_and_releases_over_two_days(db):
    """Live claims on two centre days, seeds dealt between them, a released arbitration
    (its assignment deleted): the trigger-kept tallies equal a recount of the rows."""
    ids = setup(db, markers=3, responses=60, seeds=8)
    item, markers = ids["item"], ids["markers"]
    for user in markers:
        qualify(db, user, item)
    clock = Clock()
    seeds = 0
    for day in range(2):
        for _ in range(8):
            for user in markers:
                done = mark_next(db, user, item, clock)
                seeds += bool(done and done[1].slot == "seed")
        clock.now += dt.timedelta(days=1)
    assert seeds >= 2   # the seed schedule (seed_rate 4) reset live_since_seed on the way
    tallies = kept(db)
    assert tallies == recounted(db)
    days = {tally[1] for tally in tallies.values()}
    assert days == {centre_day(clock.now - dt.timedelta(days=1))}, days
    assert all(tally[0] > tally[2] > 0 for tally in tallies.values())   # total spans both days


def test_a_read_dated_before_the_tallys_day_counts_in_the_total_only(db):
    """A server whose clock is behind deals a read dated yesterday after today's: it is
    not one of today's (the daily cap counts the day's reads, as the old count by day did)."""
    ids = staffed_subject(db, markers=1)
    simulate.create_responses_for_testing(db, ids["subject_code"], 3, seed=3)
    item, user = ids["items"][0], ids["markers"][0]
    today = dispatch.claim_next(db, user, item, now=NOW)
    with db.write() as s:
        task = s.execute(select(MarkTask).where(MarkTask.lease_token == today.token)).scalar_one()
        other = s.execute(select(MarkTask).where(MarkTask.item_id == item, MarkTask.slot == "first",
                                                 MarkTask.response_id != task.response_id)).scalars().first()
        s.add(MarkAssignment(response_id=other.response_id, marker_id=user, item_id=item, task_id=other.id,
                             slot="first", day=centre_day(NOW) - dt.timedelta(days=1), claimed_at=NOW))
    assert kept(db)[(user, item)] == (2, centre_day(NOW), 1, 2)
    with db.read() as s:
        assert dispatch.dealt_today(s, user, item, centre_day(NOW)) == 1
        assert dispatch.dealt_today(s, user, item, centre_day(NOW) + dt.timedelta(days=1)) == 0


def test_the_daily_cap_holds_from_the_tally(db):
    ids = staffed_subject(db, markers=1)
    simulate.create_responses_for_testing(db, ids["subject_code"], 6, seed=3)
    item, user = ids["items"][0], ids["markers"][0]
    with db.write() as s:
        s.get(Item, item).daily_cap = 2
    for minute in range(2):   # a released read still counts: it was dealt
        view = dispatch.claim_next(db, user, item, now=NOW + dt.timedelta(minutes=minute))
        dispatch.release_task(db, user, view.token)
    with pytest.raises(dispatch.CapReached):
        dispatch.claim_next(db, user, item, now=NOW + dt.timedelta(minutes=5))
    assert dispatch.claim_next(db, user, item, now=NOW + dt.timedelta(days=1)) is not None   # a new centre day


def _downgrade(db, revision: str) -> None:
    cfg = migrate.alembic_config(db.url)
    with db.engine.execution_options(mc_write=True).begin() as connection:
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)


def test_the_migration_counts_assignments_made_before_it(db):
    """Upgrading from 0009 fills the tallies from the rows already there; the trigger
    then goes on from those counts."""
    ids = staffed_subject(db, markers=2)
    simulate.create_responses_for_testing(db, ids["subject_code"], 4, seed=3)
    item, (m1, m2) = ids["items"][0], ids["markers"]
    for user in (m1, m2):
        dispatch.release_task(db, user, dispatch.claim_next(db, user, item, now=NOW).token)
    _downgrade(db, "0009")
    with db.write() as s:   # dealt while there were no tallies
        taken = set(s.execute(select(MarkAssignment.response_id).where(MarkAssignment.marker_id == m1)).scalars())
        task = s.execute(select(MarkTask).where(MarkTask.item_id == item, MarkTask.slot == "first",
                                                MarkTask.response_id.not_in(taken))).scalars().first()
        s.add(MarkAssignment(response_id=task.response_id, marker_id=m1, item_id=item, task_id=task.id,
                             slot="first", day=centre_day(NOW), claimed_at=NOW))
    migrate.upgrade(db)
    assert kept(db) == recounted(db)
    assert kept(db)[(m1, item)] == (2, centre_day(NOW), 2, 2)
    assert kept(db)[(m2, item)] == (1, centre_day(NOW), 1, 1)
    dispatch.claim_next(db, m1, item, now=NOW + dt.timedelta(hours=1))
    assert kept(db)[(m1, item)] == (3, centre_day(NOW), 3, 3)
