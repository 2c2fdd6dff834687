"""Forms that refuse what can never work, and say why: probe URLs the probe policy always
refuses, names that make no address, a second invitation; one's own name; compare choices."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.factories import MembershipFactory, UserFactory
from webapp import accounts, assessments, catalog
from webapp.extensions import db
from webapp.models import Evidence, Invitation, Service, Team, User


@pytest.fixture
def maintainer(auth):
    membership = MembershipFactory(role="maintainer")
    db.session.commit()
    auth.login(membership.user)
    return membership


def register(client, team, **fields):
    data = {"name": "Ledger API", "tier": "2", "lifecycle": "live", "owner_id": "", "backup_owner_id": "",
            "probe_interval_minutes": "15"}
    data.update(fields)
    return client.post(f"/teams/{team.id}/services/new", data=data)


@pytest.mark.parametrize("url, why", [
    ("http://169.254.169.254/latest/meta-data/", "link-local address"),
    ("http://[fe80::1]/health", "link-local address"),
    ("http://[::ffff:169.254.169.254]/", "link-local address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata hostname"),
    ("http://100.100.100.200/", "cloud metadata / platform service address"),
    ("http://0.0.0.0:8080/health", "unspecified address"),
])
def test_a_probe_url_the_policy_always_refuses_is_refused_at_the_form(client, maintainer, url, why):
    response = register(client, maintainer.team, health_url=url)
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "Probes never fetch this address" in text and why in text
    assert db.session.scalar(select(func.count()).select_from(Service)) == 0


@pytest.mark.parametrize("field, url, why", [
    ("health_url", "http://127.0.0.1:99999/healthz", "port is a number from 1 to 65535"),
    ("metrics_url", "http://127.0.0.1:0/metrics", "port is a number from 1 to 65535"),
    ("base_url", "http://[::1/", "malformed"),
    ("readiness_url", "http://user:s3cret@ledger.example/readyz", "cannot carry a user name or password"),
    ("oncall_url", "https://ops:hunter2@oncall.example/rota", "cannot carry a user name or password"),
])
def test_a_url_no_probe_or_person_can_use_is_refused_and_its_secret_is_not_kept(client, maintainer, field, url, why):
    response = register(client, maintainer.team, **{field: url})
    assert response.status_code == 400 and why in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Service)) == 0


def test_evidence_and_runbook_links_refuse_what_probes_never_fetch(client, maintainer):
    """Link checks fetch evidence and the external runbook: the same addresses are refused."""
    assert register(client, maintainer.team).status_code == 302
    service = db.session.scalar(select(Service))
    response = client.post(f"/services/{service.id}/runbook/link",
                           data={"link-runbook_url": "http://169.254.169.254/latest/meta-data/"})
    assert response.status_code == 400 and "Probes never fetch this address" in response.get_data(as_text=True)
    catalog.sync(force=True)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"),
                                              maintainer.user)
    db.session.commit()
    response = client.post(f"/assessments/{assessment.id}/items/structured_logging/evidence",
                           data={"url": "http://metadata.google.internal/computeMetadata/v1/", "title": "x"},
                           headers={"HX-Request": "true"})
    assert "Probes never fetch this address" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Evidence)) == 0


def test_private_and_named_probe_urls_are_left_to_the_probe(client, maintainer):
    # A private address may be allowed by PROBE_ALLOW_NETWORKS; a name is resolved by the probe.
    response = register(client, maintainer.team, health_url="http://10.1.2.3/health",
                        base_url="https://ledger.internal.example/")
    assert response.status_code == 302
    assert db.session.scalar(select(Service.health_url)) == "http://10.1.2.3/health"


def test_an_emoji_only_name_gets_a_spelt_out_slug(client, maintainer):
    assert register(client, maintainer.team, name="🚀🚀").status_code == 302
    assert db.session.scalar(select(Service.slug)) == "rocket-rocket"
    assert client.post("/teams/new", data={"name": "🛰️"}).status_code == 302
    assert db.session.scalar(select(Team.slug).where(Team.name == "🛰️")) == "satellite"


def test_a_name_with_nothing_to_make_a_slug_from_asks_for_one(client, maintainer):
    response = register(client, maintainer.team, name="\u200b\u200b")
    assert response.status_code == 400 and "enter a slug" in response.get_data(as_text=True)
    assert register(client, maintainer.team, name="\u200b\u200b", slug="zero-width").status_code == 302


def test_inviting_an_address_with_an_open_invitation_says_so(client, auth):
    admin = UserFactory(is_admin=True)
    db.session.commit()
    auth.login(admin)
    first = client.post("/admin/users", data={"email": "new@example.test"})
    page = first.get_data(as_text=True)
    assert first.status_code == 200 and "/invite/" in page
    assert 'value="new@example.test"' not in page  # the form is empty again after success
    second = client.post("/admin/users", data={"email": "NEW@example.test"})
    assert second.status_code == 400
    assert "already has an open invitation" in second.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Invitation)) == 1


def test_a_person_edits_their_own_name(client, auth):
    user = UserFactory(name="Old Name")
    db.session.commit()
    auth.login(user)
    assert "Old Name" in client.get("/account/profile").get_data(as_text=True)
    assert client.post("/account/profile", data={"name": "  "}).status_code == 400
    long_name = "N" * 120
    assert client.post("/account/profile", data={"name": long_name}).status_code == 302
    db.session.expire_all()
    assert db.session.get(User, user.id).name == long_name
    assert client.post("/account/profile", data={"name": "N" * 121}).status_code == 400


def test_compare_choices_tell_assessments_apart_and_changes_only(client, maintainer):
    from tests.factories import ServiceFactory

    service = ServiceFactory(team=maintainer.team)
    catalog.sync(force=True)
    version = catalog.latest_version("production-readiness")
    first = assessments.start_assessment(service, version, maintainer.user)
    assessments.record_answer(first, "structured_logging", "not_met", "", maintainer.user)
    first.state = "signed_off"
    db.session.commit()
    second = assessments.start_assessment(service, version, maintainer.user, copy_from=first)
    assessments.record_answer(second, "structured_logging", "met", "", maintainer.user)
    db.session.commit()
    page = client.get(f"/services/{service.id}/compare?a={first.id}&b={second.id}").get_data(as_text=True)
    labels = [part.split("</option>")[0].split(">", 1)[1] for part in page.split("<option")[1:]]
    assert len(labels) == 4 and len(set(labels)) == 2  # two selects; two choices a person can tell apart
    assert all(maintainer.user.name in label for label in labels)
    assert f"#{first.id} " in labels[0] + labels[1] and "signed off" in " ".join(labels)
    everything = page.count("<tr")
    changes = client.get(f"/services/{service.id}/compare?a={first.id}&b={second.id}&changes=1").get_data(as_text=True)
    assert changes.count("<tr") == 2  # the header and the one changed item
    assert everything > 40 and "Structured logging" in changes and "Show every item" in changes


def test_accounts_rename_is_audited(app):
    user = accounts.create_user("x@example.test", "X", "a long password")
    accounts.rename_user(user, "Y", user)
    db.session.commit()
    assert db.session.get(User, user.id).name == "Y"
