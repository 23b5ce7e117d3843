"""Worker loops for the concurrency tests (importable by spawned processes)."""
from __future__ import annotations

import random
import time
from fractions import Fraction

from sqlalchemy import func, select
from sqlalchemy.exc import NoResultFound

from marking import dispatch, simulate, submission
from marking.access import LeaseError
from marking.db import Database
from marking.models import Response


def all_resolved(db, item_ids) -> bool:
    with db.read() as s:
        return s.execute(select(func.count()).select_from(Response).where(
            Response.item_id.in_(item_ids), Response.status != "resolved")).scalar_one() == 0


def work(db, plan, item_ids, *, seed: int, deadline: float, abandon_every: int = 0) -> dict:
    """Run ``plan`` [(user, item, queue)] round-robin until every response is resolved."""
    rng = random.Random(seed)
    stats = {"submitted": 0, "replayed": 0, "lease_errors": 0, "abandoned": 0}
    n = 0
    while time.monotonic() < deadline:
        progressed = False
        for user_id, item_id, queue in plan:
            view = dispatch.claim_next(db, user_id, item_id, queue=queue, lease_seconds=30)
            if view is None:
                continue
            n += 1
            if abandon_every and n % abandon_every == 0:
                # Walk away: hand the task back as a crashed client's lease would be recycled.
                try:
                    dispatch.release_task(db, user_id, view.token)
                    stats["abandoned"] += 1
                except LeaseError:  # the same marker's other thread already submitted it
                    stats["lease_errors"] += 1
                continue
            try:  # another thread of the same marker may have been handed this lease and released it
                item, response_id, slot, earlier = simulate._earlier(db, view.token)
            except NoResultFound:
                stats["lease_errors"] += 1
                continue
            score = Fraction(simulate._score_for(item, response_id, slot, seed, earlier), 100)
            request_id = f"w-{view.token}"
            try:
                result = submission.submit_mark(db, user_id, view.token, score, request_id=request_id)
            except LeaseError:
                stats["lease_errors"] += 1
                continue
            stats["submitted"] += 1
            progressed = True
            if rng.random() < 0.3:  # the client retries: same request id, same result
                again = submission.submit_mark(db, user_id, view.token, score, request_id=request_id)
                assert again.replayed and again.mark_id == result.mark_id
                stats["replayed"] += 1
        if not progressed:
            if all_resolved(db, item_ids):
                return stats
            time.sleep(0.02)
    raise AssertionError(f"not all responses resolved before the deadline: {stats}; {_state(db, item_ids)}")


def _state(db, item_ids) -> str:
    """Where the work stands (for the failure message): responses by status, live tasks."""
    from marking.models import MarkTask
    with db.read() as s:
        responses = s.execute(select(Response.status, func.count()).where(Response.item_id.in_(item_ids))
                              .group_by(Response.status)).all()
        tasks = s.execute(select(MarkTask.slot, MarkTask.status, MarkTask.marker_id, MarkTask.leased_until)
                          .where(MarkTask.item_id.in_(item_ids), MarkTask.status.in_(("open", "leased")))).all()
    return f"responses {dict(responses)}; open/leased tasks {[tuple(t) for t in tasks]}"


def process_main(url, plan, item_ids, seed, seconds):
    db = Database(url)
    try:
        return work(db, plan, item_ids, seed=seed, deadline=time.monotonic() + seconds)
    finally:
        db.dispose()
