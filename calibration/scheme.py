"""Trial marking (试评) and the marking scheme (评分细则): R-ROLE-2, R-MARK-9.

* The team leader marks a trial set (``trial`` tasks reserved for them, marked
  through the ordinary submit; the marks never enter a resolution chain).
* The scheme (text + per-score descriptors) is versioned in ``marking_scheme``:
  draft → pending_approval → frozen (→ superseded by the next frozen version).
  Every version is approved by someone other than its author (service check and
  the CHECK constraint ``approved_by <> created_by``); a frozen version is never
  edited. Freezing a version that replaces an earlier frozen one is a scheme change:
  ledger reason ``scheme_change`` (R-QC-4).
* Live dispatch on an item whose scheme was started but is not frozen yet is held
  (:data:`SCHEME_CHECK`, registered in ``marking.eligibility.FACT_CHECKS``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, select
from sqlalchemy.orm import Session

from marking import events, ledger
from marking.access import NotAllowed, active_user, has_duty
from marking.centre_time import now_or
from marking.eligibility import FactCheck
from marking.models import Item, Mark, MarkingScheme, MarkTask, Response, User
from marking.scores import check_mark, format_points, from_cp, parse_points

from .common import lease, leader, subjective_item

APPROVER_ROLES = ("authority_officer", "admin")


def _descriptors(item: Item, descriptors) -> str:
    rows = []
    for entry in descriptors or []:
        score = parse_points(str(entry["score"]))
        check_mark(score, max_cp=item.max_cp, step_cp=item.step_cp)
        rows.append({"score": format_points(score), "descriptor": str(entry["descriptor"])})
    rows.sort(key=lambda r: Fraction(r["score"]))
    return json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _hash(row: MarkingScheme) -> str:
    return hashlib.sha256(f"{row.text}\n{row.descriptors}".encode("utf-8")).hexdigest()


def draft_scheme(db, author_id: int, item_id: int, text: str, descriptors=None, *,
                 now: dt.datetime | None = None) -> int:
    """Create (or edit the open) draft of the item's scheme; returns the scheme id."""
    now = now_or(now)

    def fn(session: Session) -> int:
        author = leader(session, author_id, item_id)
        item = subjective_item(session, item_id)
        open_row = session.execute(
            select(MarkingScheme).where(MarkingScheme.item_id == item_id,
                                        MarkingScheme.status.in_(("draft", "pending_approval")))
        ).scalar_one_or_none()
        body = _descriptors(item, descriptors)
        if open_row is not None:
            if open_row.status != "draft":
                raise ValueError(f"scheme v{open_row.version} is awaiting approval; decide it first")
            if open_row.created_by != author.id:
                raise NotAllowed("only the author edits a draft")
            open_row.text, open_row.descriptors = text, body
            row = open_row
        else:
            latest = session.execute(select(func.max(MarkingScheme.version))
                                     .where(MarkingScheme.item_id == item_id)).scalar() or 0
            row = MarkingScheme(item_id=item_id, version=latest + 1, text=text, descriptors=body,
                                status="draft", created_by=author.id, created_at=now)
            session.add(row)
        session.flush()
        ledger.append(session, actor_id=author.id, action="scheme.drafted", entity="item", entity_id=item_id,
                      data={"scheme_id": row.id, "version": row.version, "hash": _hash(row)}, at=now)
        return row.id

    return db.run(fn, retry_integrity=False)


def submit_scheme(db, author_id: int, scheme_id: int, *, now: dt.datetime | None = None) -> None:
    now = now_or(now)

    def fn(session: Session) -> None:
        row = session.get(MarkingScheme, scheme_id)
        if row is None:
            raise LookupError(f"no scheme {scheme_id}")
        author = leader(session, author_id, row.item_id)
        if row.status != "draft" or row.created_by != author.id:
            raise ValueError("only its author submits a draft for approval")
        row.status = "pending_approval"
        ledger.append(session, actor_id=author.id, action="scheme.submitted", entity="item",
                      entity_id=row.item_id, data={"scheme_id": row.id, "version": row.version,
                                                   "hash": _hash(row)}, at=now)
        events.publish(session, "authority", "scheme.pending", {"scheme_id": row.id, "item_id": row.item_id})

    db.run(fn, retry_integrity=False)


