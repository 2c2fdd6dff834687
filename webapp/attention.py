"""Needs attention: what has gone stale or broken across services, each with what to do and
where. One query per rule, whatever the number of services; read-only."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flask import current_app
from sqlalchemy import Integer, Select, and_, bindparam, case, func, or_, select, true, union_all
from sqlalchemy.orm import aliased
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter

from webapp import catalog
from webapp.extensions import db
from webapp.models import (
    Answer,
    Assessment,
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
from webapp.presentation import probe_kind
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


# The moments the rules compare with are bound parameters (values from `_moments`), so the
# statements do not depend on the clock or the settings and are built once per process
# for the dashboard (`live_item_counts`): building them cost ~4 ms a request.
_TODAY = bindparam("today", type_=Condition.due_on.type)
_WAIVER_HORIZON = bindparam("waiver_horizon", type_=Waiver.expires_on.type)
_ASSESSED_BEFORE = bindparam("assessed_before", type_=Assessment.created_at.type)
_RUNBOOK_DUE = bindparam("runbook_due", type_=RunbookRevision.reviewed_at.type)


@functools.cache
def _reattest_moment(days: int | None):
    """Evidence older than this needs re-attesting: an item's own period, None the default."""
    return bindparam(f"reattest_{days or 'default'}", type_=Evidence.added_at.type)


def _periods() -> tuple[tuple[int, str, int], ...]:
    """(checklist version id, item key, days) of every item with its own re-attestation period."""
    return tuple((vid, item.key, item.reattest_days) for vid, checklist in catalog.checklists_by_version().items()
                 for item in checklist.items if item.reattest_days)


def _moments(now: datetime, periods) -> dict:
    """The values of the rules' bound parameters at `now`."""
    stale_days, default_days = _settings()
    values = {"today": now.date(), "waiver_horizon": now.date() + timedelta(days=WAIVER_WARNING_DAYS),
              "assessed_before": now - timedelta(days=stale_days),
              "runbook_due": now - timedelta(days=REVIEW_EVERY_DAYS),
              "reattest_default": now - timedelta(days=default_days)}
    for _, _, days in periods:
        values[_reattest_moment(days).key] = now - timedelta(days=days)
    return values


def scope_for(user=None, team_id: int | None = None, service_ids: list[int] | None = None) -> Select:
    """The ids of live services to look at: all, one team's, some services, or those a person
    owns, backs up or whose team they belong to ("mine"). Its values are named parameters
    (`scope_team`, `scope_services`, `scope_user`), so statements built on one scope serve
    every scope of the same shape (`collect` keeps them)."""
    return _scope(team_id is not None, service_ids is not None, user is not None,
                  team_id, list(service_ids) if service_ids is not None else None, user.id if user else None)


def _scope(by_team: bool, by_services: bool, by_user: bool, team_id=None, service_ids=None, user_id=None) -> Select:
    query = select(Service.id).where(Service.lifecycle != "retired")
    if by_team:
        query = query.where(Service.team_id == bindparam("scope_team", team_id, type_=Integer))
    if by_services:
        query = query.where(Service.id.in_(bindparam("scope_services", service_ids, expanding=True)))
    if by_user:
        user = bindparam("scope_user", user_id, type_=Integer)
        teams = select(Membership.team_id).where(Membership.user_id == user)
        query = query.where(or_(Service.owner_id == user, Service.backup_owner_id == user, Service.team_id.in_(teams)))
    return query


def _scope_values(scope: Select) -> dict:
    """The named values `scope_for` put in a scope."""
    return {node.key: node.value for node in visitors.iterate(scope)
            if isinstance(node, BindParameter) and node.key in _SCOPE_KEYS}


_SCOPE_KEYS = ("scope_team", "scope_services", "scope_user")


def current_assessments(scope: Select):
    """Per service, the newest assessment that still stands (draft, in review or signed off):
    a correlated LIMIT 1 through the (service_id, state, created_at) index, so each service
    costs a look at its own few rows; a window over every assessment cost each rule that
    used it ~10 ms with 1,000 services."""
    newest = (select(Assessment.id)
              .where(Assessment.service_id == Service.id, Assessment.state.in_(ASSESSED_STATES))
              .order_by(Assessment.created_at.desc(), Assessment.id.desc())
              .limit(1).correlate(Service).scalar_subquery())
    return (select(Assessment.id, Assessment.service_id, Assessment.checklist_version_id)
            .select_from(Service).join(Assessment, Assessment.id == newest)
            .where(Service.id.in_(scope)).subquery())


