"""Who may be dealt an item's responses: qualification (R-ROLE-1) and exclusions (R-ROLE-4).

:func:`qualification_problem` is the one place the calibration issue extends
(qualification sets, seeds, suspension): append a check to ``EXTRA_CHECKS``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .models import Candidate, Exclusion, Item, Qualification, Response, Script, User

# Further checks ``fn(session, user, item) -> str | None`` (a reason, or None if fine).
EXTRA_CHECKS: list[Callable[[Session, User, Item], str | None]] = []


@dataclass(frozen=True)
class FactCheck:
    """A further check that needs one fact from the database.

    ``fact()`` builds a SQL expression over the bind parameters ``user_id`` and
    ``item_id``; ``decide(value, user, item)`` turns its value into a reason (or None).
    Dispatch reads every registered fact in its one facts statement, so such a check
    costs no round trip of its own on a claim (issue 8's load target).
    """

    name: str
    fact: Callable[[], Any]
    decide: Callable[[Any, User, Item], str | None]


FACT_CHECKS: list[FactCheck] = []


def item_requires_test(session: Session, item: Item) -> bool:
    """An item requires a passed 上岗考核 once a qualification procedure exists for it.

    The calibration issue creates Qualification rows when it sets up an item's
    qualification set; from then on every marker needs a passed attempt.
    """
    return session.execute(
        select(Qualification.id).where(Qualification.item_id == item.id).limit(1)
    ).first() is not None


def latest_qualification(session: Session, user_id: int, item_id: int) -> str | None:
    return session.execute(
        select(Qualification.status).where(Qualification.user_id == user_id,
                                           Qualification.item_id == item_id)
        .order_by(Qualification.attempt.desc()).limit(1)
    ).scalar_one_or_none()


def qualification_problem(session: Session, user: User, item: Item, *,
                          facts: tuple[str | None, bool] | None = None,
                          check_facts: dict[str, Any] | None = None) -> str | None:
    """R-ROLE-1: None if ``user`` may mark ``item``, else why not.

    ``facts`` — (latest attempt's status, item requires a test) — and ``check_facts`` —
    the value of each :class:`FactCheck` by name — when the caller already read them in
    its own query (dispatch does, to save round trips).
    """
    if user.qualification_level < item.required_qualification:
        return (f"{user.username} holds qualification level {user.qualification_level}; "
                f"item {item.code} requires {item.required_qualification} (R-ROLE-1)")
    if facts is None:
        latest = latest_qualification(session, user.id, item.id)
        requires_test = latest is None and item_requires_test(session, item)
    else:
        latest, requires_test = facts
    if latest is not None and latest != "passed":
        return f"{user.username}'s latest qualification attempt on item {item.code} is {latest}"
    if latest is None and requires_test:
        return f"{user.username} has not passed the qualification test for item {item.code}"
    for fact_check in FACT_CHECKS:
        if check_facts is not None and fact_check.name in check_facts:
            value = check_facts[fact_check.name]
        else:
            value = session.execute(select(fact_check.fact()), {"user_id": user.id, "item_id": item.id}).scalar()
        reason = fact_check.decide(value, user, item)
        if reason:
            return reason
    for check in EXTRA_CHECKS:
        reason = check(session, user, item)
        if reason:
            return reason
    return None


@dataclass(frozen=True)
class Exclusions:
    schools: frozenset[str]
    regions: frozenset[str]
    candidates: frozenset[str]

    @property
    def empty(self) -> bool:
        return not (self.schools or self.regions or self.candidates)


NO_EXCLUSIONS = Exclusions(frozenset(), frozenset(), frozenset())


def exclusions_for(session: Session, user: User) -> Exclusions:
    """R-ROLE-4: recorded exclusions, plus the marker's own school (★ §6.6)."""
    rows = session.execute(select(Exclusion.kind, Exclusion.value).where(Exclusion.user_id == user.id)).all()
    schools = {v for k, v in rows if k == "school"}
    if user.school_code:
        schools.add(user.school_code)
    return Exclusions(frozenset(schools), frozenset(v for k, v in rows if k == "region"),
                      frozenset(v for k, v in rows if k == "candidate"))


def excluded_clause(ex: Exclusions, response_id_column):
    """SQL: the response (correlated by ``response_id_column``) is excluded for the user."""
    conditions = []
    if ex.schools:
        conditions.append(Candidate.school_code.in_(sorted(ex.schools)))
    if ex.regions:
        conditions.append(Candidate.region_code.in_(sorted(ex.regions)))
    if ex.candidates:
        conditions.append(Candidate.candidate_no.in_(sorted(ex.candidates)))
    return (select(Response.id)
            .join(Script, Script.id == Response.script_id)
            .join(Candidate, Candidate.id == Script.candidate_id)
            .where(Response.id == response_id_column, or_(*conditions))
            .exists())


def is_excluded(session: Session, user: User, response_id: int) -> bool:
    ex = exclusions_for(session, user)
    if ex.empty:
        return False
    return bool(session.execute(select(excluded_clause(ex, response_id))).scalar())
