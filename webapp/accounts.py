"""Accounts: sign-up (first user becomes admin), invitations, passwords. Flush, never commit."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import func, select

from webapp import audit
from webapp.extensions import db
from webapp.models import Invitation, User, utcnow

INVITATION_LIFETIME = timedelta(days=7)
MIN_PASSWORD_LENGTH = 10


class AccountError(ValueError):
    """A rule about accounts was broken; the message is fit to show the user."""


def normalise_email(email: str) -> str:
    return email.strip().lower()


def user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == normalise_email(email)))


def has_users() -> bool:
    return bool(db.session.scalar(select(func.count(User.id))))


def create_user(email: str, name: str, password: str, *, is_admin: bool = False,
                is_reviewer: bool = False, actor: User | None = None) -> User:
    """Create an account. The very first account is always an admin."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.")
    if user_by_email(email):
        raise AccountError("An account with that email already exists.")
    first = not has_users()
    user = User(email=normalise_email(email), name=name.strip(),
                is_admin=is_admin or first, is_reviewer=is_reviewer or first)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    audit.record(actor or user, "user.create", user,
                 after={"email": user.email, "is_admin": user.is_admin,
                        "is_reviewer": user.is_reviewer})
    return user


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_invitation(email: str, created_by: User, *, is_reviewer: bool = False) -> tuple[Invitation, str]:
    """Return the invitation and its one-time token (only the hash is stored)."""
    if user_by_email(email):
        raise AccountError("That person already has an account.")
    token = secrets.token_urlsafe(32)
    invitation = Invitation(email=normalise_email(email), token_hash=_hash_token(token),
                            is_reviewer=is_reviewer, created_by_id=created_by.id,
                            expires_at=utcnow() + INVITATION_LIFETIME)
    db.session.add(invitation)
    db.session.flush()
    audit.record(created_by, "invitation.create", invitation, after={"email": invitation.email})
    return invitation, token


def find_invitation(token: str) -> Invitation | None:
    """The invitation for a token if it is unused and unexpired."""
    invitation = db.session.scalar(select(Invitation).where(Invitation.token_hash == _hash_token(token)))
    if invitation is None or invitation.used_at is not None or invitation.expires_at < utcnow():
        return None
    return invitation


def accept_invitation(invitation: Invitation, name: str, password: str) -> User:
    user = create_user(invitation.email, name, password, is_reviewer=invitation.is_reviewer)
    invitation.used_at = utcnow()
    db.session.flush()
    return user


def change_password(user: User, current: str, new: str) -> None:
    if not user.check_password(current):
        raise AccountError("Your current password is not right.")
    if len(new) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"Password must be at least {MIN_PASSWORD_LENGTH} characters.")
    user.set_password(new)
    audit.record(user, "user.password_change", user)
    db.session.flush()


def disable_user(user: User, actor: User | None) -> None:
    user.disabled_at = utcnow()
    audit.record(actor, "user.disable", user, after={"email": user.email})
    db.session.flush()


def rename_user(user: User, name: str, actor: User) -> None:
    """Change the name people see on a person's answers, sign-offs and audit entries."""
    name = name.strip()
    if not name:
        raise AccountError("Enter a name.")
    if name == user.name:
        return
    before = {"name": user.name}
    user.name = name
    db.session.flush()
    audit.record(actor, "user.rename", user, before=before, after={"name": name})
