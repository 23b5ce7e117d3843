"""Fixtures for the scanner-batch tests: a small exam world on each database backend."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from marking import batches
from marking.models import Candidate, ExamSession, Item, Registration, Subject, User, UserRole
from marking.storage import LocalImageStore

from tests.batches.batch_cards import small_template

ROLL = [f"4501262{n:05d}" for n in range(1, 13)]   # 12 candidates, October 2026 sitting
FAST_HASH = "$argon2id$v=19$m=8,t=1,p=1$dGVzdHNhbHQ$notarealhashnotarealhash"
PEOPLE = {
    "tech1": ["technician"], "tech2": ["technician"], "keyofficer": ["key_officer"],
    "reviewer": ["key_officer"], "authority": ["authority_officer"], "marker1": ["marker"],
}


@dataclass
class World:
    subject_code: str
    subject_id: int
    users: dict[str, int]
    roll: list[str]
    items: dict[str, int] = field(default_factory=dict)


def pass_trial(db, subject_code: str, technician_id: int):
    """R-OMR-1: what a technician does before live reading — a real (small, cheap) synthetic
    trial run of the subject's current template with the live recognition settings."""
    from omr.trial import run_trial
    report = run_trial(db, subject_code, actor_id=technician_id, synthetic=1, dpi=100)
    assert report.passed, report.as_dict()
    return report


def build_world(db, template_body=None, *, subject_code="00015", roll=ROLL, trial=True) -> World:
    with db.write() as s:
        exam = ExamSession(code="ZK-2026-10", name="test", kind="self_taught", year=2026, sitting=2)
        s.add(exam)
        s.flush()
        subject = Subject(session_id=exam.id, code=subject_code, name="English")
        s.add(subject)
        s.flush()
        items = {}
        for n in range(1, 9):
            items[str(n)] = Item(subject_id=subject.id, code=str(n), ordinal=n, kind="objective", max_cp=100,
                                 options="ABCD")
        for n in (9, 10):
            items[str(n)] = Item(subject_id=subject.id, code=str(n), ordinal=n, kind="objective", max_cp=200,
                                 options="ABCDE", multi_select=True, multi_rule="partial_subset", partial_cp=100)
        for n in (11, 12):
            items[str(n)] = Item(subject_id=subject.id, code=str(n), ordinal=n, kind="subjective", max_cp=1000,
                                 step_cp=50, threshold_cp=200)
        s.add_all(items.values())
        for number in roll:
            cand = Candidate(session_id=exam.id, candidate_no=number, name=f"C{number[-3:]}")
            s.add(cand)
            s.flush()
            s.add(Registration(candidate_id=cand.id, subject_id=subject.id))
        users = {}
        for name, roles in PEOPLE.items():
            u = User(username=name, display_name=name, password_hash=FAST_HASH)
            u.roles = [UserRole(role=r) for r in roles]
            s.add(u)
            s.flush()
            users[name] = u.id
        s.flush()
        world = World(subject_code, subject.id, users, list(roll), {k: v.id for k, v in items.items()})
    batches.attach_template(db, subject_code, template_body or small_template())
    if trial:
        pass_trial(db, subject_code, world.users["tech1"])
    return world


@pytest.fixture
def world(db):
    return build_world(db)


@pytest.fixture
def store(settings):
    return LocalImageStore(settings.image_store)
