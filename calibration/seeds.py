"""Seeds (质检卷) and self-checks (自评) injected into a marker's live stream.

Seed hygiene (★ reference/marking.md §6.8):

* A seed is a standardisation response with a definitive score. It is dealt as a
  ``seed`` task reserved for one marker, leased by the engine's ``claim_next`` like
  live work: the same TaskView (queue ``marking``, the response's own image
  reference from the same image pipeline, the item's frozen scheme), a uuid4 lease
  token, no seed flag and no id pattern. The submit is the ordinary one.
* Never the same seed twice to a marker: a seed is only dealt to a marker who was
  never dealt nor marked the response (``mark_assignment`` UNIQUE backs it). A seed
  lease that lapsed counts as exposed and is not re-dealt.
* Schedule: after a jittered number of live claims, uniform on [N/2, 3N/2] with
  N = ``seed_rate`` (``seed_rate_start`` during the first ``start_of_day`` claims
  of the local day), drawn from ``random.Random`` keyed by (salt, marker, item,
  seeds dealt so far) — deterministic for tests and demos, unpredictable to a
  marker without the per-item salt.
* Self-checks re-serve one of the marker's own earlier live responses (at least
  ``self_check_min_age`` claims old, never twice) at ``self_check_pm`` ‰ of live
  claims, same jittered schedule. The first score stands: a self-check mark never
  enters the resolution chain; it is only compared (within the item threshold).
* Results go to ``calibration_result``; after each seed the marker is checked
  (:mod:`calibration.monitor`) and suspended automatically when an alarm fires.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, exists, func, select
from sqlalchemy.orm import Session

from marking import events
from marking.dispatch import Injector, dealt_on_day
from marking.models import (CalibrationResult, CalibrationSetting, Item, Mark, MarkTask,
                            StandardisationResponse, User)
from marking.models.work import MarkerItemTally
from marking.statements import one_of

from . import config
from .common import LIVE_MARK_KINDS, seen


def _gap(salt: str, user_id: int, item_id: int, kind: str, count: int, rate: int) -> int:
    rng = random.Random(f"{salt}|{kind}|{user_id}|{item_id}|{count}")
    rate = max(1, int(rate))
    return rng.randint(max(1, rate // 2), max(1, rate + rate // 2))


# Self-check k is due once the marker's live claims reach the sum of the first k + 1 gaps
# (a cumulative schedule: one that could not be dealt stays owed). Summing on every claim
# cost a keyed RNG per self-check already dealt (0.3 ms a claim for a marker with 4,000
# reads), so the sums are kept per marker, item and rate, the least recently used dropped.
_DUE_SUMS: OrderedDict[tuple, list[int]] = OrderedDict()
_DUE_SUMS_KEPT = 8192
_DUE_SUMS_LOCK = threading.Lock()


def _self_check_due_at(salt: str, user_id: int, item_id: int, dealt: int, rate: int) -> int:
    """Live claims after which self-check number ``dealt`` (from 0) is due."""
    key = (salt, user_id, item_id, rate)
    with _DUE_SUMS_LOCK:
        sums = _DUE_SUMS.pop(key, None) or []
        while len(sums) <= dealt:
            sums.append((sums[-1] if sums else 0) + _gap(salt, user_id, item_id, "self_check", len(sums), rate))
        _DUE_SUMS[key] = sums
        if len(_DUE_SUMS) > _DUE_SUMS_KEPT:
            _DUE_SUMS.popitem(last=False)
        return sums[dealt]


@dataclass(frozen=True)
class _Counts:
    """What the schedule needs about one marker on one item, read by the claim's facts
    statement (:data:`INJECTOR`'s facts, ``marking.dispatch.Injector``)."""

    params: str | None           # the item's calibration_setting overrides (JSON) or None
    pending: bool                # an open seed/self-check task is reserved for the marker
    seeds_dealt: int
    checks_dealt: int
    live_total: int              # live claims (first/second/third), by claim order
    live_today: int
    live_since_seed: int         # live claims after the last seed claim
    has_seed_pool: bool


def _count_facts() -> list:
    """The :class:`_Counts` fields as labelled scalar expressions (labels ``seeds_<field>``),
    over the claim's bind parameters ``user_id``, ``item_id`` and ``day``. Short aliases:
    they join the claim's facts statement, which must stay under psycopg's 4 KB parse
    cache limit. The live counts come from the marker's tally (``marker_item_tally``,
    one row), not from counting their assignments, which grew with their history."""
    t, k = MarkTask.__table__.alias("st"), MarkerItemTally.__table__.alias("sk")
    user_id, item_id = bindparam("user_id"), bindparam("item_id")
    mine = and_(t.c.reserved_for == user_id, t.c.item_id == item_id)   # ix_mark_task_reserved

    def count_tasks(*where):
        return select(func.count()).select_from(t).where(mine, *where).scalar_subquery()

    def tally(column):
        return (select(column).where(k.c.marker_id == user_id, k.c.item_id == item_id)
                .scalar_subquery())

    facts = {
        "params": select(CalibrationSetting.params).where(CalibrationSetting.item_id == item_id)
        .scalar_subquery(),
        "pending": exists().where(mine, one_of(t.c.slot, ("seed", "self_check")), t.c.status == "open"),
        "seeds_dealt": count_tasks(t.c.slot == "seed"),
        "checks_dealt": count_tasks(t.c.slot == "self_check"),
        "live_total": tally(k.c.live_total),
        "live_today": tally(dealt_on_day(k, bindparam("day", type_=k.c.day.type))),
        "live_since_seed": tally(k.c.live_since_seed),
        "has_seed_pool": exists().where(StandardisationResponse.item_id == item_id,
                                        StandardisationResponse.purpose == "seed",
                                        StandardisationResponse.active.is_(True)),
    }
    return [expression.label(f"seeds_{name}") for name, expression in facts.items()]


def _counts(facts) -> _Counts:
    return _Counts(facts["seeds_params"], bool(facts["seeds_pending"]), facts["seeds_seeds_dealt"],
                   facts["seeds_checks_dealt"], facts["seeds_live_total"] or 0, facts["seeds_live_today"] or 0,
                   facts["seeds_live_since_seed"] or 0, bool(facts["seeds_has_seed_pool"]))


def inject(session: Session, user: User, item: Item, now: dt.datetime, facts) -> MarkTask | None:
    """A seed or self-check task due for ``user``, or None (:data:`INJECTOR`).

    Called on every live claim with the counts already read by the claim's facts
    statement, so the usual answer ("nothing due") costs no statement; the seed pool and
    the marker's own earlier responses are read only when one is due.
    """
    counts = _counts(facts)
    settings = config.merged_readonly(counts.params)
    salt = settings["schedule_salt"] or f"item:{item.id}"
    if counts.pending:
        # A self-check whose lease lapsed is re-served; a lapsed seed counts as exposed.
        pending = session.execute(select(MarkTask).where(
            MarkTask.item_id == item.id, MarkTask.reserved_for == user.id, MarkTask.status == "open",
            MarkTask.slot.in_(("seed", "self_check"))).order_by(MarkTask.id)).scalars().all()
        for task in pending:
            if task.slot == "self_check":
                return task
            task.status = "cancelled"
    task = _seed_due(session, user, item, settings, salt, counts, now) if counts.has_seed_pool else None
    if task is None:
        task = _self_check_due(session, user, item, settings, salt, counts, now)
    if task is not None:
        session.add(task)
        session.flush()
    return task


# Registered in ``marking.dispatch.INJECTORS`` by :func:`calibration.install`.
INJECTOR = Injector("seeds", _count_facts, inject)


def _seed_due(session: Session, user: User, item: Item, settings: dict, salt: str, counts: _Counts,
              now: dt.datetime) -> MarkTask | None:
    rate = settings["seed_rate_start"] if counts.live_today < settings["start_of_day"] else settings["seed_rate"]
    if counts.live_since_seed < _gap(salt, user.id, item.id, "seed", counts.seeds_dealt, rate):
        return None
    pool = session.execute(select(StandardisationResponse.response_id).where(
        StandardisationResponse.item_id == item.id, StandardisationResponse.purpose == "seed",
        StandardisationResponse.active.is_(True))).scalars().all()
    fresh = sorted((rid for rid in pool if not seen(session, user.id, rid)),
                   key=lambda rid: hashlib.sha256(f"{salt}|{user.id}|{rid}".encode()).hexdigest())
    if not fresh:
        events.publish(session, events.leader_topic(item.id), "seed.pool_exhausted",
                       {"item_id": item.id, "user_id": user.id})
        return None
    return MarkTask(response_id=fresh[0], item_id=item.id, slot="seed", status="open", reserved_for=user.id,
                    created_at=now)


def _self_check_due(session: Session, user: User, item: Item, settings: dict, salt: str, counts: _Counts,
                    now: dt.datetime) -> MarkTask | None:
    pm = int(settings["self_check_pm"])
    if pm <= 0:
        return None
    dealt = counts.checks_dealt
    rate = max(1, 1000 // pm)
    if counts.live_total < _self_check_due_at(salt, user.id, item.id, dealt, rate):
        return None
    own = session.execute(
        select(Mark.response_id).join(MarkTask, MarkTask.id == Mark.task_id)
        .where(Mark.marker_id == user.id, MarkTask.item_id == item.id, Mark.kind.in_(LIVE_MARK_KINDS))
        .order_by(Mark.id)).scalars().all()
    age = int(settings["self_check_min_age"])
    if len(own) <= age:
        return None
    done = set(session.execute(select(MarkTask.response_id).where(
        MarkTask.item_id == item.id, MarkTask.slot == "self_check", MarkTask.reserved_for == user.id)).scalars())
    candidates = [rid for rid in own[:-age] if rid not in done]
    if not candidates:
        return None
    rng = random.Random(f"{salt}|self|{user.id}|{item.id}|{dealt}")
    return MarkTask(response_id=rng.choice(candidates), item_id=item.id, slot="self_check", status="open",
                    reserved_for=user.id, created_at=now)


def on_calibration_mark(session: Session, task: MarkTask, mark: Mark, now: dt.datetime) -> None:
    """Submission hook for ``seed`` and ``self_check`` marks (same transaction as the mark)."""
    item = session.get(Item, task.item_id)
    if task.slot == "seed":
        row = session.execute(select(StandardisationResponse).where(
            StandardisationResponse.response_id == task.response_id)).scalar_one_or_none()
        if row is None:
            return
        tolerance = row.tolerance_cp if row.tolerance_cp is not None else item.threshold_cp
        session.add(CalibrationResult(mark_id=mark.id, user_id=mark.marker_id, item_id=item.id, kind="seed",
                                      score_cp=mark.score_cp, reference_cp=row.definitive_cp, tolerance_cp=tolerance,
                                      within=abs(mark.score_cp - row.definitive_cp) <= tolerance, created_at=now))
        session.flush()
        events.publish(session, events.leader_topic(item.id), "seed.marked",
                       {"item_id": item.id, "user_id": mark.marker_id})
        from . import monitor
        monitor.check_in_session(session, mark.marker_id, item.id, now)
    elif task.slot == "self_check":
        first = session.execute(
            select(Mark.score_cp).where(Mark.response_id == task.response_id, Mark.marker_id == mark.marker_id,
                                        Mark.kind.in_(LIVE_MARK_KINDS)).order_by(Mark.id).limit(1)
        ).scalar_one_or_none()
        if first is None:
            return
        session.add(CalibrationResult(mark_id=mark.id, user_id=mark.marker_id, item_id=item.id, kind="self_check",
                                      score_cp=mark.score_cp, reference_cp=first, tolerance_cp=item.threshold_cp,
                                      within=abs(mark.score_cp - first) <= item.threshold_cp, created_at=now))
        session.flush()
