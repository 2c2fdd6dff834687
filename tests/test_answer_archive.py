"""A checklist upgrade that removes an item archives its answer — history, evidence and
waivers kept and readable — instead of deleting it; archived answers are not scored or
listed, and the item may come back later with a fresh answer."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp import assessments, catalog
from webapp.checklists import parse_checklist
from webapp.extensions import db
from webapp.models import Answer, AnswerChange, Assessment, Evidence, Waiver, utcnow

REMOVED = "log_rotation"


@pytest.fixture
def setup(app):
    membership = MembershipFactory(role="maintainer")
    service = ServiceFactory(team=membership.team, tier=2)
    catalog.sync(force=True)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"),
                                              membership.user)
    db.session.commit()
    return membership.user, assessment


def version_without(item_key: str, version: str):
    text = Path(catalog.checklist_dirs()[0], "production-readiness.yaml").read_text()
    text, removed = re.subn(rf"      - key: {item_key}\n(?:        .*\n|\n)*?(?=      - key: )", "", text)
    assert removed == 1
    stored = catalog._store(parse_checklist(text.replace('version: "1.0.0"', f'version: "{version}"'), "v.yaml"))
    db.session.commit()
    return stored


def test_upgrade_archives_answers_to_removed_items_with_their_history(setup):
    user, assessment = setup
    risk_owner = UserFactory()
    assessments.record_answer(assessment, REMOVED, "not_met", "no rotation yet", user)
    assessments.record_answer(assessment, "structured_logging", "met", "json", user)
    assessments.add_evidence(assessment, REMOVED, "https://wiki.example.test/logs", "plan", user)
    waiver = assessments.request_waiver(assessment, REMOVED, "disk is huge", "alert at 80%", risk_owner,
                                        utcnow().date() + timedelta(days=30), user)
    db.session.commit()
    removed_id = assessments.answer_for(assessment, REMOVED).id

    assessments.upgrade(assessment, version_without(REMOVED, "1.1.0"), user)
    db.session.commit()
    db.session.expire_all()

    assessment = db.session.get(Assessment, assessment.id)
    archived = db.session.get(Answer, removed_id)
    assert archived is not None and archived.archived_at is not None  # kept, not deleted
    assert (archived.status, archived.note) == ("not_met", "no rotation yet")
    assert [c.to_status for c in archived.changes] == ["not_met"]
    assert [e.url for e in archived.evidence] == ["https://wiki.example.test/logs"]
    assert [w.id for w in archived.waivers] == [waiver.id]
    assert [a.id for a in assessment.archived_answers] == [removed_id]
    # Not live: not listed, not scored, not found by key.
    assert REMOVED not in assessments.answers_by_key(assessment)
    assert assessments.answer_for(assessment, REMOVED) is None
    assert assessments.answer_for(assessment, "structured_logging").status == "met"
    assert db.session.scalar(select(func.count(Evidence.id))) == 1
    assert db.session.scalar(select(func.count(Waiver.id))) == 1
    assert db.session.scalar(select(func.count(AnswerChange.id))) == 2


def test_an_item_that_comes_back_gets_a_fresh_answer_beside_the_archived_one(setup):
    user, assessment = setup
    assessments.record_answer(assessment, REMOVED, "partial", "halfway", user)
    db.session.commit()
    assessments.upgrade(assessment, version_without(REMOVED, "1.1.0"), user)
    db.session.commit()
    back = catalog._store(parse_checklist(
        Path(catalog.checklist_dirs()[0], "production-readiness.yaml").read_text()
        .replace('version: "1.0.0"', 'version: "1.2.0"'), "v12.yaml"))
    db.session.commit()
    assessments.upgrade(assessment, back, user)
    db.session.commit()
    assert assessments.answer_for(assessment, REMOVED) is None  # the old one stays archived
    assessments.record_answer(assessment, REMOVED, "met", "rotated daily", user)
    db.session.commit()
    rows = db.session.scalars(select(Answer).where(Answer.item_key == REMOVED).order_by(Answer.id)).all()
    assert [(a.status, a.archived_at is not None) for a in rows] == [("partial", True), ("met", False)]


def test_the_assessment_page_shows_archived_answers_with_their_evidence(setup, client, auth):
    user, assessment = setup
    assessments.record_answer(assessment, REMOVED, "not_met", "no <rotation> yet", user)
    assessments.add_evidence(assessment, REMOVED, "https://wiki.example.test/logs", "Rotation plan", user)
    db.session.commit()
    auth.login(user)
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    assert "no longer on the checklist" not in page  # nothing archived yet

    assessments.upgrade(assessment, version_without(REMOVED, "1.1.0"), user)
    db.session.commit()
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    section = page[page.index('id="archived-title"'):]
    assert f"Log rotation configured <code class=\"small muted\">{REMOVED}</code>" in section  # the old title
    assert "Not met" in section and "no &lt;rotation&gt; yet" in section  # escaped
    assert 'href="https://wiki.example.test/logs"' in section and "Rotation plan" in section
