"""Authorisation in the service layer: roles and item duties (R-ROLE-1, R-ROLE-2, R-SEC-2).

Every public service checks here, so the web layer, the CLI and tests are held to
the same rules. Refusals raise :class:`NotAllowed`, a PermissionError.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ItemDuty, User

# Who may change a recorded score (R-MARK-7, R-QC-2): designated roles only.
CHANGE_ROLES = ("team_leader", "authority_officer", "admin")
# Who approves a change that crosses the pass mark (R-QC-3).
APPROVER_ROLES = ("authority_officer",)


class NotAllowed(PermissionError):
    """The acting user may not do this; the message says why."""


class LeaseError(NotAllowed):
    """The fencing token is unknown, stale, someone else's, or already used."""


def active_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise NotAllowed(f"user {user_id} does not exist or is disabled")
    return user


def require_role(user: User, *roles: str) -> None:
    if not user.role_names.intersection(roles):
        raise NotAllowed(f"{user.username} needs one of the roles {', '.join(roles)}")


def has_duty(session: Session, user_id: int, item_id: int, *duties: str) -> bool:
    return session.execute(
        select(ItemDuty.id).where(ItemDuty.user_id == user_id, ItemDuty.item_id == item_id,
                                  ItemDuty.duty.in_(duties), ItemDuty.status == "active").limit(1)
    ).first() is not None


def require_duty(session: Session, user: User, item_id: int, *duties: str) -> None:
    if not has_duty(session, user.id, item_id, *duties):
        raise NotAllowed(f"{user.username} has no active {'/'.join(duties)} duty on item {item_id}")


def require_leader_or_role(session: Session, user: User, item_id: int | None, *roles: str) -> None:
    """The item's team leader (active duty), or a user holding one of ``roles``."""
    if user.role_names.intersection(roles):
        return
    if item_id is not None and "team_leader" in user.role_names and \
            has_duty(session, user.id, item_id, "team_leader"):
        return
    raise NotAllowed(f"{user.username} is not the item's team leader nor one of {', '.join(roles) or '-'}")