def decide_scheme(db, approver_id: int, scheme_id: int, approve: bool, *, note: str = "",
                  now: dt.datetime | None = None) -> str:
    """Approve (freeze) or send back a pending version. Approver ≠ author (R-MARK-9)."""
    now = now_or(now)

    def fn(session: Session) -> str:
        approver = active_user(session, approver_id)
        row = session.execute(select(MarkingScheme).where(MarkingScheme.id == scheme_id).with_for_update()
                              .execution_options(populate_existing=True)).scalar_one_or_none()
        if row is None:
            raise LookupError(f"no scheme {scheme_id}")
        if not (approver.role_names & set(APPROVER_ROLES) or
                ("team_leader" in approver.role_names and has_duty(session, approver.id, row.item_id, "team_leader"))):
            raise NotAllowed(f"{approver.username} may not approve marking schemes")
        if approver.id == row.created_by:
            raise NotAllowed("the author cannot approve their own scheme (R-MARK-9: two people)")
        if row.status != "pending_approval":
            raise ValueError(f"scheme v{row.version} is {row.status}, not pending approval")
        if not approve:
            row.status = "draft"
            ledger.append(session, actor_id=approver.id, action="scheme.returned", entity="item",
                          entity_id=row.item_id, data={"scheme_id": row.id, "version": row.version,
                                                       "note": note[:400]}, at=now)
            return row.status
        previous = session.execute(select(MarkingScheme).where(MarkingScheme.item_id == row.item_id,
                                                               MarkingScheme.status == "frozen")).scalars().all()
        for old in previous:
            old.status = "superseded"
        row.status, row.approved_by, row.approved_at = "frozen", approver.id, now
        session.flush()
        ledger.append(session, actor_id=approver.id, action="scheme.frozen", entity="item", entity_id=row.item_id,
                      reason="scheme_change" if previous else None,
                      data={"scheme_id": row.id, "version": row.version, "hash": _hash(row),
                            "author": row.created_by, "supersedes": [o.version for o in previous],
                            "live_marks": _live_marks(session, row.item_id), "note": note[:400]}, at=now)
        events.publish(session, events.leader_topic(row.item_id), "scheme.frozen",
                       {"item_id": row.item_id, "version": row.version})
        return row.status

    return db.run(fn, retry_integrity=False)


def _live_marks(session: Session, item_id: int) -> int:
    return session.execute(select(func.count()).select_from(Mark).join(Response, Response.id == Mark.response_id)
                           .where(Response.item_id == item_id,
                                  Mark.kind.in_(("first", "second", "third")))).scalar_one()


def _unfrozen_scheme():
    """SQL: the item has a marking scheme and none of its versions is frozen."""
    of_item = MarkingScheme.item_id == bindparam("item_id")
    return and_(exists().where(of_item), ~exists().where(of_item, MarkingScheme.status == "frozen"))


def _decide_scheme(unfrozen, user: User, item: Item) -> str | None:
    if unfrozen:
        return f"the marking scheme of item {item.code} is not frozen yet (R-MARK-9)"
    return None


# ``marking.eligibility.FACT_CHECKS`` entry: hold live dispatch while a started scheme is
# not frozen (R-MARK-9); dispatch reads the fact in its own facts statement.
SCHEME_CHECK = FactCheck("scheme_unfrozen", _unfrozen_scheme, _decide_scheme)


@dataclass(frozen=True)
class SchemeView:
    id: int
    version: int
    status: str
    text: str
    descriptors: list[dict[str, str]]
    created_by: int
    approved_by: int | None
    approved_at: dt.datetime | None


