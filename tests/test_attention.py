"""Needs attention (each rule with a frozen clock), the page and its filters, My work, and
constant query counts."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import event

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp import attention, catalog
from webapp.extensions import db
from webapp.models import (
    Answer,
    Assessment,
    Evidence,
    RunbookRevision,
    ServiceCheck,
    Waiver,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
ITEM = "health_checks_configured"


def healthy_service(team=None, owner=None, **fields):
    """A service with nothing to flag: owners, on-call, a recent assessment, a reviewed runbook."""
    owner, backup = owner or UserFactory(), UserFactory()
    service = ServiceFactory(owner=owner, backup_owner=backup, oncall_url="https://oncall.example.test/x",
                             **({"team": team} if team else {}), **fields)
    version = catalog.latest_version("production-readiness")
    assessment = Assessment(service=service, checklist_version=version, created_by_id=owner.id,
                            created_at=NOW - timedelta(days=10))
    db.session.add(assessment)
    db.session.add(RunbookRevision(service_id=service.id, body="# Runbook", author_id=owner.id,
                                   created_at=NOW - timedelta(days=30), reviewed_at=NOW - timedelta(days=5)))
    db.session.flush()
    return service, assessment


def answer(assessment, status="met", key=ITEM) -> Answer:
    row = Answer(assessment_id=assessment.id, item_key=key, status=status, note="", source="manual")
    db.session.add(row)
    db.session.flush()
    return row


@pytest.fixture
def synced(app):
    catalog.sync(force=True)
    db.session.commit()


def kinds_for(service) -> list[str]:
    return sorted(a.kind for a in attention.collect(attention.scope_for(), now=NOW) if a.service_id == service.id)


def test_a_service_in_order_needs_nothing(synced):
    service, _ = healthy_service()
    assert kinds_for(service) == []


def one_of_each_rule() -> dict:
    """A service for each rule, flagged by it alone, by name."""
    failing, _ = healthy_service()
    db.session.add(ServiceCheck(service_id=failing.id, kind="health", outcome="fail",
                                checked_at=NOW, changed_at=NOW - timedelta(hours=3)))
    db.session.add(ServiceCheck(service_id=failing.id, kind="metrics", outcome="pass", checked_at=NOW, changed_at=NOW))

    waived, waived_assessment = healthy_service()
    for key, expires in ((ITEM, NOW.date() + timedelta(days=5)), ("readiness_checks_configured", NOW.date() - timedelta(days=1)),
                         ("structured_logging", NOW.date() + timedelta(days=60))):
        row = answer(waived_assessment, "not_met", key)
        db.session.add(Waiver(answer_id=row.id, reason="r", compensating_control="c", risk_owner_id=waived.owner_id,
                              expires_on=expires, state="approved", requested_by_id=waived.owner_id))

    broken, broken_assessment = healthy_service()
    row = answer(broken_assessment)
    db.session.add_all([Evidence(answer_id=row.id, url="https://x.example.test/a", title="a", check_ok=False,
                                 checked_at=NOW, added_at=NOW - timedelta(days=3)),
                        Evidence(answer_id=row.id, url="https://x.example.test/b", title="b", check_ok=True,
                                 checked_at=NOW, added_at=NOW - timedelta(days=3))])

    unowned, _ = healthy_service()
    unowned.backup_owner_id, unowned.oncall_url = None, None

    stale, stale_assessment = healthy_service()
    stale_assessment.created_at = NOW - timedelta(days=100)

    never = ServiceFactory(owner=UserFactory(), backup_owner=UserFactory(), oncall_url="https://oncall.example.test/y",
                           runbook_url="https://wiki.example.test/rb")

    old_evidence, old_assessment = healthy_service()
    row = answer(old_assessment)
    db.session.add(Evidence(answer_id=row.id, url="https://x.example.test/old", title="old", check_ok=True,
                            added_at=NOW - timedelta(days=200)))
    unanswered = Answer(assessment_id=old_assessment.id, item_key="structured_logging", status=None, note="")
    db.session.add(unanswered)
    db.session.flush()
    db.session.add(Evidence(answer_id=unanswered.id, url="https://x.example.test/u", title="u",
                            added_at=NOW - timedelta(days=200)))  # unanswered: not re-attested, not "not met"

    unreviewed, _ = healthy_service()
    db.session.add(RunbookRevision(service_id=unreviewed.id, body="# v2", author_id=unreviewed.owner_id,
                                   created_at=NOW - timedelta(days=1)))
    db.session.commit()
    return {"failing": failing, "waived": waived, "broken": broken, "unowned": unowned, "stale": stale,
            "never": never, "old_evidence": old_evidence, "unreviewed": unreviewed}


def test_each_rule_flags_what_is_true(synced):
    services = one_of_each_rule()
    failing, waived, broken, unowned = (services[k] for k in ("failing", "waived", "broken", "unowned"))
    stale, never, old_evidence, unreviewed = (services[k] for k in ("stale", "never", "old_evidence", "unreviewed"))

    assert kinds_for(failing) == ["probe_failing"]
    assert kinds_for(waived) == ["waiver_expired", "waiver_expiring"]
    problems = [a.problem for a in attention.collect(attention.scope_for(), now=NOW) if a.service_id == waived.id]
    # Items by their titles; a key no checklist has (readiness_checks_configured) by its words.
    assert sorted(p.split("”")[0] for p in problems) == ["The waiver for “Health checks configured",
                                                          "The waiver for “readiness checks configured"]
    assert kinds_for(broken) == ["evidence_broken"]
    assert kinds_for(unowned) == ["ownership"]
    assert kinds_for(stale) == ["assessment_stale"]
    assert kinds_for(never) == ["assessment_stale"]  # linked runbook: no runbook row for it
    assert kinds_for(old_evidence) == ["evidence_stale"]
    assert kinds_for(unreviewed) == ["runbook"]

    found = {a.service_id: a for a in attention.collect(attention.scope_for(), now=NOW)}
    assert "health" in found[failing.id].problem and "metrics" not in found[failing.id].problem
    assert found[unowned.id].problem == "No backup owner, no on-call rotation."
    assert "1 evidence link" in found[old_evidence.id].problem
    assert found[never.id].problem == "Never assessed."
    # The newest assessment's date, looked up for the services the rule lists.
    assert found[stale.id].problem == f"Last assessed {NOW - timedelta(days=100):%Y-%m-%d}, more than 90 days ago."
    assert found[stale.id].since == NOW - timedelta(days=100)


def listed_per_service() -> Counter:
    """How many rows the needs-attention list has per service."""
    return Counter(a.service_id for a in attention.collect(attention.scope_for(), now=NOW))


def test_the_dashboard_statement_counts_what_the_list_shows(synced):
    services = one_of_each_rule()
    calm, _ = healthy_service()
    db.session.commit()
    listed = listed_per_service()
    assert set(listed) == {s.id for s in services.values()} and calm.id not in listed
    assert listed[services["waived"].id] == 2  # one expired, one expiring
    assert attention.item_counts(None, now=NOW) == dict(listed)
    assert attention.item_counts([services["waived"].id, calm.id], now=NOW) == {services["waived"].id: 2}


def test_item_reattest_days_shortens_the_period(synced, tmp_path, app):
    service, assessment = healthy_service()
    row = answer(assessment)
    db.session.add(Evidence(answer_id=row.id, url="https://x.example.test/a", title="a",
                            added_at=NOW - timedelta(days=40)))
    db.session.commit()
    assert kinds_for(service) == []
    assert attention.item_counts([service.id], now=NOW) == {}
    checklist = catalog.checklist_of(assessment.checklist_version)
    item = checklist.item(ITEM)
    object.__setattr__(item, "reattest_days", 30)  # as if the file said reattest_days: 30
    try:
        assert kinds_for(service) == ["evidence_stale"]
        assert attention.item_counts([service.id], now=NOW) == {service.id: 1}
    finally:
        object.__setattr__(item, "reattest_days", None)


def test_page_filters_and_links(client, auth, synced):
    member = MembershipFactory(role="member")
    mine, _ = healthy_service(team=member.team)
    mine.oncall_url = None
    other, _ = healthy_service()
    other.owner_id = None
    db.session.commit()
    auth.login(member.user)
    page = client.get("/attention").get_data(as_text=True)
    assert mine.name in page and other.name in page and "No on-call rotation." in page
    page = client.get("/attention?mine=1").get_data(as_text=True)
    assert mine.name in page and other.name not in page
    page = client.get(f"/attention?team={other.team_id}").get_data(as_text=True)
    assert other.name in page and mine.name not in page
    page = client.get("/attention?kind=probe_failing").get_data(as_text=True)
    assert "Nothing needs attention" in page
    assert client.get("/attention?kind=<script>&page=-4").status_code == 200
    assert client.get(f"/services/{mine.id}/edit").status_code == 200  # the ownership row's link works
    # A service or team that does not exist says so, instead of a page of zeros.
    missing = client.get("/attention?service=99999")
    assert missing.status_code == 404 and "no service with id 99999" in missing.get_data(as_text=True)
    assert client.get("/attention?team=99999").status_code == 404


def test_my_work_lists_my_services_waivers_and_reviews(client, auth, synced):
    me = UserFactory(is_reviewer=True)
    mine, assessment = healthy_service()
    mine.owner_id = me.id
    row = answer(assessment, "not_met")
    requester = UserFactory()
    db.session.add_all([
        Waiver(answer_id=row.id, reason="r", compensating_control="c", risk_owner_id=me.id,
               expires_on=date(2027, 1, 1), requested_by_id=requester.id),
    ])
    other_row = answer(assessment, "not_met", "structured_logging")
    db.session.add(Waiver(answer_id=other_row.id, reason="r", compensating_control="c", risk_owner_id=me.id,
                          expires_on=date(2027, 1, 1), requested_by_id=me.id))
    assessment.state = "in_review"
    db.session.commit()
    auth.login(me)
    page = client.get("/my-work").get_data(as_text=True)
    assert mine.name in page and "Owner" in page
    decide = page.split("Waivers waiting for my decision")[1].split("My waiver requests")[0]
    # Items by their titles, each link opening the item where Approve and Decline are.
    assert "Health checks configured" in decide and "Structured logging" not in decide  # never my own
    assert f'open=health_checks_configured#item-health_checks_configured">{mine.name}: Health checks' in decide
    mine_requests = page.split("My waiver requests")[1].split("Assessments in review")[0]
    assert "Structured logging (JSON)" in mine_requests
    assert "submitted" in page.split("Assessments in review")[1]


def _queries(client, url: str) -> int:
    statements = []

    def count(*_args):
        statements.append(1)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        assert client.get(url).status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    return len(statements)


def test_query_counts_do_not_grow_with_services(client, auth, synced):
    me = UserFactory()
    db.session.commit()
    auth.login(me)

    def add(n):
        for _ in range(n):
            service, assessment = healthy_service(owner=me)
            service.oncall_url = None
            db.session.add(ServiceCheck(service_id=service.id, kind="health", outcome="fail",
                                        checked_at=NOW, changed_at=NOW))
            row = answer(assessment)
            db.session.add(Evidence(answer_id=row.id, url="https://x.example.test/a", title="a", check_ok=False))
        db.session.commit()

    add(10)
    small = (_queries(client, "/attention"), _queries(client, "/my-work"))
    add(190)
    large = (_queries(client, "/attention"), _queries(client, "/my-work"))
    assert small == large, (small, large)
    assert large[0] <= 15 and large[1] <= 20


def test_overdue_sign_off_conditions_need_attention(synced):
    from webapp.models import Condition, SignOff

    service, assessment = healthy_service()
    signoff = SignOff(assessment_id=assessment.id, signer_id=service.owner_id, role="sre",
                      decision="approve_with_conditions")
    db.session.add(signoff)
    db.session.flush()
    for text, due, done in (("Add a second region", NOW.date() - timedelta(days=3), None),
                            ("Rotate keys", NOW.date() + timedelta(days=3), None),
                            ("Load test", NOW.date() - timedelta(days=9), NOW)):
        db.session.add(Condition(signoff_id=signoff.id, assessment_id=assessment.id, service_id=service.id,
                                 text=text, owner_id=service.owner_id, due_on=due, done_at=done))
    db.session.commit()
    assert kinds_for(service) == ["condition_overdue"]
    found = [a for a in attention.collect(attention.scope_for(), now=NOW) if a.kind == "condition_overdue"]
    assert len(found) == 1 and "Add a second region" in found[0].problem


# The dashboard's "Needs attention" filter, with the rules' clock stopped ---------------------

@pytest.fixture
def clock(monkeypatch):
    """The attention rules' clock, stopped at NOW; `clock(moment)` moves it."""
    def set_to(moment):
        monkeypatch.setattr(attention, "utcnow", lambda: moment)
    set_to(NOW)
    return set_to


