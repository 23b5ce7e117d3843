"""Subjective marking: responses, leased tasks, marks, resolutions, review, changes."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (Boolean, CheckConstraint, Date, ForeignKey, Index, Integer, String,
                        Text, UniqueConstraint, text)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime, enum_column, sha256_column, utcnow

RESPONSE_STATUSES = ("pending", "marking", "third", "arbitration", "resolved", "problem", "void")
# Task slots. The live ones form the response's marking chain and occur at most once
# each per response; the calibration ones are created per marker on demand.
LIVE_SLOTS = ("first", "second", "third", "arbitration", "review", "extra")
CALIBRATION_SLOTS = ("seed", "self_check", "qualification", "practice", "trial")
SLOTS = LIVE_SLOTS + CALIBRATION_SLOTS
TASK_STATUSES = ("open", "leased", "done", "cancelled")
# Condition codes (R-MARK-1 records points awarded; a code explains a 0).
CONDITION_CODES = ("NR", "OT", "IL", "RF")  # no response, off topic, illegible, refused/crossed out
RESOLUTION_OUTCOMES = (
    "single", "agreed", "third_resolved", "arbitrated", "review_changed", "changed", "requeued",
)
CHANGE_STATUSES = ("pending_authority", "applied", "rejected")
REGISTERS = ("problem", "abnormal", "omr_exception", "id_correction", "damaged_card", "rescan",
             "review_dispute")
REGISTER_STATUSES = ("open", "proposed", "confirmed", "decided", "closed")

_live_slot_list = ", ".join(f"'{s}'" for s in LIVE_SLOTS)


class Response(Base):
    """One candidate's answer to one subjective item: an anonymous item image."""

    __tablename__ = "response"
    __table_args__ = (
        UniqueConstraint("script_id", "item_id"),
        CheckConstraint("final_den IS NULL OR final_den > 0", name="final_den"),
        CheckConstraint("final_num IS NULL OR final_num >= 0", name="final_num"),
        CheckConstraint("(status = 'resolved') = (final_num IS NOT NULL)", name="final_iff_resolved"),
        Index("ix_response_item_status", "item_id", "status"),
        Index("ix_response_resolved_at", "resolved_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("script.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    image_sha256: Mapped[str | None] = mapped_column(sha256_column())
    ink_density_pm: Mapped[int | None] = mapped_column(Integer)  # per-mille dark pixels
    preflags: Mapped[str] = mapped_column(Text, default="[]")
    status: Mapped[str] = mapped_column(enum_column("response_status", RESPONSE_STATUSES), default="pending")
    final_num: Mapped[int | None] = mapped_column(Integer)
    final_den: Mapped[int | None] = mapped_column(Integer)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MarkTask(Base):
    """A unit of marking work under a lease with a fencing token.

    A result is accepted only while ``lease_token`` is the one handed out; an expired
    lease returns the task to the pool and the old token stops working.
    """

    __tablename__ = "mark_task"
    __table_args__ = (
        Index("uq_mark_task_live_slot", "response_id", "slot", unique=True,
              sqlite_where=text(f"slot IN ({_live_slot_list}) AND status <> 'cancelled'"),
              postgresql_where=text(f"slot IN ({_live_slot_list}) AND status <> 'cancelled'")),
        Index("ix_mark_task_dispatch", "item_id", "status", "slot", "id"),
        # Submit, renew and release find their task by the fencing token. Partial: only
        # leased tasks hold one, and statistics over the NULLs misled SQLite (0007).
        Index("uq_mark_task_lease_token", "lease_token", unique=True,
              sqlite_where=text("lease_token IS NOT NULL"), postgresql_where=text("lease_token IS NOT NULL")),
        Index("ix_mark_task_response", "response_id"),
        # A claim returns the caller's held lease, reopens the item's expired leases and
        # counts the caller's seeds and self-checks: each an index range, whatever the
        # item's size (the dispatch index above would scan the item's whole range).
        Index("ix_mark_task_holder", "marker_id", "status", "item_id"),
        Index("ix_mark_task_lease_expiry", "item_id", "status", "leased_until"),
        Index("ix_mark_task_reserved", "reserved_for", "item_id", "slot"),
        CheckConstraint("status <> 'leased' OR (lease_token IS NOT NULL AND marker_id IS NOT NULL)",
                        name="lease_has_token"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("response.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    slot: Mapped[str] = mapped_column(enum_column("slot", SLOTS))
    status: Mapped[str] = mapped_column(enum_column("task_status", TASK_STATUSES), default="open")
    # For tasks reserved to one person (arbitration by the item's team leader, seeds).
    reserved_for: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    marker_id: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    lease_token: Mapped[str | None] = mapped_column(String(36))
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Mark(Base):
    """One marker's score on one response (R-MARK-1: points awarded, never deductions)."""

    __tablename__ = "mark"
    __table_args__ = (
        # Never the same marker twice on a response (self-checks re-serve on purpose).
        Index("uq_mark_response_marker", "response_id", "marker_id", unique=True,
              sqlite_where=text("kind <> 'self_check'"),
              postgresql_where=text("kind <> 'self_check'")),
        # A retried submit with the same client request id never makes a second mark.
        UniqueConstraint("marker_id", "request_id"),
        CheckConstraint("score_cp >= 0", name="score_non_negative"),
        CheckConstraint("condition_code IS NULL OR score_cp = 0", name="code_means_zero"),
        CheckConstraint("dwell_ms IS NULL OR dwell_ms >= 0", name="dwell"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("response.id"), index=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("mark_task.id"), unique=True)
    marker_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    kind: Mapped[str] = mapped_column(enum_column("mark_kind", SLOTS))
    score_cp: Mapped[int] = mapped_column(Integer)
    condition_code: Mapped[str | None] = mapped_column(enum_column("condition_code", CONDITION_CODES))
    flags: Mapped[str] = mapped_column(Text, default="[]")
    request_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    submitted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    dwell_ms: Mapped[int | None] = mapped_column(Integer)


class Resolution(Base):
    """How a response's final score was decided: policy version, inputs, result."""

    __tablename__ = "resolution"
    __table_args__ = (

        UniqueConstraint("response_id", "version"),
        CheckConstraint("final_den > 0", name="final_den"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("response.id"))
    version: Mapped[int] = mapped_column(Integer)
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("resolution_policy.id"))
    outcome: Mapped[str] = mapped_column(enum_column("resolution_outcome", RESOLUTION_OUTCOMES))
    inputs: Mapped[str] = mapped_column(Text)  # canonical JSON of the marks used
    final_num: Mapped[int] = mapped_column(Integer)
    final_den: Mapped[int] = mapped_column(Integer)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReviewSample(Base):
    """R-MARK-5: the day's ≥10 % re-check sample, stored so it is reproducible."""

    __tablename__ = "review_sample"

    id: Mapped[int] = mapped_column(primary_key=True)
    day: Mapped[dt.date] = mapped_column(Date, index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    response_id: Mapped[int] = mapped_column(ForeignKey("response.id"), unique=True)
    reason: Mapped[str] = mapped_column(String(40))
    seed: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ScoreChange(Base):
    """R-QC-2/3/5, R-MARK-7: every change of a recorded score, with its approval."""

    __tablename__ = "score_change"
    __table_args__ = (
        CheckConstraint("approved_by IS NULL OR approved_by <> requested_by", name="two_people"),
        CheckConstraint("before_den > 0 AND after_den > 0", name="dens"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("script.id"), index=True)
    response_id: Mapped[int | None] = mapped_column(ForeignKey("response.id"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("item.id"))
    before_num: Mapped[int] = mapped_column(Integer)
    before_den: Mapped[int] = mapped_column(Integer)
    after_num: Mapped[int] = mapped_column(Integer)
    after_den: Mapped[int] = mapped_column(Integer)
    reason_code: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(String(400), default="")
    crosses_pass_mark: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(enum_column("change_status", CHANGE_STATUSES))
    requested_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class RegisterEntry(Base):
    """Flags and registers: problem and abnormal scripts, OMR exceptions, ID corrections.

    Two-person rules are constraints: whoever proposes cannot also confirm.
    Before/after values are kept; originals are never altered (R-OMR-7).
    """

    __tablename__ = "register_entry"
    __table_args__ = (
        CheckConstraint("confirmed_by IS NULL OR proposed_by IS NULL OR confirmed_by <> proposed_by",
                        name="two_people"),
        Index("ix_register_entry_open", "register", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    register: Mapped[str] = mapped_column(enum_column("register", REGISTERS))
    status: Mapped[str] = mapped_column(enum_column("register_status", REGISTER_STATUSES), default="open")
    reason_code: Mapped[str] = mapped_column(String(40))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("card.id"))
    script_id: Mapped[int | None] = mapped_column(ForeignKey("script.id"))
    response_id: Mapped[int | None] = mapped_column(ForeignKey("response.id"))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    before: Mapped[str | None] = mapped_column(Text)
    after: Mapped[str | None] = mapped_column(Text)
    raised_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    proposed_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    confirmed_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class ProcessScore(Base):
    """R-PROC-3: one formative (process) score per candidate and course."""

    __tablename__ = "process_score"
    __table_args__ = (
        UniqueConstraint("candidate_id", "subject_id"),
        CheckConstraint("score_cp BETWEEN 0 AND 10000", name="score_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    score_cp: Mapped[int] = mapped_column(Integer)
    confirmed: Mapped[bool] = mapped_column(Boolean, default=False)
    imported_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReviewRequest(Base):
    """复核 (R-PROC-4): checks missed marking and totalling only."""

    __tablename__ = "review_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("script.id"))
    status: Mapped[str] = mapped_column(enum_column("review_request_status", ("open", "closed")), default="open")
    outcome: Mapped[str | None] = mapped_column(Text)
    recorded_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    handled_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class MarkAssignment(Base):
    """Who was ever dealt which response (issue 4, R-MARK-3, R-ROLE-4).

    Inserted in the same transaction as every claim of a live task. UNIQUE(response,
    marker) is what guarantees that a marker is never handed the same response twice,
    even after their lease expired and the task went back to the pool, and that third
    readers, arbitrators, extra readers and reviewers are distinct from earlier readers.
    Append-only for live reads; a trigger keeps each marker's counts in
    :class:`MarkerItemTally` (the daily cap, the seed and self-check schedules).
    """

    __tablename__ = "mark_assignment"
    __table_args__ = (
        UniqueConstraint("response_id", "marker_id"),
        Index("ix_mark_assignment_cap", "marker_id", "item_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    response_id: Mapped[int] = mapped_column(ForeignKey("response.id"))
    marker_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    task_id: Mapped[int] = mapped_column(ForeignKey("mark_task.id"))
    slot: Mapped[str] = mapped_column(enum_column("assignment_slot", SLOTS))
    day: Mapped[dt.date] = mapped_column(Date)  # marking-centre local day (UTC+8)
    claimed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MarkerItemTally(Base):
    """A marker's running counts of ``mark_assignment`` rows on one item (issue 8).

    Every claim checks the daily cap and the seed and self-check schedules. Counting the
    marker's assignments for that grew with their history: a marker with 4,000 marks on
    an item made each claim's facts statement 5 ms slower on PostgreSQL. A trigger on
    ``mark_assignment`` keeps these counts in the inserting transaction
    (:mod:`marking.tally_triggers`), so a claim reads one row whatever the history.

    * ``live_total``: first, second and third reads ever dealt;
    * ``live_on_day``: those dealt on ``day``, the latest day one was dealt;
    * ``live_since_seed``: those dealt after the marker's latest seed.
    """

    __tablename__ = "marker_item_tally"
    __table_args__ = (
        CheckConstraint("live_total >= 0 AND live_on_day >= 0 AND live_since_seed >= 0", name="counts_non_negative"),
    )

    marker_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), primary_key=True)
    live_total: Mapped[int] = mapped_column(Integer, default=0)
    day: Mapped[dt.date | None] = mapped_column(Date)
    live_on_day: Mapped[int] = mapped_column(Integer, default=0)
    live_since_seed: Mapped[int] = mapped_column(Integer, default=0)


class ProcessPart(Base):
    """R-PROC-1 (open university): one form of formative work, X = Σ xᵢ·kᵢ."""

    __tablename__ = "process_part"
    __table_args__ = (
        UniqueConstraint("candidate_id", "subject_id", "part"),
        CheckConstraint("score_cp BETWEEN 0 AND 10000", name="score_range"),
        CheckConstraint("weight_pm BETWEEN 0 AND 1000", name="weight_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    part: Mapped[str] = mapped_column(String(40))
    score_cp: Mapped[int] = mapped_column(Integer)
    weight_pm: Mapped[int] = mapped_column(Integer)
    imported_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ProcessScoreChange(Base):
    """R-PROC-3: a confirmed process score changes only with a second person's approval."""

    __tablename__ = "process_score_change"
    __table_args__ = (
        CheckConstraint("approved_by IS NULL OR approved_by <> requested_by", name="two_people"),
        CheckConstraint("after_cp BETWEEN 0 AND 10000", name="after_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    process_score_id: Mapped[int] = mapped_column(ForeignKey("process_score.id"), index=True)
    before_cp: Mapped[int] = mapped_column(Integer)
    after_cp: Mapped[int] = mapped_column(Integer)
    reason_code: Mapped[str] = mapped_column(String(32))
    note: Mapped[str] = mapped_column(String(400), default="")
    status: Mapped[str] = mapped_column(enum_column("process_change_status", ("pending", "applied", "rejected")),
                                        default="pending")
    requested_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    requested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
