"""Declarative base, naming convention and portable column types."""
from __future__ import annotations

import datetime as dt
from typing import Sequence

from sqlalchemy import CheckConstraint, DateTime, Enum, MetaData, String
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

# Stable constraint names so Alembic batch migrations on SQLite can find them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both databases.

    SQLite has no timezone type; values are stored as naive UTC and handed back
    aware, so code never compares naive and aware datetimes.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc)


def enum_column(name: str, values: Sequence[str]) -> Enum:
    """A string column with a CHECK constraint listing the allowed values."""
    return Enum(*values, name=name, native_enum=False, create_constraint=True, length=24,
                validate_strings=True)


def sha256_column() -> String:
    return String(64)


def in_check(column: str, values: Sequence[str | int], name: str) -> CheckConstraint:
    rendered = ", ".join(f"'{v}'" if isinstance(v, str) else str(v) for v in values)
    return CheckConstraint(f"{column} IN ({rendered})", name=name)