def _standing(scope: Select):
    """(assessment alias, condition): the alias is, under the condition, its service's newest
    assessment that still stands. For rules that start from a few rows (waivers, evidence)
    and look up their assessment: joined to `current_assessments` instead, SQLite read every
    answer of every service's current assessment to find the few with a waiver (12 ms)."""
    current = aliased(Assessment, name="current")
    newest = (select(Assessment.id)
              .where(Assessment.service_id == current.service_id, Assessment.state.in_(ASSESSED_STATES))
              .order_by(Assessment.created_at.desc(), Assessment.id.desc())
              .limit(1).correlate(current).scalar_subquery())
    # "+ 0": not an indexed column any more, so SQLite does not start from every assessment
    # of every service in scope (30 ms) but from the rule's few rows (0.3 ms).
    return current, and_(current.id == newest, (current.service_id + 0).in_(scope))


def _within(scope: Select):
    """`scope`'s condition on the service row itself, for a rule that reads `Service`: SQLite
    ran `Service.id IN (scope)` as a second pass over the services, then a lookup per row."""
    return scope.whereclause if scope.whereclause is not None else true()


def _names_rows(scope: Select) -> Select:
    return select(Service.id, Service.name, Team.name).join(Team).where(Service.id.in_(scope))


@functools.lru_cache(maxsize=32)
def _collect_statements(shape: frozenset[str], periods) -> tuple[Select, list[tuple[Select, Callable]]]:
    """The names statement and each rule's (statement, handler) for scopes of one shape, built
    once per process: building them was half of a /attention request at 1,000 services."""
    scope = _scope("scope_team" in shape, "scope_services" in shape, "scope_user" in shape)
    rules = [(_condition_rows(scope).order_by(Condition.due_on), _overdue_conditions),
             (_probe_rows(scope).order_by(ServiceCheck.service_id, ServiceCheck.kind), _failing_probes),
             (_waiver_rows(scope).order_by(Waiver.expires_on), _waivers),
             (_broken_evidence_rows(scope), _broken_evidence),
             (_ownership_rows(scope), _ownership),
             (_stale_assessment_rows(scope), _stale_assessments),
             (_stale_evidence_rows(scope, periods), _stale_evidence),
             (_runbook_rows(scope), _runbooks)]
    return _names_rows(scope), rules


def collect(scope: Select, now: datetime | None = None) -> list[Attention]:
    """Everything that needs attention among the services in `scope`, most urgent kind first."""
    now = now or utcnow()
    values = _scope_values(scope)
    periods = _periods()
    params = _moments(now, periods) | values
    names_statement, rules = _collect_statements(frozenset(values), periods)
    names = {service_id: (name, team) for service_id, name, team in db.session.execute(names_statement, params)}
    found: list[Attention] = []
    for statement, handle in rules:
        found.extend(handle(db.session.execute(statement, params), names, now))
    order = {kind: n for n, kind in enumerate(KINDS)}
    return sorted(found, key=lambda a: (order[a.kind], a.team_name.lower(), a.service_name.lower()))


def flagged(scope: Select, periods) -> Select:
    """(service_id, items): how many things need attention in each service of `scope` that has
    any, as one statement: every rule's own statement reduced to one service id per item.
    Run it with `_moments(now, periods)`."""
    items = union_all(*_item_rows(scope, periods)).subquery()
    return select(items.c.service_id, func.count().label("items")).group_by(items.c.service_id)


@functools.lru_cache(maxsize=8)
def _live_flagged(periods) -> Select:
    """`flagged` over every live service, built once per process (per set of periods)."""
    return flagged(scope_for(), periods)


def live_item_counts() -> dict[int, int]:
    """`item_counts` over every live service, kept for the transaction: the dashboard's
    filter, its tiles and its To do column all read it, so the rules run once a page."""
    session = db.session()
    cached = session.info.get("attention_counts")
    if cached is not None and cached[0] is session.get_transaction():
        return cached[1]
    found = item_counts(None)
    session.info["attention_counts"] = (session.get_transaction(), found)
    return found


def item_counts(service_ids: list[int] | None, now: datetime | None = None) -> dict[int, int]:
    """How many things need attention per service, for these services or (None) all; absent: none."""
    if service_ids is not None and not service_ids:
        return {}
    periods = _periods()
    stmt = _live_flagged(periods) if service_ids is None else flagged(scope_for(service_ids=service_ids), periods)
    return dict(db.session.execute(stmt, _moments(now or utcnow(), periods)).all())