def test_dashboard_filter_needs_attention_follows_the_rules_and_keeps_its_state(client, auth, synced, clock):
    member = MembershipFactory(role="member")
    team = member.team
    calm, _ = healthy_service(team=team, name="Calm api")
    failing, _ = healthy_service(team=team, name="Failing api")
    db.session.add(ServiceCheck(service_id=failing.id, kind="health", outcome="fail", checked_at=NOW, changed_at=NOW))
    unowned, _ = healthy_service(team=team, name="Unowned api")
    unowned.oncall_url = None
    db.session.add(ServiceCheck(service_id=unowned.id, kind="health", outcome="error", checked_at=NOW, changed_at=NOW))
    _, ageing_assessment = healthy_service(team=team, name="Ageing api")
    ageing_assessment.created_at = NOW - timedelta(days=89)  # out of date two days from now
    retired, _ = healthy_service(team=team, name="Retired api", lifecycle="retired")
    retired.oncall_url = None
    db.session.commit()
    auth.login(member.user)

    def shown(url: str) -> list[str]:
        page = client.get(url).get_data(as_text=True)
        names = ("Calm api", "Failing api", "Unowned api", "Ageing api", "Retired api")
        return sorted((name for name in names if f">{name}</a>" in page), key=lambda name: page.index(f">{name}</a>"))

    assert shown("/") == ["Ageing api", "Calm api", "Failing api", "Unowned api"]
    assert "To do</th>" not in client.get("/").get_data(as_text=True)  # counted only when filtering by it
    assert shown("/?attention=1") == ["Failing api", "Unowned api"]
    assert shown("/?attention=1&lifecycle=all") == ["Failing api", "Unowned api"]  # retired: never on the list
    clock(NOW + timedelta(days=2))
    assert shown("/?attention=1") == ["Ageing api", "Failing api", "Unowned api"]
    clock(NOW)

    page = client.get("/?attention=1&sort=score&dir=asc").get_data(as_text=True)
    assert 'name="attention" value="1" checked' in page
    assert f'href="/attention?service={unowned.id}"' in page and "⚑</span> 2</a>" in page  # probe and on-call
    assert f'href="/attention?service={calm.id}"' not in page
    assert 'href="/?attention=1&amp;sort=team"' in page  # a heading keeps the filter
    assert 'href="/dashboard.csv?attention=1&amp;sort=score&amp;dir=asc"' in page
    assert 'href="/dashboard.json?attention=1&amp;sort=score&amp;dir=asc"' in page
    summary = page.split('aria-label="Summary"')[1].split("</section>")[0]
    assert '<span class="dash-tile-count">2</span>' in summary  # tiles count the filtered services

    rows = list(csv.DictReader(io.StringIO(client.get("/dashboard.csv?attention=1").get_data().decode("utf-8-sig"))))
    assert [(r["service"], r["attention_items"]) for r in rows] == [("Failing api", "1"), ("Unowned api", "2")]
    data = client.get("/dashboard.json").get_json()
    assert {s["service"]["name"]: s["attention_items"] for s in data["services"]} == {
        "Ageing api": 0, "Calm api": 0, "Failing api": 1, "Unowned api": 2}

    listed = client.get(f"/attention?service={unowned.id}").get_data(as_text=True)
    assert "Needs attention: Unowned api" in listed and "No on-call rotation." in listed
    assert "Failing api" not in listed and f'name="service" value="{unowned.id}"' in listed


