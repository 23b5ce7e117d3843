"""Exam structure: sessions, subjects, card templates, items, policies, schemes."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (Boolean, CheckConstraint, ForeignKey, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, UTCDateTime, enum_column, sha256_column, utcnow

SESSION_KINDS = ("self_taught", "open_university")
SESSION_STATUSES = ("setup", "live", "closed")
ITEM_KINDS = ("objective", "subjective")
MULTI_RULES = ("all_or_nothing", "partial_subset")
TOTAL_ROUNDING = ("half_up", "half_even", "floor", "ceiling")
SCHEME_STATUSES = ("draft", "pending_approval", "frozen", "superseded")


class ExamSession(Base):
    __tablename__ = "exam_session"
    __table_args__ = (
        # R-OMR-8: sitting digit 1 = April, 2 = October, 3 = January, 4 = July.
        CheckConstraint("sitting IN (1, 2, 3, 4)", name="sitting"),
        CheckConstraint("year BETWEEN 2000 AND 2099", name="year"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(enum_column("session_kind", SESSION_KINDS))
    year: Mapped[int] = mapped_column(Integer)
    sitting: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(enum_column("session_status", SESSION_STATUSES), default="setup")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    subjects: Mapped[list["Subject"]] = relationship(back_populates="session", order_by="Subject.code")


class CardTemplate(Base):
    """An answer-card template; its body is frozen by content hash (R-OMR-1)."""

    __tablename__ = "card_template"
    __table_args__ = (UniqueConstraint("code", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(60))
    version: Mapped[str] = mapped_column(String(20))  # as the template declares it, e.g. "1.0"
    content_hash: Mapped[str] = mapped_column(sha256_column(), unique=True)
    body: Mapped[str] = mapped_column(Text)  # canonical JSON
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ResolutionPolicy(Base):
    """A versioned rule for turning marks into a final score (R-MARK-3).

    ``params`` is canonical JSON (see marking.policy); a changed rule is a new
    version, never an edit, so every final score can name the rule that made it.
    """

    __tablename__ = "resolution_policy"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(60))
    version: Mapped[int] = mapped_column(Integer)
    params: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(sha256_column())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Subject(Base):
    __tablename__ = "subject"
    __table_args__ = (
        UniqueConstraint("session_id", "code"),
        CheckConstraint("pass_mark_cp >= 0", name="pass_mark"),
        CheckConstraint("total_places BETWEEN 0 AND 2", name="total_places"),
        # R-PROC-1: process weight in per-mille; the service caps self-taught at 300.
        CheckConstraint("process_weight_pm IS NULL OR process_weight_pm BETWEEN 0 AND 1000",
                        name="process_weight"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("exam_session.id"))
    code: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    card_template_id: Mapped[int | None] = mapped_column(ForeignKey("card_template.id"))
    pass_mark_cp: Mapped[int] = mapped_column(Integer, default=6000)
    total_rounding: Mapped[str] = mapped_column(enum_column("total_rounding", TOTAL_ROUNDING),
                                                default="half_up")
    total_places: Mapped[int] = mapped_column(Integer, default=0)
    process_weight_pm: Mapped[int | None] = mapped_column(Integer)
    double_pass: Mapped[bool] = mapped_column(Boolean, default=False)
    # Band around the pass mark whose scripts get an extra read (issue 4, ★).
    pass_band_cp: Mapped[int] = mapped_column(Integer, default=0)

    session: Mapped[ExamSession] = relationship(back_populates="subjects")
    card_template: Mapped[CardTemplate | None] = relationship()
    items: Mapped[list["Item"]] = relationship(back_populates="subject", order_by="Item.ordinal")


class Item(Base):
    """One question. Objective items are scored from the card; subjective ones are marked."""

    __tablename__ = "item"
    __table_args__ = (
        UniqueConstraint("subject_id", "code"),
        CheckConstraint("max_cp > 0", name="max_positive"),
        CheckConstraint(
            "(kind = 'objective' AND options IS NOT NULL AND length(options) >= 2) OR "
            "(kind = 'subjective' AND step_cp IS NOT NULL AND step_cp > 0 "
            " AND threshold_cp IS NOT NULL AND threshold_cp >= 0)",
            name="kind_fields",
        ),
        CheckConstraint("partial_cp IS NULL OR (partial_cp >= 0 AND partial_cp <= max_cp)",
                        name="partial_range"),
        CheckConstraint("daily_cap IS NULL OR daily_cap > 0", name="daily_cap"),
        CheckConstraint("required_qualification BETWEEN 0 AND 3", name="qualification"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[int] = mapped_column(ForeignKey("subject.id"))
    code: Mapped[str] = mapped_column(String(20))
    ordinal: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(enum_column("item_kind", ITEM_KINDS))
    title: Mapped[str] = mapped_column(String(200), default="")
    max_cp: Mapped[int] = mapped_column(Integer)
    # objective
    options: Mapped[str | None] = mapped_column(String(26))
    multi_select: Mapped[bool] = mapped_column(Boolean, default=False)
    multi_rule: Mapped[str | None] = mapped_column(enum_column("multi_rule", MULTI_RULES))
    partial_cp: Mapped[int | None] = mapped_column(Integer)
    # subjective
    step_cp: Mapped[int | None] = mapped_column(Integer)
    threshold_cp: Mapped[int | None] = mapped_column(Integer)
    double_marked: Mapped[bool] = mapped_column(Boolean, default=True)
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("resolution_policy.id"))
    required_qualification: Mapped[int] = mapped_column(Integer, default=0)
    daily_cap: Mapped[int | None] = mapped_column(Integer)

    subject: Mapped[Subject] = relationship(back_populates="items")
    policy: Mapped[ResolutionPolicy | None] = relationship()


class MarkingScheme(Base):
    """评分细则: versioned; frozen when live marking starts (R-MARK-9)."""

    __tablename__ = "marking_scheme"
    __table_args__ = (
        UniqueConstraint("item_id", "version"),
        CheckConstraint("approved_by IS NULL OR approved_by <> created_by", name="two_people"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    descriptors: Mapped[str] = mapped_column(Text, default="[]")  # JSON: per-score descriptors
    status: Mapped[str] = mapped_column(enum_column("scheme_status", SCHEME_STATUSES), default="draft")
    created_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
