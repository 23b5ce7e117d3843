"""Server-side login sessions (ASVS 7.x; R-ROLE-4).

The cookie holds a random 256-bit token; the database stores only its SHA-256
(``LoginSession.id``). A session ends server-side on logout, idle timeout, absolute
timeout, a new login of the same account (no account lending: one live session per
account), or when the account is disabled.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, select, update

from marking.fastsql import FastStatement
from marking.models import LoginSession, User, UserRole
from marking.models.base import utcnow

from ..permissions import MFA_ROLES


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclass(frozen=True)
class CurrentUser:
    id: int
    username: str
    display_name: str
    roles: frozenset[str]
    locale: str
    session_id: str
    mfa_required: bool
    mfa_passed: bool
    totp_enrolled: bool

    @property
    def mfa_pending(self) -> bool:
        return self.mfa_required and not self.mfa_passed

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))


def needs_mfa(role_names: set[str] | frozenset[str]) -> bool:
    return bool(MFA_ROLES & set(role_names))


def revoke_user_sessions(session, user_id: int, reason: str, *, now: dt.datetime | None = None,
                         keep: str | None = None) -> int:
    """End every live session of ``user_id`` (inside the caller's write transaction)."""
    query = (update(LoginSession)
             .where(LoginSession.user_id == user_id, LoginSession.revoked_at.is_(None))
             .values(revoked_at=now or utcnow(), revoked_reason=reason))
    if keep:
        query = query.where(LoginSession.id != keep)
    return session.execute(query.execution_options(synchronize_session=False)).rowcount or 0


def start_session(db, user_id: int, *, ip: str | None, user_agent: str | None, absolute_hours: int,
                  mfa_passed: bool) -> str:
    """A fresh token (ASVS 7.2.4); the account's other sessions end (R-ROLE-4)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    with db.write() as session:
        revoke_user_sessions(session, user_id, "new_login", now=now)
        session.add(LoginSession(id=token_hash(token), user_id=user_id, created_at=now, last_seen_at=now,
                                 expires_at=now + dt.timedelta(hours=absolute_hours), mfa_passed=mfa_passed,
                                 ip=(ip or "")[:64] or None, user_agent=(user_agent or "")[:300] or None))
    return token


def end_session(db, token: str, reason: str = "logout") -> None:
    with db.write() as session:
        session.execute(update(LoginSession).where(LoginSession.id == token_hash(token),
                                                   LoginSession.revoked_at.is_(None))
                        .values(revoked_at=utcnow(), revoked_reason=reason))


def mark_mfa_passed(db, session_id: str) -> None:
    with db.write() as session:
        session.execute(update(LoginSession).where(LoginSession.id == session_id)
                        .values(mfa_passed=True, last_seen_at=utcnow()))


# Every request runs it: compiled once per dialect (marking.fastsql).
_LOAD = FastStatement(select(LoginSession.revoked_at, LoginSession.expires_at, LoginSession.last_seen_at,
                        LoginSession.mfa_passed, User.id, User.username, User.display_name, User.active,
                        User.locale, User.totp_secret, UserRole.role)
                 .join(User, User.id == LoginSession.user_id)
                 .outerjoin(UserRole, UserRole.user_id == User.id)
                 .where(LoginSession.id == bindparam("sid")))


TOUCH_EVERY = dt.timedelta(seconds=30)


def load(db, token: str | None, *, idle_minutes: int, mfa_skip: bool = False,
         touch: bool = True, touches=None) -> CurrentUser | None:
    """The user behind a cookie token, or None (expired, revoked, disabled, unknown).

    Every request pays for this, so it is one statement (session, user and roles
    joined) outside a transaction; writes happen only to end a session or, at most
    every 30 s, to record activity. ``touches``: a running :class:`web.auth.touches.SessionTouches`
    (a server's), which notes the activity and writes it in batches; without one it
    is written here.
    """
    if not token or len(token) > 200:
        return None
    sid = token_hash(token)
    now = utcnow()
    rows = db.read_rows(_LOAD, {"sid": sid})
    if not rows:
        return None
    row = rows[0]
    if row.revoked_at is not None:
        return None
    batched = touches is not None and touches.running()
    noted = touches.noted(sid) if batched else None
    last_seen = max(row.last_seen_at, noted) if noted else row.last_seen_at
    reason = None
    if not row.active:
        reason = "disabled"
    elif row.expires_at <= now:
        reason = "absolute_timeout"
    elif last_seen + dt.timedelta(minutes=idle_minutes) <= now:
        reason = "idle_timeout"
    if reason:
        with db.write() as session:
            session.execute(update(LoginSession).where(LoginSession.id == sid, LoginSession.revoked_at.is_(None))
                            .values(revoked_at=now, revoked_reason=reason))
        return None
    role_names = frozenset(r.role for r in rows if r.role is not None)
    current = CurrentUser(row.id, row.username, row.display_name, role_names, row.locale or "zh_CN",
                          sid, needs_mfa(role_names) and not mfa_skip, bool(row.mfa_passed),
                          bool(row.totp_secret))
    if touch and now - last_seen > TOUCH_EVERY:
        if batched:
            touches.note(sid, now)
        else:
            with db.write() as session:
                session.execute(update(LoginSession).where(LoginSession.id == sid).values(last_seen_at=now))
    return current
