"""Marker calibration (issue 7): standardisation sets, seed/self-check results,
per-item calibration settings and suspensions.

The service code lives in the ``calibration`` package; only the tables are here.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, UTCDateTime, enum_column, utcnow

STANDARDISATION_PURPOSES = ("practice", "qualification", "seed")
CALIBRATION_RESULT_KINDS = ("seed", "self_check", "qualification", "practice")
SUSPENSION_CAUSES = ("validity", "drift", "manual")


class StandardisationResponse(Base):
    """A response the team leader classed as practice, qualification or seed (RM-style).

    ``definitive_cp`` is the team leader's exact definitive score (a valid mark of
    the item); ``tolerance_cp`` is the seed tolerance (NULL: the item's threshold).
    """

    __tablename__ = "standardisation_response"
    __table_args__ = (
        CheckConstraint("definitive_cp >= 0", name="definitive"),
        CheckConstraint("tolerance_cp IS NULL OR tolerance_cp >= 0", name="tolerance"),
        Index("ix_standardisation_response_item_purpose", "item_id", "purpose"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    response_id: Mapped[int] = mapped_column(ForeignKey("response.id"), unique=True)
    purpose: Mapped[str] = mapped_column(enum_column("standardisation_purpose", STANDARDISATION_PURPOSES))
    definitive_cp: Mapped[int] = mapped_column(Integer)
    tolerance_cp: Mapped[int | None] = mapped_column(Integer)
    rationale: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CalibrationResult(Base):
    """How one calibration mark compared with its reference (definitive or first score)."""

    __tablename__ = "calibration_result"
    __table_args__ = (
        Index("ix_calibration_result_marker", "user_id", "item_id", "kind", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    mark_id: Mapped[int] = mapped_column(ForeignKey("mark.id"), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    kind: Mapped[str] = mapped_column(enum_column("calibration_result_kind", CALIBRATION_RESULT_KINDS))
    score_cp: Mapped[int] = mapped_column(Integer)
    reference_cp: Mapped[int] = mapped_column(Integer)
    tolerance_cp: Mapped[int] = mapped_column(Integer)
    within: Mapped[bool] = mapped_column(Boolean)
    qualification_id: Mapped[int | None] = mapped_column(ForeignKey("qualification.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CalibrationSetting(Base):
    """Per-item overrides of calibration defaults (canonical JSON)."""

    __tablename__ = "calibration_setting"

    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), primary_key=True)
    params: Mapped[str] = mapped_column(Text, default="{}")
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MarkerSuspension(Base):
    """A marker held from an item (automatic on validity/drift, or manual), and its blast radius."""

    __tablename__ = "marker_suspension"
    __table_args__ = (
        Index("ix_marker_suspension_user_item", "user_id", "item_id"),
        CheckConstraint("requeued >= 0", name="requeued"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    cause: Mapped[str] = mapped_column(enum_column("suspension_cause", SUSPENSION_CAUSES))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    suspended_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    suspended_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    since_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    requeued: Mapped[int] = mapped_column(Integer, default=0)
    resumed_by: Mapped[int | None] = mapped_column(ForeignKey("app_user.id"))
    resumed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
