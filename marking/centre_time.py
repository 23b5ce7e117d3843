"""The marking centre's clock: UTC instants, local (UTC+8, no DST) days.

Daily caps (R-ROLE-1 fatigue, ★) and the daily review sample (R-MARK-5) are per
local day. Services take ``now`` so tests never sleep.
"""
from __future__ import annotations

import datetime as dt

CENTRE_TZ = dt.timezone(dt.timedelta(hours=8), "UTC+08")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def now_or(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise ValueError("naive datetime given where UTC is required")
    return now


def centre_day(moment: dt.datetime) -> dt.date:
    return moment.astimezone(CENTRE_TZ).date()


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """UTC [start, end) of a local day."""
    start = dt.datetime.combine(day, dt.time(0), tzinfo=CENTRE_TZ).astimezone(dt.timezone.utc)
    return start, start + dt.timedelta(days=1)