def test_needs_attention_pages_keep_the_filter(client, auth, synced, clock):
    me = UserFactory()
    for number in range(55):
        ServiceFactory(name=f"svc {number:02d}")  # no owner, never assessed
    healthy_service(name="svc calm")
    db.session.commit()
    auth.login(me)
    page = client.get("/?attention=1&page=2").get_data(as_text=True)
    assert "51–55 of 55 services" in page and ">svc calm</a>" not in page
    assert 'href="/?attention=1"' in page  # back to page 1, still filtered
    first = client.get("/?attention=1").get_data(as_text=True)
    assert 'href="/?attention=1&amp;page=2"' in first


def test_statements_are_kept_per_shape_of_scope_and_each_scope_gets_its_own_rows(synced):
    first, _ = healthy_service()
    second, _ = healthy_service()
    first.oncall_url = second.oncall_url = None  # each has one thing to do
    db.session.commit()
    attention._collect_statements.cache_clear()

    def services_of(scope) -> set[int]:
        return {a.service_id for a in attention.collect(scope, now=NOW)}

    assert services_of(attention.scope_for(team_id=first.team_id)) == {first.id}
    assert services_of(attention.scope_for(team_id=second.team_id)) == {second.id}  # not the first's rows
    assert services_of(attention.scope_for(user=second.owner)) == {second.id}
    assert services_of(attention.scope_for(service_ids=[first.id, second.id])) == {first.id, second.id}
    assert services_of(attention.scope_for()) >= {first.id, second.id}
    info = attention._collect_statements.cache_info()
    assert (info.misses, info.hits) == (4, 1)  # team, user, services, all: built once each
