"""The service registry: teams, memberships and services. Flush, never commit."""

from __future__ import annotations

import random
import re
import unicodedata
from datetime import datetime, timedelta

from sqlalchemy import select

from webapp import audit
from webapp.extensions import db
from webapp.models import Assessment, Membership, OwnershipChange, Service, Team, User, utcnow

SERVICE_FIELDS = (
    "name", "slug", "description", "tier", "lifecycle", "owner_id", "backup_owner_id",
    "oncall_url", "repository_url", "dashboard_url", "base_url", "health_url",
    "readiness_url", "deep_health_url", "metrics_url", "probe_interval_minutes",
)


class RegistryError(ValueError):
    """A registry rule was broken; the message is fit to show the user."""


def slugify(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:80]
    if not slug:  # emoji or symbols only: spell them out (🚀 → rocket), skipping joiners and modifiers
        names = " ".join(unicodedata.name(ch, "") for ch in text
                         if unicodedata.category(ch) not in ("Mn", "Me", "Cf", "Sk", "Zs"))
        slug = re.sub(r"[^a-z0-9]+", "-", names.lower()).strip("-")[:80].strip("-")
    return slug or "item"


# Teams ---------------------------------------------------------------------------------

def create_team(name: str, description: str, creator: User) -> Team:
    """Create a team; its creator becomes its first maintainer."""
    name = name.strip()
    slug = slugify(name)
    if db.session.scalar(select(Team).where((Team.name == name) | (Team.slug == slug))):
        raise RegistryError("A team with that name already exists.")
    team = Team(name=name, slug=slug, description=description.strip())
    db.session.add(team)
    db.session.flush()
    db.session.add(Membership(team_id=team.id, user_id=creator.id, role="maintainer"))
    audit.record(creator, "team.create", team, after={"name": name}, team_id=team.id)
    db.session.flush()
    return team


def rename_team(team: Team, name: str, description: str, actor: User) -> None:
    name = name.strip()
    slug = slugify(name)
    clash = db.session.scalar(
        select(Team).where((Team.name == name) | (Team.slug == slug), Team.id != team.id)
    )
    if clash:
        raise RegistryError("A team with that name already exists.")
    before = {"name": team.name, "description": team.description}
    team.name, team.slug, team.description = name, slug, description.strip()
    audit.record(actor, "team.update", team, before=before,
                 after={"name": name, "description": team.description}, team_id=team.id)
    db.session.flush()


def set_membership(team: Team, user: User, role: str, actor: User) -> Membership:
    """Add a member, or change an existing member's role."""
    membership = db.session.scalar(
        select(Membership).where(Membership.team_id == team.id, Membership.user_id == user.id)
    )
    before = {"role": membership.role} if membership else None
    if membership and membership.role == "maintainer" and role != "maintainer":
        _keep_a_maintainer(team, user)
    if membership is None:
        membership = Membership(team_id=team.id, user_id=user.id, role=role)
        db.session.add(membership)
    membership.role = role
    db.session.flush()
    audit.record(actor, "membership.set", membership, before=before,
                 after={"user": user.email, "role": role}, team_id=team.id)
    return membership


def remove_membership(team: Team, user: User, actor: User) -> None:
    membership = db.session.scalar(
        select(Membership).where(Membership.team_id == team.id, Membership.user_id == user.id)
    )
    if membership is None:
        raise RegistryError("That person is not a member of this team.")
    if membership.role == "maintainer":
        _keep_a_maintainer(team, user)
    audit.record(actor, "membership.remove", membership,
                 before={"user": user.email, "role": membership.role}, team_id=team.id)
    db.session.delete(membership)
    db.session.flush()


def _keep_a_maintainer(team: Team, leaving: User) -> None:
    others = db.session.scalars(
        select(Membership).where(Membership.team_id == team.id, Membership.role == "maintainer",
                                 Membership.user_id != leaving.id)
    ).first()
    if others is None:
        raise RegistryError("A team needs at least one maintainer; make someone else maintainer first.")


# Services ------------------------------------------------------------------------------

def _check_slug(team: Team, slug: str, service_id: int | None) -> None:
    query = select(Service.id).where(Service.team_id == team.id, Service.slug == slug)
    if service_id is not None:
        query = query.where(Service.id != service_id)
    if db.session.scalar(query) is not None:
        raise RegistryError(f"This team already has a service with the slug “{slug}”.")


def _check_owners(values: dict) -> None:
    for field in ("owner_id", "backup_owner_id"):
        user_id = values.get(field)
        if user_id is not None and db.session.get(User, user_id) is None:
            raise RegistryError("The chosen owner does not exist.")
    if values.get("owner_id") and values.get("owner_id") == values.get("backup_owner_id"):
        raise RegistryError("The backup owner must be someone other than the owner.")


DEFAULT_PROBE_INTERVAL_MINUTES = 15


def first_probe_at(interval_minutes: int | None, now: datetime | None = None) -> datetime:
    """A random moment within the service's first probe interval: services registered
    together (an import, a seed) are spread over the interval instead of all being probed
    in the same minute forever."""
    interval = (interval_minutes or DEFAULT_PROBE_INTERVAL_MINUTES) * 60
    return (now or utcnow()) + timedelta(seconds=random.uniform(0, interval))


