"""Users, roles, item duties, qualifications, exclusions and login sessions."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (Boolean, CheckConstraint, ForeignKey, Integer, String, Text,
                        UniqueConstraint)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .base import Base, UTCDateTime, enum_column, utcnow

ROLES = ("marker", "team_leader", "technician", "key_officer", "authority_officer", "admin")
# R-ROLE-1: 0 = assistant marker (graduate student), 1 = intermediate title,
# 2 = senior title, 3 = expert. Strongly subjective items require level >= 1.
QUALIFICATION_LEVELS = (0, 1, 2, 3)
DUTIES = ("marker", "team_leader", "reviewer")
DUTY_STATUSES = ("pending_qualification", "active", "suspended")
QUALIFICATION_STATUSES = ("pending", "passed", "failed", "revoked")
EXCLUSION_KINDS = ("school", "region", "candidate")


class User(Base):
    __tablename__ = "app_user"
    __table_args__ = (
        CheckConstraint("qualification_level BETWEEN 0 AND 3", name="qualification_level"),
        CheckConstraint("failed_logins >= 0", name="failed_logins"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id
    qualification_level: Mapped[int] = mapped_column(Integer, default=0)
    school_code: Mapped[str | None] = mapped_column(String(20))
    region_code: Mapped[str | None] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str] = mapped_column(String(10), default="zh_CN")
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    roles: Mapped[list["UserRole"]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    @property
    def role_names(self) -> set[str]:
        return {r.role for r in self.roles}


class UserRole(Base):
    __tablename__ = "user_role"

    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), primary_key=True)
    role: Mapped[str] = mapped_column(enum_column("role", ROLES), primary_key=True)


class ItemDuty(Base):
    """Who works on which item, as what. Dispatch only serves active duties."""

    __tablename__ = "item_duty"
    __table_args__ = (UniqueConstraint("item_id", "user_id", "duty"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    duty: Mapped[str] = mapped_column(enum_column("duty", DUTIES))
    status: Mapped[str] = mapped_column(enum_column("duty_status", DUTY_STATUSES), default="active")
    status_reason: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Qualification(Base):
    """上岗考核 outcome per marker and item; attempts are kept, never overwritten."""

    __tablename__ = "qualification"
    __table_args__ = (UniqueConstraint("user_id", "item_id", "attempt"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(enum_column("qualification_status", QUALIFICATION_STATUSES),
                                        default="pending")
    detail: Mapped[str] = mapped_column(Text, default="{}")
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Exclusion(Base):
    """Conflict of interest (R-ROLE-4): the user must not mark scripts matching this."""

    __tablename__ = "exclusion"
    __table_args__ = (UniqueConstraint("user_id", "kind", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"))
    kind: Mapped[str] = mapped_column(enum_column("exclusion_kind", EXCLUSION_KINDS))
    value: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoginSession(Base):
    """Server-side session: logout, expiry and disabling really end it (ASVS 7.4)."""

    __tablename__ = "login_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie token
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    mfa_passed: Mapped[bool] = mapped_column(Boolean, default=False)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
