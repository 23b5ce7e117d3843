"""Domain rules held by the database itself (UNIQUE and CHECK), on both backends."""
from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from marking import models as m


@pytest.fixture
def base(db):
    """A session, subject, items, users, a batch with one card, a script with one response."""
    with db.write() as s:
        exam = m.ExamSession(code="S", name="S", kind="self_taught", year=2026, sitting=2)
        tpl = m.CardTemplate(code="card", version="1", content_hash="a" * 64, body="{}")
        s.add_all([exam, tpl])
        s.flush()
        subject = m.Subject(session_id=exam.id, code="001", name="Subj", card_template_id=tpl.id)
        s.add(subject)
        s.flush()
        item = m.Item(subject_id=subject.id, code="41", ordinal=1, kind="subjective", max_cp=1000,
                      step_cp=50, threshold_cp=200)
        u1 = m.User(username="u1", display_name="U1", password_hash="x")
        u2 = m.User(username="u2", display_name="U2", password_hash="x")
        s.add_all([item, u1, u2])
        s.flush()
        batch = m.ScanBatch(subject_id=subject.id, code="B1", card_template_id=tpl.id, template_hash="a" * 64,
                            recognition_version="omr/1", settings_hash="b" * 64)
        s.add(batch)
        s.flush()
        page = m.PageImage(batch_id=batch.id, sha256="c" * 64, source_name="p.png", status="accepted")
        s.add(page)
        s.flush()
        card = m.Card(batch_id=batch.id, page_image_id=page.id)
        script = m.Script(subject_id=subject.id, anon_code="X1")
        s.add_all([card, script])
        s.flush()
        response = m.Response(script_id=script.id, item_id=item.id)
        s.add(response)
        s.flush()
        ids = dict(item=item.id, u1=u1.id, u2=u2.id, card=card.id, script=script.id, response=response.id,
                   subject=subject.id, batch=batch.id, exam=exam.id)
    return ids


def _task(s, ids, slot="first", marker=None):
    task = m.MarkTask(response_id=ids["response"], item_id=ids["item"], slot=slot, marker_id=marker)
    s.add(task)
    s.flush()
    return task


def _fails(db, build):
    with pytest.raises(IntegrityError):
        with db.write() as s:
            build(s)


def test_two_reads_per_card_on_two_nodes(db, base):
    """R-OMR-3: UNIQUE(card, read_no), UNIQUE(card, node), method A for read 1, B for read 2."""
    with db.write() as s:
        s.add(m.OmrRead(card_id=base["card"], read_no=1, method="a", node="omr-a"))
    _fails(db, lambda s: s.add(m.OmrRead(card_id=base["card"], read_no=2, method="b", node="omr-a")))
    _fails(db, lambda s: s.add(m.OmrRead(card_id=base["card"], read_no=1, method="a", node="omr-b")))
    _fails(db, lambda s: s.add(m.OmrRead(card_id=base["card"], read_no=2, method="a", node="omr-b")))
    _fails(db, lambda s: s.add(m.OmrRead(card_id=base["card"], read_no=3, method="b", node="omr-c")))
    with db.write() as s:
        s.add(m.OmrRead(card_id=base["card"], read_no=2, method="b", node="omr-b"))


def test_leased_read_needs_token(db, base):
    _fails(db, lambda s: s.add(m.OmrRead(card_id=base["card"], read_no=1, method="a", node="n", status="leased")))


def test_same_marker_never_twice_on_a_response(db, base):
    def two_marks(s, kind2):
        t1, t2 = _task(s, base, "first"), _task(s, base, "second" if kind2 != "self_check" else "self_check")
        s.add(m.Mark(response_id=base["response"], task_id=t1.id, marker_id=base["u1"], kind="first",
                     score_cp=100, request_id="r1"))
        s.add(m.Mark(response_id=base["response"], task_id=t2.id, marker_id=base["u1"], kind=kind2,
                     score_cp=100, request_id="r2"))
        s.flush()
    _fails(db, lambda s: two_marks(s, "second"))
    with db.write() as s:  # a self-check re-serves the marker's own response on purpose
        two_marks(s, "self_check")


def test_request_id_is_idempotency_key(db, base):
    def dup(s):
        t1, t2 = _task(s, base, "first"), _task(s, base, "second")
        s.add(m.Mark(response_id=base["response"], task_id=t1.id, marker_id=base["u1"], kind="first",
                     score_cp=0, request_id="same"))
        s.flush()
        s.add(m.Mark(response_id=base["response"], task_id=t2.id, marker_id=base["u1"], kind="second",
                     score_cp=0, request_id="same"))
        s.flush()
    _fails(db, dup)


def test_one_live_slot_of_each_kind_per_response(db, base):
    _fails(db, lambda s: (_task(s, base, "third"), _task(s, base, "third")))
    with db.write() as s:  # a cancelled slot does not block its replacement
        t = _task(s, base, "third")
        t.status = "cancelled"
        s.flush()
        _task(s, base, "third")


@pytest.mark.parametrize("kwargs", [dict(score_cp=-50), dict(score_cp=100, condition_code="NR")])
def test_mark_score_checks(db, base, kwargs):
    def build(s):
        t = _task(s, base)
        s.add(m.Mark(response_id=base["response"], task_id=t.id, marker_id=base["u1"], kind="first",
                     request_id="r", **kwargs))
        s.flush()
    _fails(db, build)


def test_response_final_iff_resolved(db, base):
    def resolve_without_score(s):
        r = s.get(m.Response, base["response"])
        r.status = "resolved"
        s.flush()
    _fails(db, resolve_without_score)


def test_two_person_rules(db, base):
    _fails(db, lambda s: s.add(m.RegisterEntry(register="omr_exception", reason_code="x", proposed_by=base["u1"],
                                               confirmed_by=base["u1"])))
    _fails(db, lambda s: s.add(m.ScoreChange(script_id=base["script"], before_num=1, before_den=1, after_num=2,
                                             after_den=1, reason_code="input_error", status="applied",
                                             requested_by=base["u1"], approved_by=base["u1"])))


def test_candidate_number_has_twelve_digits(db, base):
    _fails(db, lambda s: s.add(m.Candidate(session_id=base["exam"], candidate_no="4501262", name="x")))


@pytest.mark.parametrize("kwargs", [
    dict(kind="subjective", max_cp=1000),                       # subjective without step/threshold
    dict(kind="objective", max_cp=100),                         # objective without options
    dict(kind="subjective", max_cp=0, step_cp=50, threshold_cp=0),
])
def test_item_kind_fields(db, base, kwargs):
    _fails(db, lambda s: s.add(m.Item(subject_id=base["subject"], code="x", ordinal=9, **kwargs)))


def test_sitting_and_process_weight_ranges(db, base):
    _fails(db, lambda s: s.add(m.ExamSession(code="Z", name="Z", kind="self_taught", year=2026, sitting=5)))
    _fails(db, lambda s: s.add(m.Subject(session_id=base["exam"], code="9", name="n", process_weight_pm=1200)))