def _item_rows(scope: Select, periods) -> list[Select]:
    """Each rule's statement selecting only `service_id`, one row per item `collect` reports."""
    def ids(stmt: Select, *one_per: int) -> Select:
        reduced = stmt.with_only_columns(stmt.selected_columns[0].label("service_id"))
        return reduced.group_by(*(stmt.selected_columns[i] for i in one_per)) if one_per else reduced

    return [ids(_condition_rows(scope)),  # one per condition
            ids(_probe_rows(scope), 0),  # one per service, however many checks fail
            ids(_waiver_rows(scope)),  # one per waiver
            ids(_broken_evidence_rows(scope)),  # grouped already, per assessment
            ids(_ownership_rows(scope)),
            ids(_stale_assessment_rows(scope)),
            ids(_stale_evidence_rows(scope, periods), 0, 1),  # one per assessment
            ids(_runbook_rows(scope))]


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

# Each rule is a statement with one row per thing it reports (`_*_rows`), and the code that
# turns those rows into sentences. `flagged` runs the same statements reduced to service ids,
# so the dashboard's "needs attention" filter and counts agree with this page by construction.

def _condition_rows(scope) -> Select:
    return (select(Condition.service_id, Condition.assessment_id, Condition.text, Condition.due_on)
            .where(Condition.service_id.in_(scope), Condition.done_at.is_(None), Condition.due_on < _TODAY))


def _overdue_conditions(rows, names, now) -> list[Attention]:
    return [_make("condition_overdue", service_id, names,
                  f"A sign-off condition was due {due_on:%Y-%m-%d}: “{text[:120]}”.",
                  "Do it and mark it done on the service page.", "services.show", due_on,
                  service_id=service_id)
            for service_id, _assessment_id, text, due_on in rows]


def _probe_rows(scope) -> Select:
    # Joined, not `service_id IN (scope)`: SQLite then reads the failing checks once and
    # looks up each one's service (1.2 -> 0.5 ms with 1,000 services).
    return (select(ServiceCheck.service_id, ServiceCheck.kind, ServiceCheck.outcome, ServiceCheck.changed_at)
            .join(Service, Service.id == ServiceCheck.service_id)
            .where(_within(scope), ServiceCheck.outcome.in_(("fail", "error"))))


def _failing_probes(rows, names, now) -> list[Attention]:
    by_service: dict[int, list] = defaultdict(list)
    for service_id, kind, outcome, changed_at in rows:
        by_service[service_id].append((kind, outcome, changed_at))
    found = []
    for service_id, checks in by_service.items():
        since = min(changed for _, _, changed in checks)
        kinds = ", ".join(probe_kind(kind) for kind, _, _ in checks)
        found.append(_make("probe_failing", service_id, names,
                           f"{len(checks)} probe check{'s' if len(checks) > 1 else ''} failing ({kinds}) "
                           f"since {since:%Y-%m-%d %H:%M} UTC.",
                           "Open the probe results, fix the service or its probe URLs.",
                           "probes.show", since, service_id=service_id))
    return found


def _waiver_rows(scope) -> Select:
    current, standing = _standing(scope)
    return (select(current.service_id, Waiver.id, Waiver.expires_on, Answer.item_key, Answer.assessment_id,
                   current.checklist_version_id)
            .select_from(Waiver)
            .join(Answer, Waiver.answer_id == Answer.id)
            .join(current, current.id == Answer.assessment_id)
            .where(standing, Waiver.state == "approved", Waiver.expires_on <= _WAIVER_HORIZON,
                   Answer.status.in_(("not_met", "partial"))))


def _waivers(rows, names, now) -> list[Attention]:
    checklists = catalog.checklists_by_version()
    found = []
    for service_id, _waiver_id, expires_on, item_key, assessment_id, version_id in rows:
        item = checklists[version_id].item(item_key) if version_id in checklists else None
        label = item.title if item else item_key.replace("_", " ")
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


def _broken_evidence_rows(scope) -> Select:
    current, standing = _standing(scope)
    return (select(current.service_id, Answer.assessment_id, func.count(Evidence.id), func.min(Evidence.checked_at))
            .select_from(Evidence)
            .join(Answer, Evidence.answer_id == Answer.id)
            .join(current, current.id == Answer.assessment_id)
            .where(standing, Evidence.check_ok.is_(False))
            .group_by(current.service_id, Answer.assessment_id))


