"""Shared builders for the marking-engine tests (no passwords: hashes are placeholders)."""
from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy import select

from marking import policy
from marking.models import ExamSession, Item, ItemDuty, Subject, User, UserRole

NOW = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.timezone.utc)   # 10:00 at the centre
_counter = itertools.count(1)


def make_user(session, username: str, *roles: str, level: int = 1, school: str | None = None) -> User:
    user = User(username=username, display_name=username.title(), password_hash="!unusable",
                qualification_level=level, school_code=school)
    user.roles = [UserRole(role=r) for r in (roles or ("marker",))]
    session.add(user)
    session.flush()
    return user


def make_subject(session, *, code: str = "00015", kind: str = "self_taught", pass_band_cp: int = 0,
                 objective_max_cp: int | None = 4000, items=None, double_pass: bool = False,
                 process_weight_pm: int | None = None, rounding: str = "half_up", places: int = 0) -> Subject:
    exam = session.execute(select(ExamSession).where(ExamSession.code == f"S-{kind}")).scalar_one_or_none()
    if exam is None:
        exam = ExamSession(code=f"S-{kind}", name="Session", kind=kind, year=2026, sitting=2)
        session.add(exam)
        session.flush()
    subject = Subject(session_id=exam.id, code=code, name=f"Subject {code}", pass_band_cp=pass_band_cp,
                      double_pass=double_pass, process_weight_pm=process_weight_pm,
                      total_rounding=rounding, total_places=places)
    session.add(subject)
    session.flush()
    ordinal = 1
    if objective_max_cp:
        session.add(Item(subject_id=subject.id, code="O1", ordinal=ordinal, kind="objective",
                         max_cp=objective_max_cp, options="ABCD"))
        ordinal += 1
    for spec in items or [dict(code="Q1")]:
        spec = dict(spec)
        params = spec.pop("policy", None)
        item = Item(subject_id=subject.id, ordinal=ordinal, kind="subjective",
                    **{"max_cp": 1000, "step_cp": 50, "threshold_cp": 200, **spec})
        if params is not None:
            item.policy_id = policy.ensure_policy(session, f"p-{code}-{spec['code']}", params).id
        session.add(item)
        ordinal += 1
    session.flush()
    return subject


def duty(session, user: User, item: Item, kind: str = "marker", status: str = "active") -> None:
    session.add(ItemDuty(item_id=item.id, user_id=user.id, duty=kind, status=status))
    session.flush()


def subjective_items(session, subject: Subject) -> list[Item]:
    return list(session.execute(select(Item).where(Item.subject_id == subject.id, Item.kind == "subjective")
                                .order_by(Item.ordinal)).scalars())


def staffed_subject(db, *, markers: int = 4, leaders: int = 1, reviewers: int = 1, code: str = "00015",
                    item_specs=None, **subject_kw) -> dict:
    """A subject with staff on every subjective item; returns ids by name."""
    with db.write() as s:
        subject = make_subject(s, code=code, items=item_specs, **subject_kw)
        items = subjective_items(s, subject)
        out = {"subject_id": subject.id, "subject_code": code, "items": [i.id for i in items],
               "markers": [], "leaders": [], "reviewers": []}
        for n in range(markers):
            u = make_user(s, f"m{n + 1}-{code}", "marker")
            out["markers"].append(u.id)
            for i in items:
                duty(s, u, i, "marker")
        for n in range(leaders):
            u = make_user(s, f"tl{n + 1}-{code}", "team_leader", level=2)
            out["leaders"].append(u.id)
            for i in items:
                duty(s, u, i, "team_leader")
        for n in range(reviewers):
            u = make_user(s, f"rv{n + 1}-{code}", "marker", level=2)
            out["reviewers"].append(u.id)
            for i in items:
                duty(s, u, i, "reviewer")
        officer = make_user(s, f"ao-{code}", "authority_officer")
        officer2 = make_user(s, f"ao2-{code}", "authority_officer")
        admin = make_user(s, f"admin-{code}", "admin")
        out.update(officer=officer.id, officer2=officer2.id, admin=admin.id)
    return out