def register_service(team: Team, values: dict, actor: User) -> Service:
    values = {k: v for k, v in values.items() if k in SERVICE_FIELDS}
    values["slug"] = values.get("slug") or slugify(values["name"])
    _check_slug(team, values["slug"], None)
    _check_owners(values)
    service = Service(team_id=team.id, next_probe_at=first_probe_at(values.get("probe_interval_minutes")),
                      retired_at=utcnow() if values.get("lifecycle") == "retired" else None, **values)
    db.session.add(service)
    db.session.flush()
    for field in ("owner_id", "backup_owner_id"):
        if values.get(field):
            _record_owner_change(service, field, None, values[field], actor)
    audit.record(actor, "service.create", service, after=audit.snapshot(service, SERVICE_FIELDS),
                 service_id=service.id, team_id=team.id)
    return service


def update_service(service: Service, values: dict, actor: User) -> None:
    values = {k: v for k, v in values.items() if k in SERVICE_FIELDS}
    values["slug"] = values.get("slug") or slugify(values.get("name", service.name))
    _check_slug(service.team, values["slug"], service.id)
    _check_owners(values)
    before = audit.snapshot(service, SERVICE_FIELDS)
    for field in ("owner_id", "backup_owner_id"):
        if field in values and values[field] != getattr(service, field):
            _record_owner_change(service, field, getattr(service, field), values[field], actor)
    for key, value in values.items():
        setattr(service, key, value)
    if service.lifecycle == "retired" and service.retired_at is None:
        service.retired_at = utcnow()
        _withdraw_reviews(service, actor)
    elif service.lifecycle != "retired":
        service.retired_at = None
    after = audit.snapshot(service, SERVICE_FIELDS)
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    if changed:
        audit.record(actor, "service.update", service,
                     before={k: before[k] for k in changed}, after=changed,
                     service_id=service.id, team_id=service.team_id)
    db.session.flush()


def retire_service(service: Service, actor: User) -> None:
    if service.lifecycle == "retired":
        raise RegistryError("This service is already retired.")
    before = {"lifecycle": service.lifecycle}
    service.lifecycle = "retired"
    service.retired_at = utcnow()
    audit.record(actor, "service.retire", service, before=before, after={"lifecycle": "retired"},
                 service_id=service.id, team_id=service.team_id)
    _withdraw_reviews(service, actor)
    db.session.flush()


def _withdraw_reviews(service: Service, actor: User) -> None:
    """A retired service is no longer assessed: a review in progress goes back to draft (kept,
    with its history), out of every reviewer's queue."""
    for assessment in db.session.scalars(select(Assessment).where(Assessment.service_id == service.id,
                                                                  Assessment.state == "in_review")):
        assessment.state = "draft"
        audit.record(actor, "assessment.withdraw", assessment, before={"state": "in_review"},
                     after={"state": "draft", "why": "the service was retired"},
                     service_id=service.id, team_id=service.team_id)


def _record_owner_change(service: Service, field: str, old: int | None, new: int | None,
                         actor: User) -> None:
    db.session.add(OwnershipChange(service_id=service.id, field=field.removesuffix("_id"),
                                   from_user_id=old, to_user_id=new, changed_by_id=actor.id))


# Hand-over -----------------------------------------------------------------------------

def services_of(user: User) -> list[Service]:
    """Live services the person owns or backs up."""
    return list(db.session.scalars(
        select(Service).where(Service.lifecycle != "retired",
                              (Service.owner_id == user.id) | (Service.backup_owner_id == user.id))
        .order_by(Service.name)))


def hand_over(leaver: User, new_owner: User | None, new_backup: User | None, actor: User) -> int:
    """Give every live service the leaver owns to `new_owner`, and every one they back up to
    `new_backup`; each change is kept in the ownership history. Where the successor already
    holds the other role on a service, they take this one and the other falls empty (one
    person cannot be both). Returns how many services changed."""
    if leaver in (new_owner, new_backup):
        raise RegistryError("Hand over to someone other than the person leaving.")
    for successor in (new_owner, new_backup):
        if successor is not None and successor.disabled_at is not None:
            raise RegistryError(f"{successor.name}'s account is disabled: pick someone active.")
    changed = 0
    for service in services_of(leaver):
        updates = {}
        if service.owner_id == leaver.id:
            updates["owner_id"] = new_owner.id if new_owner else None
        if service.backup_owner_id == leaver.id:
            updates["backup_owner_id"] = new_backup.id if new_backup else None
        owner = updates.get("owner_id", service.owner_id)
        if owner is not None and owner == updates.get("backup_owner_id", service.backup_owner_id):
            other = "backup_owner_id" if "owner_id" in updates else "owner_id"
            updates[other] = None
        before = audit.snapshot(service, ("owner_id", "backup_owner_id"))
        for field, value in updates.items():
            if getattr(service, field) != value:
                _record_owner_change(service, field, getattr(service, field), value, actor)
                setattr(service, field, value)
        audit.record(actor, "service.hand_over", service, before=before,
                     after=audit.snapshot(service, ("owner_id", "backup_owner_id")),
                     service_id=service.id, team_id=service.team_id)
        changed += 1
    db.session.flush()
    return changed
