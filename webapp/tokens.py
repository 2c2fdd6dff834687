"""API tokens: make one (its secret is returned once), find one by its secret, revoke, and note
when it was last used. Flush, never commit (except `note_use`, see there)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from webapp import audit
from webapp.extensions import db
from webapp.models import API_SCOPES, ApiToken, Team, User, utcnow
from webapp.permissions import can_manage_team

SECRET_PREFIX = "pft_"  # recognisable in logs and by secret scanners
MAX_DAYS = 366
DEFAULT_DAYS = 90
# last_used_at is written at most this often per token, so a busy pipeline does not turn every
# API request into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenError(ValueError):
    """A rule about tokens was broken; the message is fit to show the user."""


def hash_secret(secret: str) -> str:
    # A plain SHA-256 is enough: the secret has 256 bits of entropy, so there is nothing to
    # guess, and lookups stay one indexed equality match.
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(user: User, name: str, scopes: list[str] | tuple[str, ...], days: int | None,
                 *, team: Team | None = None) -> tuple[ApiToken, str]:
    """A new token for `user` (personal), or for `team` made by `user` (one of its maintainers).
    Returns the token and its secret; only the secret's hash is stored."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise TokenError("Give the token a name of 1 to 80 characters, e.g. “deploy gate”.")
    chosen = sorted(set(scopes), key=API_SCOPES.index) if set(scopes) <= set(API_SCOPES) else None
    if not chosen:
        raise TokenError(f"Pick at least one scope of {', '.join(API_SCOPES)}.")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise TokenError(f"A token lasts 1 to {MAX_DAYS} days.")
    if not user.is_active:
        raise TokenError("A disabled account cannot have tokens.")
    if team is not None and not can_manage_team(user, team):
        raise TokenError("Only a maintainer of the team can make a team token.")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(name=name, token_hash=hash_secret(secret), prefix=secret[:12],
                     scopes=" ".join(chosen), user_id=user.id,
                     team_id=team.id if team else None,
                     expires_at=utcnow() + timedelta(days=days) if days else None)
    db.session.add(token)
    db.session.flush()
    audit.record(user, "token.create", token,
                 after={"name": name, "scopes": chosen, "team": team.slug if team else None,
                        "expires_at": token.expires_at.isoformat() if token.expires_at else None},
                 team_id=team.id if team else None)
    return token, secret


def can_revoke(user: User, token: ApiToken) -> bool:
    """Its owner, an admin, or (for a team token) any maintainer of the team."""
    if not user.is_authenticated:
        return False
    if user.is_admin or token.user_id == user.id:
        return True
    return token.team is not None and can_manage_team(user, token.team)


def revoke_token(token: ApiToken, actor: User) -> None:
    if token.revoked_at is not None:
        raise TokenError("This token is already revoked.")
    token.revoked_at, token.revoked_by_id = utcnow(), actor.id
    audit.record(actor, "token.revoke", token, after={"name": token.name}, team_id=token.team_id)
    db.session.flush()


def personal_tokens(user: User) -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).where(
        ApiToken.user_id == user.id, ApiToken.team_id.is_(None)).order_by(ApiToken.created_at.desc())))


def team_tokens(team: Team) -> list[ApiToken]:
    return list(db.session.scalars(select(ApiToken).where(ApiToken.team_id == team.id)
                                   .order_by(ApiToken.created_at.desc())))


@dataclass(frozen=True)
class Principal:
    """Who an API request acts as: the token's user, limited to the token's team if it has one."""

    token: ApiToken
    user: User

    @property
    def team_id(self) -> int | None:
        return self.token.team_id

    def has_scope(self, scope: str) -> bool:
        return scope in self.token.scope_list

    def covers(self, team: Team) -> bool:
        """A team token may change only its own team's things; a personal token any team's."""
        return self.token.team_id is None or self.token.team_id == team.id


def authenticate(secret: str, now: datetime | None = None) -> tuple[Principal | None, str]:
    """The principal for a presented secret, or None and why not (fit to show the caller)."""
    now = now or utcnow()
    if not secret.startswith(SECRET_PREFIX) or len(secret) > 200:
        return None, "This is not a Preflight API token."
    token = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_secret(secret)))
    if token is None:
        return None, "Unknown token."
    if token.revoked_at is not None:
        return None, "This token was revoked."
    if token.expires_at is not None and now >= token.expires_at:
        return None, f"This token expired at {token.expires_at.isoformat()}."
    user = db.session.get(User, token.user_id)
    if user is None or not user.is_active:
        return None, "The account this token belongs to is disabled."
    return Principal(token, user), ""


def use_is_stale(token: ApiToken, now: datetime | None = None) -> bool:
    """Whether this use should be recorded: the stored last use is over a minute old."""
    now = now or utcnow()
    return token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION


def note_use(token_id: int, now: datetime) -> bool:
    """Record that a token was used, at most once per LAST_USED_RESOLUTION.

    Called after the response has gone (webapp/api/auth.py), on its own connection and
    committing there: a GET handles its request without writing, and a refused write still
    counts as a use. The WHERE makes concurrent requests write once, not once each.
    """
    with db.engine.begin() as connection:
        result = connection.execute(
            update(ApiToken).where(ApiToken.id == token_id, or_(
                ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - LAST_USED_RESOLUTION))
            .values(last_used_at=now))
    return result.rowcount == 1
