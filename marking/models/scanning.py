"""Candidates, scanner batches, page images, cards, OMR reads, scripts and answer keys."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime, enum_column, sha256_column, utcnow

BATCH_STATUSES = ("ingesting", "reading", "review", "closed")
PAGE_STATUSES = ("accepted", "rejected", "duplicate")
CARD_STATUSES = ("reading", "agreed", "exception", "resolved", "void")
READ_STATUSES = ("pending", "leased", "done", "failed")
KEY_STATUSES = ("draft", "signed_off", "locked", "superseded")
SIGNOFF_ROLES = ("reviewer", "authority_officer")
SCRIPT_STATUSES = ("scanned", "marking", "complete", "void")


class Candidate(Base):
    __tablename__ = "candidate"
    __table_args__ = (
        UniqueConstraint("session_id", "candidate_no"),
        # R-OMR-8: 12 digits; the digit-by-digit rules are checked in marking.candidates.
        CheckConstraint("length(candidate_no) = 12", name="candidate_no_length"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("exam_session.id"))
    candidate_no: Mapped[str] = mapped_column(String(12))
    name: Mapped[str] = mapped_column(String(120))
    school_code: Mapped[str | None] = mapped_column(String(20))
    region_code: Mapped[str | None] = mapped_column(String(20))
    programme: Mapped[str | None] = mapped_column(String(60))


class Registration(Base):
    """The roll: which candidate sits which subject (expected scripts)."""

    __tablename__ = "registration"
    __table_args__ = (UniqueConstraint("candidate_id", "subject_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidate.id"))
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)


class ScanBatch(Base):
    """A scanner batch; template and recognition settings frozen for its life (R-OMR-1)."""

    __tablename__ = "scan_batch"
    __table_args__ = (UniqueConstraint("subject_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    code: Mapped[str] = mapped_column(String(40))
    scanner_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(enum_column("batch_status", BATCH_STATUSES), default="ingesting")
    card_template_id: Mapped[int] = mapped_column(ForeignKey("card_template.id"))
    template_hash: Mapped[str] = mapped_column(sha256_column())
    recognition_version: Mapped[str] = mapped_column(String(40))
    settings_hash: Mapped[str] = mapped_column(sha256_column())
    manifest_sha256: Mapped[str | None] = mapped_column(sha256_column())
    created_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class PageImage(Base):
    """One scanned page as received; the bytes live in the image store by SHA-256."""

    __tablename__ = "page_image"
    __table_args__ = (
        Index("ix_page_image_batch_sha", "batch_id", "sha256"),
        CheckConstraint("status <> 'rejected' OR reject_reason IS NOT NULL", name="reject_reason"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("scan_batch.id"))
    sha256: Mapped[str | None] = mapped_column(sha256_column())
    source_name: Mapped[str] = mapped_column(String(400))
    source_page: Mapped[int] = mapped_column(Integer, default=1)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(enum_column("page_status", PAGE_STATUSES))
    reject_reason: Mapped[str | None] = mapped_column(String(200))
    duplicate_of_id: Mapped[int | None] = mapped_column(ForeignKey("page_image.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Script(Base):
    """One candidate's paper in one subject. ``anon_code`` is all a marker could ever see."""

    __tablename__ = "script"
    __table_args__ = (
        UniqueConstraint("subject_id", "candidate_id"),
        CheckConstraint("total_den IS NULL OR total_den > 0", name="total_den"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"), index=True)
    candidate_id: Mapped[int | None] = mapped_column(ForeignKey("candidate.id"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("scan_batch.id"))
    anon_code: Mapped[str] = mapped_column(String(24), unique=True)
    status: Mapped[str] = mapped_column(enum_column("script_status", SCRIPT_STATUSES), default="scanned")
    absent: Mapped[bool] = mapped_column(Boolean, default=False)
    objective_cp: Mapped[int | None] = mapped_column(Integer)
    # Exact subject total before rounding, and the once-rounded total (R-MARK-2).
    total_num: Mapped[int | None] = mapped_column(Integer)
    total_den: Mapped[int | None] = mapped_column(Integer)
    total_rounded: Mapped[str | None] = mapped_column(String(12))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Card(Base):
    """A card page to be read by OMR; one page image, one card."""

    __tablename__ = "card"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("scan_batch.id"), index=True)
    page_image_id: Mapped[int] = mapped_column(ForeignKey("page_image.id"), unique=True)
    page_code: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(enum_column("card_status", CARD_STATUSES), default="reading")
    accepted_reading: Mapped[str | None] = mapped_column(Text)  # JSON; never the candidate's marks altered
    script_id: Mapped[int | None] = mapped_column(ForeignKey("script.id"), index=True)
    # R-OMR-5: a re-scan or transcription points at the original, which is kept.
    rescan_of_id: Mapped[int | None] = mapped_column(ForeignKey("card.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class OmrRead(Base):
    """R-OMR-3: two reads per card, on two different worker nodes, under fenced leases.

    UNIQUE(card, read_no) makes exactly two reads; UNIQUE(card, node) makes them come
    from two machines. ``node`` is a stable configured name, not a process id.
    """

    __tablename__ = "omr_read"
    __table_args__ = (
        UniqueConstraint("card_id", "read_no"),
        UniqueConstraint("card_id", "node"),
        CheckConstraint("read_no IN (1, 2)", name="read_no"),
        CheckConstraint("(read_no = 1 AND method = 'a') OR (read_no = 2 AND method = 'b')",
                        name="method_per_read"),
        CheckConstraint("status <> 'leased' OR (lease_token IS NOT NULL AND node IS NOT NULL)",
                        name="lease_has_token"),
        Index("ix_omr_read_claim", "status", "leased_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("card.id"))
    read_no: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(1))
    node: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(enum_column("read_status", READ_STATUSES), default="pending")
    lease_token: Mapped[str | None] = mapped_column(String(36))
    leased_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[str | None] = mapped_column(Text)
    result_sha256: Mapped[str | None] = mapped_column(sha256_column())
    error: Mapped[str | None] = mapped_column(String(400))
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AnswerKey(Base):
    """R-OMR-2: entered by one person, signed off by two others, locked by hash."""

    __tablename__ = "answer_key"
    __table_args__ = (UniqueConstraint("subject_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    version: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)  # canonical JSON: item code → options, points
    content_hash: Mapped[str] = mapped_column(sha256_column())
    status: Mapped[str] = mapped_column(enum_column("key_status", KEY_STATUSES), default="draft")
    entered_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    locked_hash: Mapped[str | None] = mapped_column(sha256_column())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class AnswerKeySignoff(Base):
    __tablename__ = "answer_key_signoff"
    __table_args__ = (UniqueConstraint("key_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("answer_key.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    as_role: Mapped[str] = mapped_column(enum_column("signoff_role", SIGNOFF_ROLES))
    signed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ObjectiveAnswer(Base):
    """What the candidate filled for one objective item and what it scored under one key."""

    __tablename__ = "objective_answer"
    __table_args__ = (
        UniqueConstraint("script_id", "item_id", "key_id"),
        CheckConstraint("score_cp >= 0", name="score"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    script_id: Mapped[int] = mapped_column(ForeignKey("script.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    key_id: Mapped[int] = mapped_column(ForeignKey("answer_key.id"))
    chosen: Mapped[str] = mapped_column(String(26))
    state: Mapped[str] = mapped_column(String(12))
    score_cp: Mapped[int] = mapped_column(Integer)


class SpotCheck(Base):
    """R-OMR-6: a sampled accepted card verified by eye."""

    __tablename__ = "spot_check"

    id: Mapped[int] = mapped_column(primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("card.id"), unique=True)
    checked_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    outcome: Mapped[str | None] = mapped_column(enum_column("spot_outcome", ("pending", "confirmed", "discrepancy")))
    note: Mapped[str] = mapped_column(String(400), default="")
    checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class OmrNode(Base):
    """A stable OMR worker node (R-OMR-3: "different machine" = different node name).

    Workers upsert their row while they run, so the technicians' view can say which
    node is down and which second reads wait for it.
    """

    __tablename__ = "omr_node"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[str] = mapped_column(enum_column("omr_node_state", ("running", "stopped")), default="running")
    host: Mapped[str | None] = mapped_column(String(120))
    pid: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ItemClip(Base):
    """A subjective answer region cut from a card at reading time (R-SEC-1).

    Derived and regenerable from the original page image; identity regions are blanked
    out before the clip is stored. Becomes a Response's image when the card is accepted.
    """

    __tablename__ = "item_clip"
    __table_args__ = (UniqueConstraint("card_id", "item_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    card_id: Mapped[int] = mapped_column(ForeignKey("card.id"))
    item_code: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(sha256_column())
    ink_density_pm: Mapped[int] = mapped_column(Integer)
    preflags: Mapped[str] = mapped_column(Text, default="[]")
    template_hash: Mapped[str] = mapped_column(sha256_column())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


TRIAL_SOURCES = ("synthetic", "scans")


class OmrTrialRun(Base):
    """R-OMR-1: a trial run of the recognition system on a deck with known markings.

    Every card of the deck is read by both methods and compared with its truth; the run
    passed only when nothing differed and nothing was doubted. A live batch needs a
    passed trial for exactly its subject, template hash, recognition version and
    settings hash (:func:`marking.batches.create_batch`), so a changed template or
    recognition setting needs a new trial. Rows are history: never edited.
    """

    __tablename__ = "omr_trial_run"
    __table_args__ = (
        Index("ix_omr_trial_run_frozen", "subject_id", "template_hash", "recognition_version", "settings_hash"),
        CheckConstraint("cards_read > 0", name="cards_read"),
        CheckConstraint("mismatches >= 0", name="mismatches"),
        CheckConstraint("cards_failed >= 0 AND cards_failed <= cards_read", name="cards_failed"),
        # passed exactly when no card differed from its truth
        CheckConstraint("(passed AND mismatches = 0 AND cards_failed = 0) OR "
                        "(NOT passed AND mismatches > 0 AND cards_failed > 0)", name="passed_iff_clean"),
        CheckConstraint("finished_at >= started_at", name="finished_after_start"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    card_template_id: Mapped[int] = mapped_column(ForeignKey("card_template.id"))
    template_hash: Mapped[str] = mapped_column(sha256_column())
    recognition_version: Mapped[str] = mapped_column(String(40))
    settings_hash: Mapped[str] = mapped_column(sha256_column())
    source: Mapped[str] = mapped_column(enum_column("trial_source", TRIAL_SOURCES))
    cards_read: Mapped[int] = mapped_column(Integer)
    mismatches: Mapped[int] = mapped_column(Integer)
    cards_failed: Mapped[int] = mapped_column(Integer)
    passed: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[str] = mapped_column(Text)              # canonical JSON: every card and its mismatches
    report_sha256: Mapped[str] = mapped_column(sha256_column())
    run_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