def versions(db, item_id: int) -> list[SchemeView]:
    with db.read() as session:
        rows = session.execute(select(MarkingScheme).where(MarkingScheme.item_id == item_id)
                               .order_by(MarkingScheme.version)).scalars().all()
        return [SchemeView(r.id, r.version, r.status, r.text, json.loads(r.descriptors), r.created_by,
                           r.approved_by, r.approved_at) for r in rows]


# --------------------------------------------------------------------------- trial marking

def start_trial(db, leader_id: int, item_id: int, count: int, *, seed: str = "trial",
                response_ids: list[int] | None = None, now: dt.datetime | None = None) -> list[int]:
    """Reserve a trial set for the team leader: given responses, or ``count`` unmarked ones
    chosen reproducibly by SHA-256(seed | response id). Returns the response ids."""
    now = now_or(now)

    def fn(session: Session) -> list[int]:
        boss = leader(session, leader_id, item_id)
        subjective_item(session, item_id)
        if response_ids is None:
            marked = select(Mark.response_id)
            pool = session.execute(select(Response.id).where(Response.item_id == item_id,
                                                             Response.status == "pending",
                                                             Response.id.not_in(marked))).scalars().all()
            chosen = sorted(pool, key=lambda rid: hashlib.sha256(f"{seed}|{rid}".encode()).hexdigest())[:count]
        else:
            chosen = list(response_ids)
        for rid in chosen:
            response = session.get(Response, rid)
            if response is None or response.item_id != item_id:
                raise LookupError(f"response {rid} is not a response of item {item_id}")
            exists = session.execute(select(MarkTask.id).where(MarkTask.response_id == rid, MarkTask.slot == "trial",
                                                               MarkTask.reserved_for == boss.id)).first()
            if not exists:
                session.add(MarkTask(response_id=rid, item_id=item_id, slot="trial", status="open",
                                     reserved_for=boss.id, created_at=now))
        ledger.append(session, actor_id=boss.id, action="trial.started", entity="item", entity_id=item_id,
                      data={"responses": sorted(chosen), "seed": seed}, at=now)
        return sorted(chosen)

    return db.run(fn, retry_integrity=False)


def next_trial_task(db, leader_id: int, item_id: int, *, now: dt.datetime | None = None,
                    lease_seconds: int | None = None):
    """The team leader's next trial response (a TaskView), or None when the set is done."""
    return next_reserved_task(db, leader_id, item_id, "trial", now=now, lease_seconds=lease_seconds)


def next_reserved_task(db, user_id: int, item_id: int, slot: str, *, now: dt.datetime | None = None,
                       lease_seconds: int | None = None):
    now = now_or(now)

    def fn(session: Session):
        active_user(session, user_id)
        item = subjective_item(session, item_id)
        held = session.execute(select(MarkTask).where(MarkTask.item_id == item_id, MarkTask.slot == slot,
                                                      MarkTask.status == "leased", MarkTask.marker_id == user_id,
                                                      MarkTask.leased_until >= now).limit(1)).scalar_one_or_none()
        if held is not None:
            return lease(session, held, user_id, item, slot, now, lease_seconds)
        task = session.execute(select(MarkTask).where(MarkTask.item_id == item_id, MarkTask.slot == slot,
                                                      MarkTask.reserved_for == user_id,
                                                      MarkTask.status.in_(("open", "leased")))
                               .order_by(MarkTask.id).limit(1)).scalar_one_or_none()
        if task is None:
            return None
        return lease(session, task, user_id, item, slot, now, lease_seconds)

    return db.run(fn)


def trial_marks(db, item_id: int) -> list[dict[str, Any]]:
    """The team leader's trial marks, for classifying into standardisation sets."""
    with db.read() as session:
        rows = session.execute(select(Mark, Response.image_sha256).join(Response, Response.id == Mark.response_id)
                               .where(Response.item_id == item_id, Mark.kind == "trial").order_by(Mark.id)).all()
        return [{"response_id": m.response_id, "score": format_points(from_cp(m.score_cp)), "marker_id": m.marker_id,
                 "image_ref": image, "condition_code": m.condition_code} for m, image in rows]
