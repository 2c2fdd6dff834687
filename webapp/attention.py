"""Needs attention: what has gone stale or broken across services, each with what to do and
where. One query per rule, whatever the number of services; read-only."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flask import current_app
from sqlalchemy import Select, and_, func, or_, select

from webapp import catalog
from webapp.extensions import db
from webapp.models import (
    Answer,
    Assessment,
    ChecklistVersion,
    Condition,
    Evidence,
    Membership,
    RunbookRevision,
    Service,
    ServiceCheck,
    Team,
    Waiver,
    utcnow,
)
from webapp.runbooks import REVIEW_EVERY_DAYS

# Kinds, in the order a person should deal with them, with a label for filters and tiles.
KINDS = {
    "condition_overdue": "Overdue sign-off conditions",
    "probe_failing": "Failing probes",
    "waiver_expired": "Expired waivers",
    "waiver_expiring": "Waivers expiring soon",
    "evidence_broken": "Broken evidence links",
    "ownership": "Missing owner or on-call",
    "assessment_stale": "Assessments out of date",
    "evidence_stale": "Evidence to re-attest",
    "runbook": "Runbooks to review",
}
WAIVER_WARNING_DAYS = 14
ASSESSED_STATES = ("draft", "in_review", "signed_off")


@dataclass(frozen=True)
class Attention:
    """One thing to do about one service."""

    kind: str
    service_id: int
    service_name: str
    team_name: str
    problem: str  # what is true now, as a sentence
    action: str  # what to do about it
    endpoint: str  # where to do it: url_for(endpoint, **values)
    values: dict = field(default_factory=dict)
    since: datetime | date | None = None  # for "oldest first" within a kind

    @property
    def label(self) -> str:
        return KINDS[self.kind]


def _settings() -> tuple[int, int]:
    config = current_app.config
    return config.get("ATTENTION_ASSESSMENT_DAYS", 90), config.get("EVIDENCE_REATTEST_DAYS", 180)


def scope_for(user=None, team_id: int | None = None) -> Select:
    """The ids of live services to look at: all, one team's, or those a person owns, backs up or
    whose team they belong to ("mine")."""
    query = select(Service.id).where(Service.lifecycle != "retired")
    if team_id is not None:
        query = query.where(Service.team_id == team_id)
    if user is not None:
        teams = select(Membership.team_id).where(Membership.user_id == user.id)
        query = query.where(or_(Service.owner_id == user.id, Service.backup_owner_id == user.id,
                                Service.team_id.in_(teams)))
    return query


def current_assessments(scope: Select):
    """Per service, the newest assessment that still stands (draft, in review or signed off)."""
    ranked = (select(Assessment.id, Assessment.service_id, Assessment.checklist_version_id,
                     func.row_number().over(partition_by=Assessment.service_id,
                                            order_by=(Assessment.created_at.desc(), Assessment.id.desc()))
                     .label("rank"))
              .where(Assessment.state.in_(ASSESSED_STATES), Assessment.service_id.in_(scope))
              .subquery())
    return select(ranked.c.id, ranked.c.service_id, ranked.c.checklist_version_id).where(ranked.c.rank == 1).subquery()


def _names(scope: Select) -> dict[int, tuple[str, str]]:
    rows = db.session.execute(select(Service.id, Service.name, Team.name).join(Team)
                              .where(Service.id.in_(scope)))
    return {service_id: (name, team) for service_id, name, team in rows}


def collect(scope: Select, now: datetime | None = None) -> list[Attention]:
    """Everything that needs attention among the services in `scope`, most urgent kind first."""
    now = now or utcnow()
    names = _names(scope)
    found: list[Attention] = []
    for rule in (_overdue_conditions, _failing_probes, _waivers, _broken_evidence, _ownership, _stale_assessments,
                 _stale_evidence, _runbooks):
        found.extend(rule(scope, names, now))
    order = {kind: n for n, kind in enumerate(KINDS)}
    return sorted(found, key=lambda a: (order[a.kind], a.team_name.lower(), a.service_name.lower()))


def counts(items: list[Attention]) -> dict[str, int]:
    tally = dict.fromkeys(KINDS, 0)
    for item in items:
        tally[item.kind] += 1
    return tally


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _make(kind: str, service_id: int, names: dict, problem: str, action: str, endpoint: str,
          since=None, /, **url_values) -> Attention:
    name, team = names.get(service_id, ("?", "?"))
    return Attention(kind, service_id, name, team, problem, action, endpoint, url_values, since)


# Rules ------------------------------------------------------------------------------------

def _overdue_conditions(scope, names, now) -> list[Attention]:
    rows = db.session.execute(
        select(Condition.service_id, Condition.assessment_id, Condition.text, Condition.due_on)
        .where(Condition.service_id.in_(scope), Condition.done_at.is_(None), Condition.due_on < now.date())
        .order_by(Condition.due_on))
    return [_make("condition_overdue", service_id, names,
                  f"A sign-off condition was due {due_on:%Y-%m-%d}: “{text[:120]}”.",
                  "Do it and mark it done on the service page.", "services.show", due_on,
                  service_id=service_id)
            for service_id, _assessment_id, text, due_on in rows]


def _failing_probes(scope, names, now) -> list[Attention]:
    rows = db.session.execute(
        select(ServiceCheck.service_id, ServiceCheck.kind, ServiceCheck.outcome, ServiceCheck.changed_at)
        .where(ServiceCheck.service_id.in_(scope), ServiceCheck.outcome.in_(("fail", "error")))
        .order_by(ServiceCheck.service_id, ServiceCheck.kind))
    by_service: dict[int, list] = defaultdict(list)
    for service_id, kind, outcome, changed_at in rows:
        by_service[service_id].append((kind, outcome, changed_at))
    found = []
    for service_id, checks in by_service.items():
        since = min(changed for _, _, changed in checks)
        kinds = ", ".join(kind.replace("_", " ") for kind, _, _ in checks)
        found.append(_make("probe_failing", service_id, names,
                           f"{len(checks)} probe check{'s' if len(checks) > 1 else ''} failing ({kinds}) "
                           f"since {since:%Y-%m-%d %H:%M} UTC.",
                           "Open the probe results, fix the service or its probe URLs.",
                           "probes.show", since, service_id=service_id))
    return found


def _waivers(scope, names, now) -> list[Attention]:
    current = current_assessments(scope)
    horizon = now.date() + timedelta(days=WAIVER_WARNING_DAYS)
    rows = db.session.execute(
        select(Waiver.id, Waiver.expires_on, Answer.item_key, Answer.assessment_id, current.c.service_id)
        .join(Answer, Waiver.answer_id == Answer.id)
        .join(current, current.c.id == Answer.assessment_id)
        .where(Waiver.state == "approved", Waiver.expires_on <= horizon,
               Answer.status.in_(("not_met", "partial")))
        .order_by(Waiver.expires_on))
    found = []
    for _waiver_id, expires_on, item_key, assessment_id, service_id in rows:
        label = item_key.replace("_", " ")
        if expires_on < now.date():
            found.append(_make("waiver_expired", service_id, names,
                               f"The waiver for “{label}” expired on {expires_on:%Y-%m-%d}: the gap counts again.",
                               "Fix the item, or request a new waiver.",
                               "assessments.show", expires_on, assessment_id=assessment_id))
        else:
            days = (expires_on - now.date()).days
            found.append(_make("waiver_expiring", service_id, names,
                               f"The waiver for “{label}” expires on {expires_on:%Y-%m-%d} "
                               f"(in {days} day{'s' if days != 1 else ''}).",
                               "Close the gap before then, or request a renewal.",
                               "assessments.show", expires_on, assessment_id=assessment_id))
    return found


def _broken_evidence(scope, names, now) -> list[Attention]:
    current = current_assessments(scope)
    rows = db.session.execute(
        select(current.c.service_id, Answer.assessment_id, func.count(Evidence.id), func.min(Evidence.checked_at))
        .join(Answer, Evidence.answer_id == Answer.id)
        .join(current, current.c.id == Answer.assessment_id)
        .where(Evidence.check_ok.is_(False))
        .group_by(current.c.service_id, Answer.assessment_id))
    return [_make("evidence_broken", service_id, names,
                  f"{n} evidence link{'s' if n > 1 else ''} did not answer when last checked.",
                  "Replace or remove the broken links.", "assessments.show", since,
                  assessment_id=assessment_id)
            for service_id, assessment_id, n, since in rows]


def _ownership(scope, names, now) -> list[Attention]:
    rows = db.session.execute(
        select(Service.id, Service.owner_id, Service.backup_owner_id, Service.oncall_url)
        .where(Service.id.in_(scope),
               or_(Service.owner_id.is_(None), Service.backup_owner_id.is_(None), Service.oncall_url.is_(None))))
    found = []
    for service_id, owner, backup, oncall in rows:
        missing = [what for what, value in (("owner", owner), ("backup owner", backup),
                                            ("on-call rotation", oncall)) if not value]
        found.append(_make("ownership", service_id, names, "No " + ", no ".join(missing) + ".",
                           "Edit the service: name its " + _and(missing) + ".",
                           "services.edit", service_id=service_id))
    return found


def _stale_assessments(scope, names, now) -> list[Attention]:
    stale_days, _ = _settings()
    newest = (select(Assessment.service_id, func.max(Assessment.created_at).label("at"))
              .where(Assessment.state.in_(ASSESSED_STATES)).group_by(Assessment.service_id).subquery())
    rows = db.session.execute(
        select(Service.id, newest.c.at).outerjoin(newest, newest.c.service_id == Service.id)
        .where(Service.id.in_(scope), or_(newest.c.at.is_(None), newest.c.at < now - timedelta(days=stale_days))))
    found = []
    for service_id, at in rows:
        if at is None:
            found.append(_make("assessment_stale", service_id, names, "Never assessed.",
                               "Start an assessment.", "assessments.start", service_id=service_id))
        else:
            found.append(_make("assessment_stale", service_id, names,
                               f"Last assessed {at:%Y-%m-%d}, more than {stale_days} days ago.",
                               "Re-assess: the answers are copied, confirm what still holds.",
                               "assessments.start", at, service_id=service_id))
    return found


def _stale_evidence(scope, names, now) -> list[Attention]:
    _, default_days = _settings()
    current = current_assessments(scope)
    versions = {v.id: v for v in db.session.scalars(select(ChecklistVersion).where(
        ChecklistVersion.id.in_(select(current.c.checklist_version_id))))}
    # The shortest period any item in use sets bounds the query; each item's own period is
    # then applied below, where the checklist is known.
    shortest = min([default_days] + [item.reattest_days for v in versions.values()
                                     for item in catalog.checklist_of(v).items if item.reattest_days])
    rows = db.session.execute(
        select(current.c.service_id, Answer.assessment_id, current.c.checklist_version_id, Answer.item_key,
               Evidence.added_at)
        .join(Answer, Evidence.answer_id == Answer.id)
        .join(current, current.c.id == Answer.assessment_id)
        .where(Evidence.added_at < now - timedelta(days=shortest), Answer.status.is_not(None))).all()
    stale: dict[tuple[int, int], list[datetime]] = defaultdict(list)
    for service_id, assessment_id, version_id, item_key, added_at in rows:
        item = catalog.checklist_of(versions[version_id]).item(item_key)
        days = (item.reattest_days if item and item.reattest_days else default_days)
        if added_at < now - timedelta(days=days):
            stale[(service_id, assessment_id)].append(added_at)
    return [_make("evidence_stale", service_id, names,
                  f"{len(dates)} evidence link{'s' if len(dates) > 1 else ''} older than the item's "
                  f"re-attestation period (oldest added {min(dates):%Y-%m-%d}).",
                  "Check the evidence still shows what it claims; add fresh evidence.",
                  "assessments.show", min(dates), assessment_id=assessment_id)
            for (service_id, assessment_id), dates in stale.items()]


def _runbooks(scope, names, now) -> list[Attention]:
    ranked = (select(RunbookRevision.service_id, RunbookRevision.reviewed_at, RunbookRevision.created_at,
                     func.row_number().over(partition_by=RunbookRevision.service_id,
                                            order_by=(RunbookRevision.created_at.desc(), RunbookRevision.id.desc()))
                     .label("rank"))
              .where(RunbookRevision.service_id.in_(scope)).subquery())
    latest = select(ranked).where(ranked.c.rank == 1).subquery()
    due = now - timedelta(days=REVIEW_EVERY_DAYS)
    rows = db.session.execute(
        select(Service.id, Service.runbook_url, latest.c.created_at, latest.c.reviewed_at)
        .outerjoin(latest, latest.c.service_id == Service.id)
        .where(Service.id.in_(scope),
               or_(and_(latest.c.created_at.is_(None), Service.runbook_url.is_(None)),
                   and_(latest.c.created_at.is_not(None),
                        or_(latest.c.reviewed_at.is_(None), latest.c.reviewed_at < due)))))
    found = []
    for service_id, _url, created_at, reviewed_at in rows:
        if created_at is None:
            problem, action = "No runbook.", "Write the runbook, or link the team's."
        elif reviewed_at is None:
            problem, action = "The runbook was never marked reviewed.", "Read it, fix it, mark it reviewed."
        else:
            problem = f"The runbook was last reviewed {reviewed_at:%Y-%m-%d}, over {REVIEW_EVERY_DAYS} days ago."
            action = "Read it, fix it, mark it reviewed."
        found.append(_make("runbook", service_id, names, problem, action, "runbooks.show",
                           reviewed_at or created_at, service_id=service_id))
    return found
