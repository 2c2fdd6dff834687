"""Append-only audit trail. Logic functions call record(); the caller commits."""

from __future__ import annotations

from flask import g, has_request_context

from webapp.extensions import db
from webapp.models import AuditEvent, User


def record(
    actor: User | None,
    action: str,
    obj,
    *,
    before: dict | None = None,
    after: dict | None = None,
    service_id: int | None = None,
    team_id: int | None = None,
) -> AuditEvent:
    event = AuditEvent(
        actor_id=actor.id if actor is not None and actor.is_authenticated else None,
        action=action,
        object_type=type(obj).__name__.lower(),
        object_id=getattr(obj, "id", None),
        service_id=service_id,
        team_id=team_id,
        before=before,
        after=after,
        request_id=g.get("request_id") if has_request_context() else None,
    )
    db.session.add(event)
    return event


def snapshot(obj, fields: tuple[str, ...]) -> dict:
    """The named fields of a model as JSON-safe values, for before/after."""
    values = {}
    for name in fields:
        value = getattr(obj, name)
        values[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return values
