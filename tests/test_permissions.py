"""Every route × every role, built from `app.url_map`: a route without a rule here fails.

To add a route: add one entry to MATRIX, `"blueprint.endpoint": {"GET": page(...), "POST": act(...)}`,
naming the roles that may use it. Everyone else signed in must get 403 and anonymous people the
sign-in page (unless the route is public). A POST that is allowed must really succeed, not just
redirect: no error flashed, the expected status, and, where given, `done` sees the change in the
database; a refused POST must leave `done` false. If the route's URL needs a value the `world`
fixture lacks, add it there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from flask import url_for
from sqlalchemy import func, select

from tests.factories import PASSWORD, MembershipFactory, ServiceFactory, TeamFactory, UserFactory
from webapp import accounts, assessments, catalog, runbooks, tokens
from webapp.checklists import parse_checklist
from webapp.extensions import db
from webapp.models import (
    ApiToken,
    Assessment,
    Condition,
    Evidence,
    FeatureFlag,
    Invitation,
    Membership,
    ProbeRun,
    Report,
    RunbookRevision,
    Service,
    SignOff,
    Team,
    User,
    Waiver,
    utcnow,
)
from webapp.probes import runs
from webapp.probes.rules import CheckResult

ROLES = ("anonymous", "viewer", "member", "maintainer", "other_team", "reviewer", "admin")
EVERYONE = frozenset(ROLES)
SIGNED_IN = EVERYONE - {"anonymous"}
EDITORS = frozenset({"member", "maintainer", "admin"})  # of the service's team
MANAGERS = frozenset({"maintainer", "admin"})  # of the team
REVIEWERS = frozenset({"reviewer", "admin"})
ADMINS = frozenset({"admin"})
ITEM = "structured_logging"  # answered "not met", with evidence: may be answered, waived, linked
WAIVED = "log_rotation"  # answered "not met", with a waiver waiting for a decision


@dataclass(frozen=True)
class Rule:
    allowed: frozenset[str]
    status: int  # what an allowed role gets
    data: dict = field(default_factory=dict)  # the form a POST sends; "{name}" takes world ids
    done: Callable[[dict], bool] | None = None  # reads the database: did the change happen?


def page(allowed: frozenset[str], status: int = 200) -> Rule:
    return Rule(allowed, status)


def act(allowed: frozenset[str], data: dict | None = None, *, done: Callable[[dict], bool] | None = None,
        status: int = 302) -> Rule:
    return Rule(allowed, status, data or {}, done)


def _count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


SERVICE_FORM = {"name": "Renamed service", "tier": "2", "lifecycle": "planned", "owner_id": "",
                "backup_owner_id": "", "probe_interval_minutes": "15"}
NEW_PASSWORD = {"name": "Invited Person", "password": "another horse battery", "confirm": "another horse battery"}

MATRIX: dict[str, dict[str, Rule]] = {
    # Public: load balancers, Prometheus and people not signed in yet.
    "ops.health": {"GET": page(EVERYONE)},
    "ops.ready": {"GET": page(EVERYONE)},
    "ops.deep_health": {"GET": page(EVERYONE)},
    "ops.metrics": {"GET": page(EVERYONE)},
    "auth.login": {"GET": page(EVERYONE),
                   "POST": act(EVERYONE, {"email": "{admin_email}", "password": PASSWORD})},
    # Sign-up closes once anyone has an account (tests/test_auth.py covers it open).
    "auth.signup": {"GET": page(EVERYONE, 403), "POST": act(EVERYONE, status=403)},
    "auth.accept_invitation": {
        "GET": page(EVERYONE),
        "POST": act(EVERYONE, NEW_PASSWORD,
                    done=lambda ids: _count(User, User.email == ids["invited_email"]) == 1)},
    # Signed in.
    "auth.logout": {"POST": act(SIGNED_IN)},
    "auth.change_password": {
        "GET": page(SIGNED_IN),
        "POST": act(SIGNED_IN, {"current": PASSWORD, "password": "a new horse battery",
                                "confirm": "a new horse battery"})},
    "auth.profile": {"GET": page(SIGNED_IN), "POST": act(SIGNED_IN, {"name": "Renamed Person"})},
    "auth.users": {"GET": page(ADMINS),
                   "POST": act(ADMINS, {"email": "newcomer@example.test"}, status=200,
                               done=lambda ids: _count(Invitation, Invitation.email == "newcomer@example.test") == 1)},
    "auth.csrf_token": {"GET": page(SIGNED_IN)},  # fresh CSRF token for pages kept open
    "main.index": {"GET": page(SIGNED_IN)},
    "main.export_csv": {"GET": page(SIGNED_IN)},
    "main.export_json": {"GET": page(SIGNED_IN)},
    "teams.index": {"GET": page(SIGNED_IN)},
    "teams.show": {"GET": page(SIGNED_IN)},
    "teams.create": {"GET": page(SIGNED_IN),
                     "POST": act(SIGNED_IN, {"name": "Brand new team"},
                                 done=lambda ids: _count(Team, Team.name == "Brand new team") == 1)},
    "teams.edit": {"GET": page(MANAGERS),
                   "POST": act(MANAGERS, {"name": "Renamed"},
                               done=lambda ids: db.session.get(Team, ids["team_id"]).name == "Renamed")},
    "teams.add_member": {"POST": act(MANAGERS, {"email": "{outsider_email}", "role": "viewer"},
                                     done=lambda ids: _count(Membership, Membership.user_id == ids["outsider_id"]) == 1)},
    "teams.remove_member": {"POST": act(MANAGERS, done=lambda ids: _count(
        Membership, Membership.user_id == ids["user_id"], Membership.team_id == ids["team_id"]) == 0)},
    "services.index": {"GET": page(SIGNED_IN)},
    "services.show": {"GET": page(SIGNED_IN)},
    "services.audit_log": {"GET": page(SIGNED_IN)},
    "services.create": {"GET": page(EDITORS),
                        "POST": act(EDITORS, SERVICE_FORM | {"name": "New thing"},
                                    done=lambda ids: _count(Service, Service.name == "New thing") == 1)},
    "services.edit": {"GET": page(EDITORS),
                      "POST": act(EDITORS, SERVICE_FORM,
                                  done=lambda ids: db.session.get(Service, ids["service_id"]).name == "Renamed service")},
    "services.retire": {"POST": act(EDITORS, done=lambda ids: db.session.get(
        Service, ids["service_id"]).lifecycle == "retired")},
    "checklists.index": {"GET": page(SIGNED_IN)},
    "checklists.show": {"GET": page(SIGNED_IN)},
    "checklists.reload": {"POST": act(ADMINS)},
    "flags.index": {"GET": page(ADMINS)},
    "flags.switch": {"POST": act(ADMINS, {"enabled": "off", "note": "permission test"},
                                 done=lambda ids: _count(FeatureFlag, FeatureFlag.key == ids["key"],
                                                         FeatureFlag.enabled.is_(False)) == 1)},
    "assessments.show": {"GET": page(SIGNED_IN)},
    "assessments.history": {"GET": page(SIGNED_IN)},
    "assessments.panel": {"GET": page(SIGNED_IN, 302)},  # without htmx: the page, with the item open
    "assessments.compare": {"GET": page(SIGNED_IN)},
    # Another checklist: the service already has its one open draft of production-readiness.
    "assessments.start": {"GET": page(EDITORS),
                          "POST": act(EDITORS, {"checklist": "{other_version_id}", "copy_from": "0"},
                                      done=lambda ids: _count(Assessment, Assessment.service_id == ids["service_id"]) == 2)},
    "assessments.answer": {"POST": act(EDITORS, {"status": "met", "note": "done"}, done=lambda ids: assessments.answer_for(
        db.session.get(Assessment, ids["assessment_id"]), ITEM).status == "met")},
    "assessments.add_evidence": {"POST": act(EDITORS, {"url": "https://logs.example.test/", "title": "Logs"},
                                             done=lambda ids: _count(Evidence) == 2)},
    "assessments.remove_evidence": {"POST": act(EDITORS, done=lambda ids: _count(Evidence) == 0)},
    "assessments.request_waiver": {
        "GET": page(MANAGERS),
        "POST": act(MANAGERS, {"reason": "Next quarter", "compensating_control": "Manual checks",
                               "risk_owner_id": "{maintainer_id}", "expires_on": "{in_a_month}"},
                    done=lambda ids: _count(Waiver) == 2)},
    "assessments.decide_waiver": {"POST": act(REVIEWERS, {"decision": "approve"}, done=lambda ids: db.session.get(
        Waiver, ids["waiver_id"]).state == "approved")},
    # Authorised editors reach the submit rule: this draft has unanswered items, so 400
    # (tests/test_reviews.py submits complete ones).
    "assessments.submit": {"POST": act(EDITORS, status=400)},
    "assessments.submit_page": {"GET": page(SIGNED_IN, 302)},  # a refused submit reloaded: the unanswered items
    "assessments.upgrade": {"GET": page(EDITORS),
                            "POST": act(EDITORS, {"version": "{newer_version_id}"}, done=lambda ids: db.session.get(
                                Assessment, ids["assessment_id"]).checklist_version_id == ids["newer_version_id"])},
    "probes.show": {"GET": page(SIGNED_IN)},
    "probes.run": {"GET": page(SIGNED_IN)},
    "probes.result": {"GET": page(SIGNED_IN)},
    "probes.run_now": {"POST": act(EDITORS, done=lambda ids: _count(ProbeRun, ProbeRun.trigger == "manual") == 1)},
    "runbooks.show": {"GET": page(SIGNED_IN)},
    "runbooks.revision": {"GET": page(SIGNED_IN)},
    "runbooks.diff": {"GET": page(SIGNED_IN)},
    "runbooks.edit": {"GET": page(EDITORS),
                      "POST": act(EDITORS, {"body": "# Runbook\n\nRestart it twice.", "based_on": "{revision_id}"},
                                  done=lambda ids: _count(RunbookRevision) == 3)},
    "runbooks.link": {"POST": act(EDITORS, {"link-runbook_url": "https://wiki.example.test/runbook"},
                                  done=lambda ids: db.session.get(Service, ids["service_id"]).runbook_url
                                  == "https://wiki.example.test/runbook")},
    "runbooks.review": {"POST": act(EDITORS, done=lambda ids: db.session.get(
        RunbookRevision, ids["revision_id"]).reviewed_at is not None)},
    "owners.history": {"GET": page(SIGNED_IN)},
    "owners.timeline": {"GET": page(SIGNED_IN)},
    "owners.offboard": {"GET": page(ADMINS),
                        "POST": act(ADMINS, {"new_owner_id": "{maintainer_id}", "new_backup_id": "0", "disable": "y"},
                                    done=lambda ids: db.session.get(User, ids["user_id"]).disabled_at is not None)},
    "attention.index": {"GET": page(SIGNED_IN)},
    "attention.mine": {"GET": page(SIGNED_IN)},
    # API tokens (the API itself takes bearer tokens only: tests/test_api_*.py hold it to the
    # same rules, and test_api_protocol.py checks that a session cookie gets 401 on every route).
    "tokens.mine": {"GET": page(SIGNED_IN),
                    "POST": act(SIGNED_IN, {"name": "ci", "scopes": "read", "expires": "30"}, status=200,
                                done=lambda ids: _count(ApiToken, ApiToken.team_id.is_(None)) == 1)},
    "tokens.team": {"GET": page(MANAGERS),
                    "POST": act(MANAGERS, {"name": "sync", "scopes": "read", "expires": "30"}, status=200,
                                done=lambda ids: _count(ApiToken, ApiToken.team_id == ids["team_id"]) == 2)},
    "tokens.revoke": {"POST": act(MANAGERS, done=lambda ids: db.session.get(
        ApiToken, ids["token_id"]).revoked_at is not None)},
    # Review and sign-off (tests/test_reviews.py covers the workflow itself).
    "reviews.queue": {"GET": page(SIGNED_IN)},
    "reviews.show": {"GET": page(SIGNED_IN)},
    # Only holders of a required role (here: the team maintainer as "owner") get past the
    # permission check; the world's assessment is a draft, so there is nothing to sign.
    "reviews.decide": {"POST": act(frozenset({"maintainer"}), {"role": "owner", "decision": "approve"},
                                   status=409)},
    "reviews.condition_done": {"POST": act(EDITORS, done=lambda ids: db.session.get(
        Condition, ids["condition_id"]).done_at is not None)},
    "reviews.set_roles": {"POST": act(ADMINS, {"roles": "sre"}, done=lambda ids: db.session.get(
        User, ids["user_id"]).reviewer_roles == ["sre"])},
    "reports.download": {"GET": page(SIGNED_IN)},
    "reports.draft_export": {"GET": page(SIGNED_IN)},
    "reports.verify": {"GET": page(SIGNED_IN), "POST": act(SIGNED_IN, {"sha256": "{report_sha256}"}, status=200)},
    "reports.meeting": {"GET": page(SIGNED_IN)},
}

CASES = [(endpoint, method) for endpoint, methods in MATRIX.items() for method in methods]


def test_every_route_has_a_rule(app):
    routes = {(rule.endpoint, method) for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" and not rule.endpoint.startswith("api.")  # bearer tokens
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    missing, stale = sorted(routes - set(CASES)), sorted(set(CASES) - routes)
    assert not missing, f"add these to MATRIX in tests/test_permissions.py: {missing}"
    assert not stale, f"these MATRIX entries match no route any more: {stale}"


@pytest.fixture
def world(app):
    """One of everything a URL can point at, and one person per role."""
    team, other = TeamFactory(), TeamFactory()
    people = {
        "viewer": MembershipFactory(team=team, role="viewer").user,
        "member": MembershipFactory(team=team, role="member").user,
        "maintainer": MembershipFactory(team=team, role="maintainer").user,
        "other_team": MembershipFactory(team=other, role="maintainer").user,
        "reviewer": UserFactory(is_reviewer=True),
        "admin": UserFactory(is_admin=True),
    }
    outsider, maintainer = UserFactory(), people["maintainer"]
    service = ServiceFactory(team=team)
    catalog.sync()
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"), maintainer)
    for key in (ITEM, WAIVED):
        assessments.record_answer(assessment, key, "not_met", "", maintainer)
    evidence = assessments.add_evidence(assessment, ITEM, "https://wiki.example.test/", "Wiki", maintainer)
    waiver = assessments.request_waiver(assessment, WAIVED, "Soon", "Watched", maintainer,
                                        utcnow().date() + timedelta(days=30), maintainer)
    newer = catalog._store(parse_checklist(_newer_text(), "production-readiness-1.1.yaml"))
    probe_run = runs.start_run(service, "schedule")
    result = runs.store_result(probe_run, CheckResult("health", "https://svc.example.test/healthz", "pass", "Healthy."))
    runs.finish_run(probe_run)
    invitation, token = accounts.create_invitation("invited@example.test", people["admin"])
    first = runbooks.save_revision(service, "# Runbook\n\nRestart it.", maintainer, based_on_id=None)
    runbook = runbooks.save_revision(service, "# Runbook\n\nRestart it once.", maintainer, based_on_id=first.id)
    api_token, _ = tokens.create_token(maintainer, "ci", ["read"], 30, team=team)
    # A sign-off condition and a stored report, for the review and report routes.
    signoff = SignOff(assessment=assessment, signer_id=maintainer.id, role="owner", decision="reject",
                      comment="Earlier round", review_round=0)
    condition = Condition(signoff=signoff, assessment_id=assessment.id, service_id=service.id,
                          text="Add alerts", owner_id=people["member"].id, due_on=utcnow().date())
    report = Report(assessment_id=assessment.id, pdf=b"%PDF-1.7 stored", sha256="ab" * 32, snapshot="{}")
    db.session.add_all([signoff, condition, report])
    db.session.commit()
    ids = {"token_id": api_token.id, "team_id": team.id, "service_id": service.id, "assessment_id": assessment.id, "item_key": ITEM,
           "evidence_id": evidence.id, "waiver_id": waiver.id, "user_id": people["viewer"].id,
           "run_id": probe_run.id, "result_id": result.id, "slug": "production-readiness", "token": token,
           "newer_version_id": newer.id, "other_version_id": catalog.latest_version("design-for-production").id,
           "revision_id": runbook.id, "condition_id": condition.id,
           "report_id": report.id, "report_sha256": report.sha256, "maintainer_id": maintainer.id, "admin_email": people["admin"].email,
           "outsider_email": outsider.email, "outsider_id": outsider.id, "invited_email": invitation.email,
           "in_a_month": (utcnow().date() + timedelta(days=30)).isoformat(), "key": "pdf_export"}
    return people, ids


def _newer_text() -> str:
    """The shipped production-readiness checklist as a version 1.1.0, for the upgrade routes."""
    path = f"{catalog.checklist_dirs()[0]}/production-readiness.yaml"
    with open(path, encoding="utf-8") as handle:
        return handle.read().replace('version: "1.0.0"', 'version: "1.1.0"', 1)


def _url(app, endpoint: str, ids: dict) -> str:
    rule = next(app.url_map.iter_rules(endpoint))
    unknown = rule.arguments - ids.keys()
    assert not unknown, f"the world fixture has no value for {sorted(unknown)} ({endpoint}): add one"
    with app.test_request_context():
        return url_for(endpoint, **{name: ids[name] for name in rule.arguments})


def _flashes(client) -> list[tuple[str, str]]:
    with client.session_transaction() as session:
        return list(session.get("_flashes", []))


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("endpoint", "method"), CASES, ids=[f"{m} {e}" for e, m in CASES])
def test_route_permissions(app, world, endpoint, method, role):
    people, ids = world
    rule = MATRIX[endpoint][method]
    client = app.test_client()
    if role != "anonymous":
        # Signed in through the session (as FlaskLoginClient does), not the form: 330 scrypt
        # checks would double the run time, and tests/test_auth.py covers the real sign-in.
        with client.session_transaction() as session:
            session["_user_id"], session["_fresh"] = people[role].get_id(), True
    data = {name: value.format(**ids) for name, value in rule.data.items()}
    response = client.open(_url(app, endpoint, ids), method=method, data=data)
    flashed = _flashes(client)
    got = f"{role}: {method} {endpoint} answered {response.status_code} {response.headers.get('Location', '')}"
    db.session.expire_all()
    if role in rule.allowed:
        assert response.status_code == rule.status, f"{got}, expected {rule.status}"
        if response.status_code == 302:
            assert "/login" not in response.headers["Location"] or endpoint == "auth.logout", got
        errors = [message for category, message in flashed if category == "error"]
        assert not errors, f"{got} with the form refused: {errors}"
        assert rule.done is None or rule.done(ids), f"{got} but the change is not in the database"
    else:
        if role == "anonymous":
            assert response.status_code == 302 and "/login" in response.headers["Location"], got
        else:
            assert response.status_code == 403, f"{got}, expected 403"
        assert rule.done is None or not rule.done(ids), f"{got}, refused, yet the change is in the database"


@pytest.mark.parametrize("url", ["/teams/999999", "/services/999999", "/assessments/999999",
                                 "/teams/999999/services/new", "/services/999999/edit",
                                 "/services/999999/probes", "/probe-results/999999", "/waivers/999999/decide",
                                 "/evidence/999999/remove"])
def test_unknown_ids_are_404(client, auth, world, url):
    people, _ = world
    auth.login(people["admin"])
    method = "POST" if url.endswith(("decide", "remove")) else "GET"
    assert client.open(url, method=method).status_code == 404


def test_ids_too_large_for_the_database_are_404_on_every_route(app, client, auth, world):
    """A number past the integer columns' range matches no route, never a 500
    (SQLite overflowed past 2**63; PostgreSQL's integer ends at 2**31 - 1)."""
    people, _ = world
    auth.login(people["admin"])
    checked = 0
    for rule in app.url_map.iter_rules():
        if "int:" not in rule.rule or rule.endpoint.startswith("api."):  # the API's own test covers it
            continue
        for huge in (2**31, 10**25):
            url = re.sub(r"<int:\w+>", str(huge), rule.rule)
            url = re.sub(r"<(?:\w+:)?\w+>", "x", url)
            method = "GET" if "GET" in rule.methods else sorted(rule.methods - {"OPTIONS", "HEAD"})[0]
            # 405 where another rule has the same path for other methods (werkzeug checks the
            # method before the converter): either way no database query, no 500.
            assert client.open(url, method=method).status_code in (404, 405), f"{method} {url}"
            checked += 1
    assert checked > 40

