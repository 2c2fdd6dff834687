"""Who may do what. Views call these and abort(403) on False; never a silent redirect."""

from __future__ import annotations

from flask import abort
from sqlalchemy import select

from webapp.extensions import db
from webapp.models import Membership, Team, User

EDITOR_ROLES = ("maintainer", "member")


def role_in(user: User, team: Team) -> str | None:
    if not user.is_authenticated:
        return None
    return db.session.scalar(
        select(Membership.role).where(Membership.team_id == team.id, Membership.user_id == user.id)
    )


def can_read(user: User) -> bool:
    """Any signed-in user may read everything: readiness is meant to be visible."""
    return user.is_authenticated


def can_edit_services(user: User, team: Team) -> bool:
    return user.is_authenticated and (user.is_admin or role_in(user, team) in EDITOR_ROLES)


def can_edit_services_as(user: User, role: str | None) -> bool:
    """`can_edit_services`, given the user's role in the team already read (the service
    page reads it with the service)."""
    return user.is_authenticated and (user.is_admin or role in EDITOR_ROLES)


def can_manage_team(user: User, team: Team) -> bool:
    return user.is_authenticated and (user.is_admin or role_in(user, team) == "maintainer")


def can_review(user: User) -> bool:
    return user.is_authenticated and (user.is_admin or user.is_reviewer or bool(user.reviewer_roles))


def require(allowed: bool) -> None:
    if not allowed:
        abort(403, description="You do not have permission to do that.")
