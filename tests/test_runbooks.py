"""Runbooks: every revision kept, readable diffs, review stamps, conflicts, permissions, and the
`runbook_present` rule."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp import runbooks
from webapp.extensions import db
from webapp.models import AuditEvent, RunbookRevision, Service

FIRST = "# Payments runbook\n\nRestart with `kubectl rollout restart`.\n\nPage the payments team."
SECOND = "# Payments runbook\n\nRestart with `kubectl rollout restart deploy/payments`.\n\nPage the payments team."


@pytest.fixture
def editor(auth):
    membership = MembershipFactory(role="member")
    service = ServiceFactory(team=membership.team)
    db.session.commit()
    auth.login(membership.user)
    return membership.user, service


def revision_count() -> int:
    return db.session.scalar(select(func.count()).select_from(RunbookRevision))


def edit_url(service: Service) -> str:
    return f"/services/{service.id}/runbook/edit"


def test_write_edit_and_keep_every_revision(client, editor):
    user, service = editor
    assert "No runbook yet" in client.get(f"/services/{service.id}/runbook").get_data(as_text=True)
    assert client.post(edit_url(service), data={"body": FIRST, "based_on": ""}).status_code == 302
    first = db.session.scalar(select(RunbookRevision))
    assert first.body == FIRST and first.author_id == user.id and "<h1>Payments runbook</h1>" in first.body_html
    # Saving the same text again adds no empty revision.
    client.post(edit_url(service), data={"body": FIRST, "based_on": str(first.id)})
    assert revision_count() == 1
    assert client.post(edit_url(service), data={"body": SECOND, "based_on": str(first.id)}).status_code == 302
    assert revision_count() == 2
    page = client.get(f"/services/{service.id}/runbook").get_data(as_text=True)
    assert "deploy/payments" in page and "Nobody has marked this runbook reviewed yet" in page
    old = client.get(f"/services/{service.id}/runbook/revisions/{first.id}").get_data(as_text=True)
    assert "deploy/payments" not in old and "rollout restart" in old
    actions = db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions == ["runbook.edit", "runbook.edit"]


def test_diff_shows_removed_and_added_lines(client, editor):
    _, service = editor
    client.post(edit_url(service), data={"body": FIRST, "based_on": ""})
    first = db.session.scalar(select(RunbookRevision))
    client.post(edit_url(service), data={"body": SECOND, "based_on": str(first.id)})
    page = client.get(f"/services/{service.id}/runbook/diff").get_data(as_text=True)
    assert 'class="diff-remove"' in page and 'class="diff-add"' in page
    # Numbered, so two revisions saved in the same minute by one person can be told apart.
    assert "From revision 1 (" in page and "to revision 2 (" in page
    assert re.search(r'<option value="\d+" selected>#1 · ', page) and re.search(r'<option value="\d+" selected>#2 · ', page)
    assert "Restart with `kubectl rollout restart deploy/payments`." in page.replace("&#96;", "`")
    lines = runbooks.diff(*reversed(runbooks.revisions(service)))
    assert [(line.kind, line.text) for line in lines if line.kind in ("add", "remove")] == [
        ("remove", "Restart with `kubectl rollout restart`."),
        ("add", "Restart with `kubectl rollout restart deploy/payments`."),
    ]


def test_a_newer_save_meanwhile_is_a_conflict_that_keeps_your_text(app, client, editor):
    _user, service = editor
    client.post(edit_url(service), data={"body": FIRST, "based_on": ""})
    first = db.session.scalar(select(RunbookRevision))
    colleague = MembershipFactory(team=service.team, role="member").user
    db.session.commit()
    other = app.test_client()
    other.post("/login", data={"email": colleague.email, "password": "correct horse battery"})
    # Both opened the editor on the first revision; the colleague saves first.
    assert other.post(edit_url(service), data={"body": SECOND, "based_on": str(first.id)}).status_code == 302
    response = client.post(edit_url(service), data={"body": FIRST + "\n\nMine.", "based_on": str(first.id)})
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "saved a newer revision" in page and "Mine." in page and "deploy/payments" in page
    assert revision_count() == 2


def test_mark_reviewed_stamps_the_current_revision(client, editor):
    user, service = editor
    response = client.post(f"/services/{service.id}/runbook/review")
    assert response.status_code == 302 and revision_count() == 0
    client.post(edit_url(service), data={"body": FIRST, "based_on": ""})
    client.post(f"/services/{service.id}/runbook/review")
    revision = db.session.scalar(select(RunbookRevision))
    assert revision.reviewed_at is not None and revision.reviewed_by_id == user.id
    assert "Nobody has marked" not in client.get(f"/services/{service.id}/runbook").get_data(as_text=True)


def test_every_runbook_change_makes_the_service_due_so_the_next_sweep_rechecks_it(client, editor):
    _, service = editor

    def push_schedule_out():
        db.session.execute(db.update(Service).values(next_probe_at=datetime.now(UTC) + timedelta(hours=1)))
        db.session.commit()

    def due() -> bool:
        db.session.expire_all()
        return db.session.get(Service, service.id).next_probe_at <= datetime.now(UTC)

    push_schedule_out()
    client.post(edit_url(service), data={"body": FIRST, "based_on": ""})
    assert due()
    push_schedule_out()
    client.post(f"/services/{service.id}/runbook/review")
    assert due()
    push_schedule_out()
    client.post(f"/services/{service.id}/runbook/link", data={"link-runbook_url": "https://wiki.example.com/rb"})
    assert due()


def test_external_link_is_validated(client, editor):
    _, service = editor
    response = client.post(f"/services/{service.id}/runbook/link", data={"link-runbook_url": "javascript:alert(1)"})
    assert response.status_code == 400 and "http" in response.get_data(as_text=True)
    assert db.session.get(Service, service.id).runbook_url is None
    client.post(f"/services/{service.id}/runbook/link", data={"link-runbook_url": "https://wiki.example.test/payments"})
    assert db.session.get(Service, service.id).runbook_url == "https://wiki.example.test/payments"


def test_markup_in_a_runbook_is_inert(client, editor):
    _, service = editor
    client.post(edit_url(service), data={"body": "<script>alert(1)</script> [x](javascript:alert(2))",
                                         "based_on": ""})
    page = client.get(f"/services/{service.id}/runbook").get_data(as_text=True)
    assert "<script>alert(1)" not in page and 'href="javascript:' not in page


def test_oversized_and_empty_runbooks_are_refused(client, editor):
    _, service = editor
    response = client.post(edit_url(service), data={"body": "   ", "based_on": ""})
    assert response.status_code == 400 and "empty" in response.get_data(as_text=True)
    response = client.post(edit_url(service), data={"body": "x" * (runbooks.MAX_RUNBOOK_CHARS + 1), "based_on": ""})
    assert response.status_code == 400
    assert revision_count() == 0


def test_viewers_and_outsiders_read_but_cannot_edit(client, auth):
    service = ServiceFactory()
    viewer = MembershipFactory(team=service.team, role="viewer").user
    db.session.commit()
    auth.login(viewer)
    assert client.get(f"/services/{service.id}/runbook").status_code == 200
    assert client.get(edit_url(service)).status_code == 403
    assert client.post(edit_url(service), data={"body": FIRST}).status_code == 403
    assert client.post(f"/services/{service.id}/runbook/review").status_code == 403
    assert client.post(f"/services/{service.id}/runbook/link", data={"link-runbook_url": ""}).status_code == 403
    assert revision_count() == 0


def test_a_revision_of_another_service_is_not_found(client, editor):
    _, service = editor
    other = ServiceFactory()
    db.session.add(RunbookRevision(service_id=other.id, body="theirs", author_id=UserFactory().id))
    db.session.commit()
    theirs = db.session.scalar(select(RunbookRevision))
    assert client.get(f"/services/{service.id}/runbook/revisions/{theirs.id}").status_code == 404


NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(("reviewed_days_ago", "link", "link_outcome", "expected"), [
    (None, None, None, "fail"),           # nothing at all
    ("never", None, None, "warn"),        # written, never reviewed
    (10, None, None, "pass"),             # reviewed recently
    (200, None, None, "warn"),            # review older than REVIEW_EVERY_DAYS
    (None, "https://wiki.example.test/rb", "pass", "pass"),
    (None, "https://wiki.example.test/rb", "fail", "fail"),
    (None, "https://wiki.example.test/rb", None, "warn"),
])
def test_runbook_present_rule(reviewed_days_ago, link, link_outcome, expected):
    service = Service(name="s", slug="s", runbook_url=link)
    revision = None
    if reviewed_days_ago is not None:
        reviewed = None if reviewed_days_ago == "never" else NOW - timedelta(days=reviewed_days_ago)
        revision = RunbookRevision(body="# How to run it", reviewed_at=reviewed)
    outcome, explanation = runbooks.presence(service, revision, link_outcome, now=NOW)
    assert outcome == expected and explanation
