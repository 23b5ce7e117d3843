"""Users, roles, qualification levels and conflict exclusions (R-ROLE-1, R-ROLE-4).

Passwords are hashed with argon2id (RFC 9106 low-memory profile, argon2-cffi's
defaults); a password is known only to its owner (R-ROLE-4), so a CSV import
without passwords generates one-time passwords and hands them back to the caller
once, never storing them in clear.
"""
from __future__ import annotations

import csv
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import ledger
from .models import Exclusion, User, UserRole
from .models.people import EXCLUSION_KINDS, ROLES

_hasher = PasswordHasher()
MIN_PASSWORD_LENGTH = 8  # ASVS 5.0 6.2.1; no composition rules (6.2.5), no truncation (6.2.9)
MAX_PASSWORD_LENGTH = 128


class UserError(ValueError):
    pass


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _hasher.hash(password)


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"a password may have at most {MAX_PASSWORD_LENGTH} characters")


def verify_password(user: User, password: str) -> bool:
    try:
        return _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(user: User) -> bool:
    return _hasher.check_needs_rehash(user.password_hash)


@dataclass
class NewUser:
    username: str
    display_name: str
    roles: list[str]
    qualification_level: int = 0
    school_code: str | None = None
    region_code: str | None = None
    password: str | None = None
    exclusions: list[tuple[str, str]] = field(default_factory=list)

    def validate(self) -> None:
        if not self.username or len(self.username) > 64 or not self.username.replace("_", "").replace(".", "").replace("-", "").isalnum():
            raise UserError(f"username {self.username!r}: use 1–64 letters, digits, '.', '_' or '-'")
        if not self.roles:
            raise UserError("at least one role is required")
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown:
            raise UserError(f"unknown role(s) {', '.join(unknown)}; known: {', '.join(ROLES)}")
        if self.qualification_level not in (0, 1, 2, 3):
            raise UserError("qualification level must be 0 (assistant), 1 (intermediate), 2 (senior) or 3 (expert)")
        for kind, value in self.exclusions:
            if kind not in EXCLUSION_KINDS:
                raise UserError(f"exclusion kind {kind!r}: use one of {', '.join(EXCLUSION_KINDS)}")
            if not value:
                raise UserError(f"exclusion {kind}: a value is required")
        if self.password is not None:
            check_password_policy(self.password)


def _insert(session: Session, new: NewUser, password: str, actor_id: int | None) -> User:
    user = User(username=new.username, display_name=new.display_name, password_hash=hash_password(password),
                qualification_level=new.qualification_level, school_code=new.school_code,
                region_code=new.region_code)
    user.roles = [UserRole(role=r) for r in sorted(set(new.roles))]
    session.add(user)
    session.flush()
    for kind, value in new.exclusions:
        session.add(Exclusion(user_id=user.id, kind=kind, value=value, reason="imported"))
    ledger.append(session, actor_id=actor_id, action="user.created", entity="user", entity_id=user.id,
                  data={"username": user.username, "roles": sorted(set(new.roles)),
                        "qualification_level": new.qualification_level,
                        "exclusions": [f"{k}:{v}" for k, v in new.exclusions]})
    return user


def add_user(db, new: NewUser, *, actor_id: int | None = None) -> tuple[User, str | None]:
    """Create one user. Returns the user and the generated password (if none was given)."""
    new.validate()
    generated = None if new.password else secrets.token_urlsafe(12)
    with db.write() as session:
        if session.scalar(select(User.id).where(User.username == new.username)) is not None:
            raise UserError(f"user {new.username!r} already exists")
        user = _insert(session, new, new.password or generated, actor_id)
    return user, generated


CSV_COLUMNS = ("username", "display_name", "roles", "qualification_level", "school_code", "region_code",
               "exclusions", "password")


def parse_users_csv(path: Path) -> tuple[list[NewUser], list[str]]:
    """Read and validate every row; return users and errors by line (nothing is imported here)."""
    users: list[NewUser] = []
    errors: list[str] = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {"username", "display_name", "roles"} - set(reader.fieldnames or [])
        if missing:
            return [], [f"{path}: missing column(s) {', '.join(sorted(missing))}; columns are {', '.join(CSV_COLUMNS)}"]
        seen: set[str] = set()
        for row in reader:
            line = reader.line_num
            try:
                level_text = (row.get("qualification_level") or "0").strip()
                if not level_text.isdigit():
                    raise UserError(f"qualification_level {level_text!r} is not 0–3")
                exclusions = []
                for part in filter(None, (p.strip() for p in (row.get("exclusions") or "").split(";"))):
                    kind, _, value = part.partition(":")
                    exclusions.append((kind.strip(), value.strip()))
                new = NewUser(
                    username=(row["username"] or "").strip(),
                    display_name=(row["display_name"] or "").strip(),
                    roles=[r.strip() for r in (row["roles"] or "").split(";") if r.strip()],
                    qualification_level=int(level_text),
                    school_code=(row.get("school_code") or "").strip() or None,
                    region_code=(row.get("region_code") or "").strip() or None,
                    password=(row.get("password") or "") or None,
                    exclusions=exclusions,
                )
                new.validate()
                if new.username in seen:
                    raise UserError(f"username {new.username!r} appears twice in the file")
                seen.add(new.username)
                users.append(new)
            except UserError as exc:
                errors.append(f"{path}:{line}: {exc}")
    return users, errors


def import_users(db, users: list[NewUser], *, actor_id: int | None = None) -> list[tuple[str, str | None]]:
    """All or nothing: one transaction; an existing username aborts the whole import."""
    results: list[tuple[str, str | None]] = []
    with db.write() as session:
        existing = set(session.scalars(select(User.username).where(User.username.in_([u.username for u in users]))))
        if existing:
            raise UserError(f"already exist: {', '.join(sorted(existing))}; nothing imported")
        for new in users:
            generated = None if new.password else secrets.token_urlsafe(12)
            _insert(session, new, new.password or generated, actor_id)
            results.append((new.username, generated))
    return results


def get_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))
