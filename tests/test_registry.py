"""Teams and services: register, edit, retire, members; bad input is refused and nothing half-written stays."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp.extensions import db
from webapp.models import AuditEvent, Membership, OwnershipChange, Service, Team

GOOD_SERVICE = {"name": "Payments API", "slug": "", "tier": "1", "lifecycle": "launching",
                "owner_id": "", "backup_owner_id": "", "probe_interval_minutes": "15",
                "health_url": "https://payments.example.test/health"}


@pytest.fixture
def maintainer(auth):
    membership = MembershipFactory(role="maintainer")
    db.session.commit()
    auth.login(membership.user)
    return membership


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_new_user_creates_team_registers_service_and_sees_it(client, auth):
    user = UserFactory()
    db.session.commit()
    auth.login(user)
    response = client.post("/teams/new", data={"name": "Checkout", "description": "Buying things"})
    team = db.session.scalar(select(Team))
    assert response.headers["Location"].endswith(f"/teams/{team.id}")
    assert db.session.scalar(select(Membership.role)) == "maintainer"
    form = client.get(f"/teams/{team.id}/services/new").get_data(as_text=True)
    # Whoever registers a service is offered as its owner: no service starts ownerless by default.
    assert f'<option selected value="{user.id}">' in form
    response = client.post(f"/teams/{team.id}/services/new", data={**GOOD_SERVICE, "owner_id": str(user.id)})
    service = db.session.scalar(select(Service))
    assert response.status_code == 302
    assert service.slug == "payments-api" and service.tier == 1 and service.owner_id == user.id
    assert "Payments API" in client.get("/services").get_data(as_text=True)
    assert "Payments API" in client.get(f"/teams/{team.id}").get_data(as_text=True)
    assert db.session.scalar(select(OwnershipChange)).to_user_id == user.id
    actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"team.create", "service.create"} <= actions


def test_full_width_charts_are_drawn_full_width_so_their_labels_keep_their_size(client, auth):
    from webapp import assessments, catalog, charts

    membership = MembershipFactory(role="maintainer")
    service = ServiceFactory(team=membership.team)
    catalog.sync(force=True)
    assessments.start_assessment(service, catalog.latest_version("production-readiness"), membership.user)
    db.session.commit()
    auth.login(membership.user)
    page = client.get(f"/teams/{membership.team_id}").get_data(as_text=True)
    assert f'viewBox="0 0 {charts.FULL_CARD_CHART_WIDTH} ' in page
    probes = client.get(f"/services/{service.id}/probes").get_data(as_text=True)
    assert f'class="chart uptime-bar" viewBox="0 0 {charts.FULL_CARD_CHART_WIDTH} ' in probes


@pytest.mark.parametrize("field, value, message", [
    ("name", "x" * 81, "longer than 80"),
    ("health_url", "javascript:alert(1)", "full http:// or https:// URL"),
    ("metrics_url", "data:text/html,hi", "full http:// or https:// URL"),
    ("oncall_url", "ftp://example.test/", "full http:// or https:// URL"),
    ("base_url", "https://exa mple.test/", "cannot contain spaces"),
    ("slug", "Bad Slug!", "lower-case letters"),
    ("probe_interval_minutes", "0", "between 1 and 1440"),
    ("tier", "7", "Not a valid choice"),
])
def test_service_bad_input_is_refused_and_nothing_stored(client, maintainer, field, value, message):
    response = client.post(f"/teams/{maintainer.team_id}/services/new", data={**GOOD_SERVICE, field: value})
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert count(Service) == 0


def test_duplicate_slug_in_team_is_refused(client, maintainer):
    ServiceFactory(team=maintainer.team, slug="payments-api")
    db.session.commit()
    response = client.post(f"/teams/{maintainer.team_id}/services/new", data=GOOD_SERVICE)
    assert response.status_code == 400
    assert "already has a service with the slug" in response.get_data(as_text=True)
    assert count(Service) == 1
    assert count(AuditEvent) == 0


def test_same_slug_in_another_team_is_fine(client, maintainer):
    ServiceFactory(slug="payments-api")
    db.session.commit()
    assert client.post(f"/teams/{maintainer.team_id}/services/new", data=GOOD_SERVICE).status_code == 302


def test_edit_service_changes_owner_with_history(client, maintainer):
    service = ServiceFactory(team=maintainer.team)
    first, second = UserFactory(), UserFactory()
    service.owner_id = first.id
    db.session.commit()
    data = {**GOOD_SERVICE, "name": service.name, "slug": service.slug, "owner_id": str(second.id),
            "backup_owner_id": str(first.id)}
    assert client.post(f"/services/{service.id}/edit", data=data).status_code == 302
    changes = db.session.scalars(select(OwnershipChange).order_by(OwnershipChange.id)).all()
    assert [(c.field, c.from_user_id, c.to_user_id) for c in changes] == [
        ("owner", first.id, second.id), ("backup_owner", None, first.id)]
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "service.update"))
    assert event.before["owner_id"] == first.id and event.after["owner_id"] == second.id


def test_owner_and_backup_must_differ(client, maintainer):
    person = UserFactory()
    db.session.commit()
    data = {**GOOD_SERVICE, "owner_id": str(person.id), "backup_owner_id": str(person.id)}
    response = client.post(f"/teams/{maintainer.team_id}/services/new", data=data)
    assert response.status_code == 400
    # Under the backup owner field, not under the slug.
    assert re.search(r'id="backup_owner_id-errors"[^>]*>\s*<li>The backup owner must be someone other',
                     response.get_data(as_text=True))
    assert count(Service) == 0


def test_retire_service(client, maintainer):
    service = ServiceFactory(team=maintainer.team)
    db.session.commit()
    client.post(f"/services/{service.id}/retire", follow_redirects=True)
    db.session.refresh(service)
    assert service.lifecycle == "retired" and service.retired_at is not None
    assert service.name not in client.get("/services").get_data(as_text=True)
    assert service.name in client.get("/services?retired=1").get_data(as_text=True)


def test_duplicate_team_name_and_overlong_name(client, maintainer):
    response = client.post("/teams/new", data={"name": maintainer.team.name})
    assert response.status_code == 400 and "already exists" in response.get_data(as_text=True)
    response = client.post("/teams/new", data={"name": "t" * 81})
    assert response.status_code == 400 and "longer than 80" in response.get_data(as_text=True)
    for spoof in ("Pay\u202eslitam", "Bell\x07"):  # reads backwards; a control character
        response = client.post("/teams/new", data={"name": spoof})
        assert response.status_code == 400 and "Use visible characters only" in response.get_data(as_text=True)
    assert count(Team) == 1
    assert client.post("/teams/new", data={"name": "Data 👩\u200d💻"}).status_code == 302  # a joined emoji is fine


def test_members_roles_and_last_maintainer(client, maintainer):
    newcomer = UserFactory()
    db.session.commit()
    team_id = maintainer.team_id
    client.post(f"/teams/{team_id}/members", data={"email": newcomer.email, "role": "member"})
    assert db.session.scalar(select(Membership.role).where(Membership.user_id == newcomer.id)) == "member"
    # A refused person is said next to the field, which keeps what was typed.
    response = client.post(f"/teams/{team_id}/members", data={"email": "ghost@example.test", "role": "viewer"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "No account uses ghost@example.test" in page
    assert 'value="ghost@example.test"' in page and '<option selected value="viewer">' in page
    for email, message in (("", "This field is required."), ("<script>", "Invalid email address.")):
        response = client.post(f"/teams/{team_id}/members", data={"email": email, "role": "member"})
        assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert 'value="&lt;script&gt;"' in response.get_data(as_text=True)
    response = client.post(f"/teams/{team_id}/members/{maintainer.user_id}/remove", follow_redirects=True)
    assert "at least one maintainer" in response.get_data(as_text=True)
    assert count(Membership) == 2


def test_audit_log_page_lists_changes(client, maintainer):
    client.post(f"/teams/{maintainer.team_id}/services/new", data=GOOD_SERVICE)
    service = db.session.scalar(select(Service))
    page = client.get(f"/services/{service.id}/audit").get_data(as_text=True)
    assert "service.create" in page
