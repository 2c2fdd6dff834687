"""Owner history and handing a leaver's services over."""

from __future__ import annotations

from sqlalchemy import select

from tests.factories import ServiceFactory, UserFactory
from webapp.extensions import db
from webapp.models import AuditEvent, OwnershipChange, Service, User


def test_offboarding_lists_hands_over_and_disables(client, auth):
    admin, leaver, heir, backup = UserFactory(is_admin=True), UserFactory(), UserFactory(), UserFactory()
    owned = ServiceFactory(owner=leaver, backup_owner=backup)
    backed = ServiceFactory(owner=heir, backup_owner=leaver)  # the heir owns it already
    swapped = ServiceFactory(owner=leaver, backup_owner=heir)  # the heir becomes owner: no backup left
    untouched = ServiceFactory(owner=backup)
    retired = ServiceFactory(owner=leaver, lifecycle="retired")
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/users/{leaver.id}/offboard").get_data(as_text=True)
    assert owned.name in page and backed.name in page and swapped.name in page
    assert untouched.name not in page and retired.name not in page
    response = client.post(f"/users/{leaver.id}/offboard",
                           data={"new_owner_id": str(heir.id), "new_backup_id": str(backup.id), "disable": "y"})
    assert response.status_code == 302
    get = lambda s: db.session.get(Service, s.id)  # noqa: E731
    assert (get(owned).owner_id, get(owned).backup_owner_id) == (heir.id, backup.id)
    assert (get(backed).owner_id, get(backed).backup_owner_id) == (heir.id, backup.id)
    assert (get(swapped).owner_id, get(swapped).backup_owner_id) == (heir.id, None)
    assert get(retired).owner_id == leaver.id
    assert db.session.get(User, leaver.id).disabled_at is not None
    changes = db.session.scalars(select(OwnershipChange).where(OwnershipChange.service_id == swapped.id)).all()
    assert sorted((c.field, c.from_user_id, c.to_user_id) for c in changes) == [
        ("backup_owner", heir.id, None), ("owner", leaver.id, heir.id)]
    assert {e.action for e in db.session.scalars(select(AuditEvent))} >= {"service.hand_over", "user.disable"}
    history = client.get(f"/services/{swapped.id}/owners").get_data(as_text=True)
    assert leaver.name in history and heir.name in history


def test_handing_over_to_nobody_says_the_services_lost_their_owner(client, auth):
    admin, leaver = UserFactory(is_admin=True), UserFactory()
    service = ServiceFactory(owner=leaver)
    db.session.commit()
    auth.login(admin)
    page = client.post(f"/users/{leaver.id}/offboard", data={"new_owner_id": "0", "new_backup_id": "0"},
                       follow_redirects=True).get_data(as_text=True)
    assert "1 service handed over; 1 now has no owner." in page
    assert db.session.get(Service, service.id).owner_id is None
    page = client.post(f"/users/{leaver.id}/offboard", data={"new_owner_id": "0", "new_backup_id": "0"},
                       follow_redirects=True).get_data(as_text=True)
    assert "Nothing to hand over." in page and "0 services" not in page


def test_hand_over_to_the_leaver_or_a_disabled_person_is_refused(client, auth):
    admin, leaver = UserFactory(is_admin=True), UserFactory()
    gone = UserFactory()
    service = ServiceFactory(owner=leaver)
    db.session.commit()
    auth.login(admin)
    response = client.post(f"/users/{leaver.id}/offboard", data={"new_owner_id": str(leaver.id), "new_backup_id": "0"})
    assert response.status_code == 400  # not among the choices
    gone.disabled_at = gone.created_at
    db.session.commit()
    response = client.post(f"/users/{leaver.id}/offboard", data={"new_owner_id": str(gone.id), "new_backup_id": "0"})
    assert response.status_code == 400
    assert db.session.get(Service, service.id).owner_id == leaver.id


def test_only_admins_offboard_and_no_one_disables_themselves(client, auth):
    person, admin = UserFactory(), UserFactory(is_admin=True)
    db.session.commit()
    auth.login(person)
    assert client.get(f"/users/{admin.id}/offboard").status_code == 403
    assert client.post(f"/users/{admin.id}/offboard", data={"new_owner_id": "0", "new_backup_id": "0"}).status_code == 403
    auth.logout()
    auth.login(admin)
    response = client.post(f"/users/{admin.id}/offboard", data={"new_owner_id": "0", "new_backup_id": "0", "disable": "y"})
    assert response.status_code == 400 and "cannot disable your own" in response.get_data(as_text=True)
    assert db.session.get(User, admin.id).disabled_at is None


def test_hand_over_rules_in_the_logic(app):
    import pytest

    from webapp import registry

    admin, leaver, gone = UserFactory(is_admin=True), UserFactory(), UserFactory()
    gone.disabled_at = gone.created_at
    ServiceFactory(owner=leaver)
    with pytest.raises(registry.RegistryError, match="other than the person leaving"):
        registry.hand_over(leaver, leaver, None, admin)
    with pytest.raises(registry.RegistryError, match="disabled"):
        registry.hand_over(leaver, gone, None, admin)
    assert registry.hand_over(leaver, None, None, admin) == 1


def test_timeline_tells_the_story_and_filters_by_kind(client, auth):
    from tests.factories import MembershipFactory

    member = MembershipFactory(role="maintainer")
    service = ServiceFactory(team=member.team)
    db.session.commit()
    auth.login(member.user)
    client.post(f"/services/{service.id}/runbook/edit", data={"body": "# Runbook", "based_on": ""})
    client.post(f"/services/{service.id}/runbook/review")
    client.post(f"/services/{service.id}/runbook/link", data={"link-runbook_url": "https://wiki.example.test/rb"})
    db.session.add(AuditEvent(action="probe.changed", object_type="servicecheck", service_id=service.id,
                              before={"outcome": "pass"}, after={"kind": "health", "outcome": "fail"}))
    db.session.commit()
    page = client.get(f"/services/{service.id}/timeline").get_data(as_text=True)
    assert "Edited the runbook." in page and "Marked the runbook reviewed." in page
    assert "Probe health turned fail (was pass)." in page
    page = client.get(f"/services/{service.id}/timeline?kind=probes").get_data(as_text=True)
    assert "Probe health turned fail" in page and "Edited the runbook." not in page
    assert client.get(f"/services/{service.id}/timeline?kind=nope&page=99").status_code == 200


def test_timeline_names_items_by_their_titles(client, auth):
    from tests.factories import MembershipFactory
    from webapp import assessments, catalog

    member = MembershipFactory(role="maintainer")
    service = ServiceFactory(team=member.team, tier=2)
    catalog.sync(force=True)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"),
                                              member.user)
    db.session.commit()
    auth.login(member.user)
    client.post(f"/assessments/{assessment.id}/items/restore_tested/answer",
                data={"status": "met", "note": "", "version": "0"})
    page = client.get(f"/services/{service.id}/timeline").get_data(as_text=True)
    assert "Answered “Tested restore procedure”: met." in page and "restore tested" not in page


def test_an_admin_offboarding_themselves_is_not_offered_to_disable_their_own_account(client, auth):
    admin, other = UserFactory(is_admin=True), UserFactory(is_admin=True)
    db.session.commit()
    auth.login(admin)
    own = client.get(f"/users/{admin.id}/offboard").get_data(as_text=True)
    assert "Then disable the account" not in own and "only be disabled by another admin" in own
    assert "Then disable the account" in client.get(f"/users/{other.id}/offboard").get_data(as_text=True)