def _broken_evidence(rows, names, now) -> list[Attention]:
    return [_make("evidence_broken", service_id, names,
                  f"{n} evidence link{'s' if n > 1 else ''} did not answer when last checked.",
                  "Replace or remove the broken links.", "assessments.show", since,
                  assessment_id=assessment_id)
            for service_id, assessment_id, n, since in rows]


def _ownership_rows(scope) -> Select:
    return (select(Service.id, Service.owner_id, Service.backup_owner_id, Service.oncall_url)
            .where(_within(scope),
                   or_(Service.owner_id.is_(None), Service.backup_owner_id.is_(None), Service.oncall_url.is_(None))))


def _ownership(rows, names, now) -> list[Attention]:
    found = []
    for service_id, owner, backup, oncall in rows:
        missing = [what for what, value in (("owner", owner), ("backup owner", backup),
                                            ("on-call rotation", oncall)) if not value]
        found.append(_make("ownership", service_id, names, "No " + ", no ".join(missing) + ".",
                           "Edit the service: name its " + _and(missing) + ".",
                           "services.edit", service_id=service_id))
    return found


def _stale_assessment_rows(scope) -> Select:
    # No assessment since the moment, each service's through the (service_id, state,
    # created_at) index; the newest one's date is looked up only for the services listed.
    # (A newest per service for every service, then compared, cost 2.7 ms, this 1 ms.)
    assessed = (Assessment.service_id == Service.id, Assessment.state.in_(ASSESSED_STATES))
    newest = select(func.max(Assessment.created_at)).where(*assessed).correlate(Service).scalar_subquery()
    recent = select(Assessment.id).where(*assessed, Assessment.created_at >= _ASSESSED_BEFORE).correlate(Service)
    return select(Service.id, newest.label("at")).where(_within(scope), ~recent.exists())


def _stale_assessments(rows, names, now) -> list[Attention]:
    stale_days, _ = _settings()
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


def _reattest_before(periods, version_id, item_key):
    """SQL for the moment evidence must be newer than: now less the item's own
    re-attestation period (`reattest_days` in its checklist version), else the default."""
    whens = [(and_(version_id == vid, item_key == key), _reattest_moment(days)) for vid, key, days in periods]
    return case(*whens, else_=_reattest_moment(None)) if whens else _reattest_moment(None)


def _stale_evidence_rows(scope, periods) -> Select:
    current, standing = _standing(scope)
    return (select(current.service_id, Answer.assessment_id, Evidence.added_at)
            .select_from(Evidence)
            .join(Answer, Evidence.answer_id == Answer.id)
            .join(current, current.id == Answer.assessment_id)
            .where(standing, Answer.status.is_not(None),  # unanswered: nothing was attested
                   Evidence.added_at < _reattest_before(periods, current.checklist_version_id, Answer.item_key)))


def _stale_evidence(rows, names, now) -> list[Attention]:
    stale: dict[tuple[int, int], list[datetime]] = defaultdict(list)
    for service_id, assessment_id, added_at in rows:
        stale[(service_id, assessment_id)].append(added_at)
    return [_make("evidence_stale", service_id, names,
                  f"{len(dates)} evidence link{'s' if len(dates) > 1 else ''} older than the item's "
                  f"re-attestation period (oldest added {min(dates):%Y-%m-%d}).",
                  "Check the evidence still shows what it claims; add fresh evidence.",
                  "assessments.show", min(dates), assessment_id=assessment_id)
            for (service_id, assessment_id), dates in stale.items()]


def _runbook_rows(scope) -> Select:
    # The latest revision per service by a correlated LIMIT 1, one step down the (service_id,
    # created_at, id) index; whether it is due is read in the same lookup. Joined to the
    # revision it found instead, PostgreSQL hashed every revision and ran the lookup twice
    # per service (2.6 -> 1.4 ms with 1,000 services).
    latest = (select(RunbookRevision.id).where(RunbookRevision.service_id == Service.id)
              .order_by(RunbookRevision.created_at.desc(), RunbookRevision.id.desc())
              .limit(1).correlate(Service))

    def of_latest(value):
        return latest.with_only_columns(value).scalar_subquery()

    due = of_latest(or_(RunbookRevision.reviewed_at.is_(None), RunbookRevision.reviewed_at < _RUNBOOK_DUE))
    # NULL when there is no revision: then it is due only if no runbook is linked either.
    return (select(Service.id, Service.runbook_url, of_latest(RunbookRevision.created_at),
                   of_latest(RunbookRevision.reviewed_at))
            .where(_within(scope), func.coalesce(due, Service.runbook_url.is_(None))))


def _runbooks(rows, names, now) -> list[Attention]:
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
