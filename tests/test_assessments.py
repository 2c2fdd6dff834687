"""Assessments end to end: answering, evidence, n/a, waivers, history, conflicts, compare,
re-assess, upgrade — and bad input refused with nothing stored."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.orm import Session

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp import assessments, catalog
from webapp.checklists import parse_checklist
from webapp.extensions import db
from webapp.models import (
    Answer,
    AnswerChange,
    Assessment,
    Evidence,
    ProbeResult,
    ProbeRun,
    ScoreSnapshot,
    ServiceCheck,
    Waiver,
    utcnow,
)

ITEM = "structured_logging"          # plain item, every tier
CRITICAL = "secrets_in_environment"  # critical item
TIER1_ONLY = "multiple_availability_zones"


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def setup(auth):
    membership = MembershipFactory(role="maintainer")
    service = ServiceFactory(team=membership.team, tier=2)
    catalog.sync(force=True)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"),
                                              membership.user)
    db.session.commit()
    auth.login(membership.user)
    return membership.user, service, assessment


def answer_url(assessment, key=ITEM):
    return f"/assessments/{assessment.id}/items/{key}/answer"


def test_answer_with_full_page_post_and_with_htmx(client, setup):
    user, _service, assessment = setup
    response = client.post(answer_url(assessment), data={"status": "met", "note": "JSON via structlog", "version": "0"})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"#item-{ITEM}")
    answer = db.session.scalar(select(Answer))
    assert (answer.status, answer.note, answer.answered_by_id) == ("met", "JSON via structlog", user.id)
    response = client.post(answer_url(assessment, CRITICAL), data={"status": "partial", "note": "", "version": "0"},
                           headers={"HX-Request": "true"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f'id="item-{CRITICAL}"' in page and 'id="score-bar"' in page and "hx-swap-oob" in page
    card = assessments.scorecard(assessment)
    assert card.answered == 2 and 0 < card.score < 100
    assert count(ScoreSnapshot) == 3  # the start, and one per change


def test_every_change_is_kept_in_history(client, setup):
    _, _, assessment = setup
    for status in ("not_met", "partial", "met"):
        version = assessments.answer_for(assessment, ITEM).version if count(Answer) else 0
        client.post(answer_url(assessment), data={"status": status, "note": f"now {status}", "version": str(version)})
    changes = db.session.scalars(select(AnswerChange).order_by(AnswerChange.id)).all()
    assert [(c.from_status, c.to_status) for c in changes] == [(None, "not_met"), ("not_met", "partial"), ("partial", "met")]
    page = client.get(f"/assessments/{assessment.id}/items/{ITEM}/history").get_data(as_text=True)
    assert "now partial" in page and "Not met" in page


def test_an_item_that_is_not_in_the_checklist_is_a_404_not_the_whole_page(client, setup):
    _, _, assessment = setup
    assert client.get(f"/assessments/{assessment.id}/items/nope").status_code == 404
    assert client.get(f"/assessments/{assessment.id}/items/nope/history").status_code == 404
    found = client.get(f"/assessments/{assessment.id}/items/{ITEM}")
    assert found.status_code == 302 and f"open={ITEM}" in found.headers["Location"]


def test_history_says_a_note_was_edited_rather_than_met_to_met(client, setup):
    _, _, assessment = setup
    client.post(answer_url(assessment), data={"status": "met", "note": "first", "version": "0"})
    version = assessments.answer_for(assessment, ITEM).version
    client.post(answer_url(assessment), data={"status": "met", "note": "second", "version": str(version)})
    page = client.get(f"/assessments/{assessment.id}/items/{ITEM}/history").get_data(as_text=True)
    assert 'status-met">Met</strong>, note edited' in page and "→ <strong class=\"status-met\">Met" in page
    assert page.count("→") == 1  # only the first answer changed the status


def test_na_needs_a_reason(client, setup):
    _, _, assessment = setup
    response = client.post(answer_url(assessment), data={"status": "n_a", "note": "  ", "version": "0"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert "Not saved. Say why this item does not apply" in response.get_data(as_text=True)
    assert count(Answer) == 0 and count(AnswerChange) == 0
    response = client.post(answer_url(assessment), data={"status": "n_a", "note": "No logs: batch job", "version": "0"})
    assert db.session.scalar(select(Answer.status)) == "n_a"


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,<b>x</b>", "file:///etc/passwd",
                                 "//no-scheme.example", "https://exa mple.test/"])
def test_evidence_urls_must_be_http(client, setup, url):
    _, _, assessment = setup
    response = client.post(f"/assessments/{assessment.id}/items/{ITEM}/evidence", data={"url": url, "title": "x"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert "Link not added" in response.get_data(as_text=True)
    assert count(Evidence) == 0


def test_a_refused_evidence_link_comes_back_as_typed(client, setup):
    _, _, assessment = setup
    response = client.post(f"/assessments/{assessment.id}/items/{ITEM}/evidence",
                           data={"url": "https://exa mple.test/<x>", "title": "Design \"v2\"", "expanded": "1"},
                           headers={"HX-Request": "true"})
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "Link not added" in page
    assert 'value="https://exa mple.test/&lt;x&gt;" aria-invalid="true" autofocus' in page  # escaped, to correct
    assert 'value="Design &#34;v2&#34;"' in page
    added = client.post(f"/assessments/{assessment.id}/items/{ITEM}/evidence",
                        data={"url": "https://wiki.example.test/x", "title": "Design", "expanded": "1"},
                        headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'name="url" placeholder="https:// evidence link" required maxlength="2048" autocomplete="off" value=""' in added


def test_evidence_add_and_remove(client, setup):
    _, _, assessment = setup
    client.post(f"/assessments/{assessment.id}/items/{ITEM}/evidence",
                data={"url": "https://wiki.example.test/logging", "title": "Logging design"})
    evidence = db.session.scalar(select(Evidence))
    assert evidence.title == "Logging design"
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    assert "https://wiki.example.test/logging" not in page  # the row shows a count; the panel the links
    assert 'title="1 evidence link"' in page
    panel = client.get(f"/assessments/{assessment.id}/items/{ITEM}", headers={"HX-Request": "true"})
    assert "https://wiki.example.test/logging" in panel.get_data(as_text=True)
    page = client.get(f"/assessments/{assessment.id}?open={ITEM}").get_data(as_text=True)
    assert "https://wiki.example.test/logging" in page
    client.post(f"/evidence/{evidence.id}/remove")
    assert count(Evidence) == 0


def test_huge_note_is_refused(client, setup):
    _, _, assessment = setup
    response = client.post(answer_url(assessment), data={"status": "met", "note": "x" * 10_000_000, "version": "0"})
    assert response.status_code == 413
    response = client.post(answer_url(assessment), data={"status": "met", "note": "x" * 30_000, "version": "0"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert count(Answer) == 0


def test_unknown_item_and_not_applicable_item(client, setup):
    _, _, assessment = setup
    assert client.post(answer_url(assessment, "no_such_item"), data={"status": "met", "version": "0"}).status_code == 404
    response = client.post(answer_url(assessment, TIER1_ONLY), data={"status": "met", "version": "0"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 400 and "does not apply to tier 2" in response.get_data(as_text=True)
    assert count(Answer) == 0


def test_signed_off_assessment_cannot_change(client, setup):
    _, _, assessment = setup
    assessment.state = "signed_off"
    db.session.commit()
    response = client.post(answer_url(assessment), data={"status": "met", "version": "0"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 400 and "can no longer be changed" in response.get_data(as_text=True)
    assert count(Answer) == 0


def test_forged_assessment_of_another_team_is_forbidden(client, setup):
    other_service = ServiceFactory()
    other = assessments.start_assessment(other_service, catalog.latest_version("production-readiness"), UserFactory())
    db.session.commit()
    assert client.post(answer_url(other), data={"status": "met", "version": "0"}).status_code == 403
    assert client.post(f"/assessments/{other.id}/items/{ITEM}/evidence",
                       data={"url": "https://x.example.test/"}).status_code == 403
    assert count(Answer) == 0


def test_concurrent_edit_gets_a_conflict_not_an_overwrite(app, client, setup):
    _user, service, assessment = setup
    colleague = MembershipFactory(team=service.team, role="member").user
    db.session.commit()
    other = app.test_client()
    other.post("/login", data={"email": colleague.email, "password": "correct horse battery"})
    # Both loaded the page when the item was unanswered (version 0); the colleague saves first.
    assert other.post(answer_url(assessment), data={"status": "not_met", "note": "no JSON yet", "version": "0"}).status_code == 302
    response = client.post(answer_url(assessment), data={"status": "met", "note": "mine", "version": "0"},
                           headers={"HX-Request": "true"})
    page = response.get_data(as_text=True)
    assert response.status_code == 409
    assert "changed this item while you were editing" in page and "no JSON yet" in page
    assert "Your note is kept in the box below" in page
    answer = db.session.scalar(select(Answer))
    db.session.refresh(answer)
    assert (answer.status, answer.note) == ("not_met", "no JSON yet")


def test_my_own_save_in_another_tab_is_named_as_mine(client, setup):
    _user, _service, assessment = setup
    assert client.post(answer_url(assessment), data={"status": "not_met", "note": "", "version": "0"}).status_code == 302
    page = client.post(answer_url(assessment), data={"status": "met", "version": "0"},  # a status click, no note
                       headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "You changed this item in another window or tab" in page
    assert "Choose a status again to save yours over theirs." in page and "Your note is kept" not in page


def test_a_save_landing_between_load_and_flush_is_a_conflict(client, setup):
    """Two real sessions: a colleague's commit lands after this request loaded the answer and
    before it flushed, so SQLAlchemy's version check at flush time (not the form's) catches it."""
    user, _service, assessment = setup
    answer = assessments.record_answer(assessment, ITEM, "met", "first", user)
    db.session.commit()
    answer_id, version = answer.id, answer.version

    fired = []

    def colleague_saves_first(session, flush_context, instances):
        if fired or not any(isinstance(obj, Answer) for obj in session.dirty):
            return
        fired.append(True)
        with db.engine.begin() as connection:
            connection.execute(update(Answer).where(Answer.id == answer_id)
                               .values(status="not_met", note="theirs", version=Answer.version + 1))

    event.listen(Session, "before_flush", colleague_saves_first)
    try:
        response = client.post(answer_url(assessment), data={"status": "partial", "note": "mine",
                                                              "version": str(version)},
                               headers={"HX-Request": "true"})
    finally:
        event.remove(Session, "before_flush", colleague_saves_first)
    assert fired and response.status_code == 409
    assert "theirs" in response.get_data(as_text=True)
    stored = db.session.get(Answer, answer_id)
    assert (stored.status, stored.note, stored.version) == ("not_met", "theirs", version + 1)


def test_stale_version_at_flush_is_a_conflict(setup):
    user, _, assessment = setup
    answer = assessments.record_answer(assessment, ITEM, "met", "", user, expected_version=0)
    db.session.commit()
    with pytest.raises(assessments.AnswerConflict):
        assessments.record_answer(assessment, ITEM, "partial", "", user, expected_version=answer.version - 1)


def test_markdown_note_is_rendered_inert(client, setup):
    _, _, assessment = setup
    note = '<script>alert(1)</script> <img src=x onerror="alert(2)"> [x](javascript:alert(3)) **bold**'
    client.post(answer_url(assessment), data={"status": "met", "note": note, "version": "0"})
    page = client.get(f"/assessments/{assessment.id}?open={ITEM}").get_data(as_text=True)
    assert "<script>alert(1)" not in page
    assert "<img src=x onerror" not in page and 'onerror="alert(2)"' not in page
    assert 'href="javascript:' not in page
    assert "<strong>bold</strong>" in page and "&lt;script&gt;" in page


def test_waiver_request_approve_and_expire(app, client, auth, setup):
    user, _service, assessment = setup
    assessments.record_answer(assessment, CRITICAL, "not_met", "vault migration pending", user)
    db.session.commit()
    assert CRITICAL in assessments.scorecard(assessment).blockers
    url = f"/assessments/{assessment.id}/items/{CRITICAL}/waiver"
    too_late = (date.today() + timedelta(days=400)).isoformat()
    response = client.post(url, data={"reason": "r", "compensating_control": "c", "risk_owner_id": str(user.id),
                                      "expires_on": too_late})
    assert response.status_code == 400 and "at most one year" in response.get_data(as_text=True)
    assert count(Waiver) == 0
    soon = (date.today() + timedelta(days=30)).isoformat()
    response = client.post(url, data={"reason": "migration in Q1", "compensating_control": "secrets scanned daily",
                                      "risk_owner_id": str(user.id), "expires_on": soon})
    assert response.status_code == 302
    waiver = db.session.scalar(select(Waiver))
    assert waiver.state == "requested"
    again = client.post(url, data={"reason": "again", "compensating_control": "c", "risk_owner_id": str(user.id),
                                   "expires_on": soon}).get_data(as_text=True)  # said above the form, not at the date
    assert '<div class="flash flash-error" role="alert"><p>A waiver for this item is already waiting' in again
    # The maintainer is no reviewer: cannot approve their own waiver.
    assert client.post(f"/waivers/{waiver.id}/decide", data={"decision": "approve"}).status_code == 403
    reviewer = UserFactory(is_reviewer=True)
    db.session.commit()
    auth.logout()
    auth.login(reviewer)
    client.post(f"/waivers/{waiver.id}/decide", data={"decision": "approve"})
    db.session.refresh(waiver)
    assert waiver.state == "approved" and waiver.approved_by_id == reviewer.id
    db.session.expire_all()
    card = assessments.scorecard(assessment)
    assert CRITICAL not in card.blockers and not card.expired_waivers
    waiver.expires_on = date.today() - timedelta(days=1)
    db.session.commit()
    db.session.expire_all()
    card = assessments.scorecard(assessment)
    assert CRITICAL in card.blockers and CRITICAL in card.expired_waivers
    assert "expired" in client.get(f"/assessments/{assessment.id}").get_data(as_text=True).lower()


def test_waiver_only_for_not_met_or_partial(client, setup):
    user, _, assessment = setup
    response = client.post(f"/assessments/{assessment.id}/items/{ITEM}/waiver",
                           data={"reason": "r", "compensating_control": "c", "risk_owner_id": str(user.id),
                                 "expires_on": (date.today() + timedelta(days=10)).isoformat()})
    assert response.status_code == 400 and "can be waived" in response.get_data(as_text=True)


def test_reassess_copies_answers_and_keeps_the_old_one(client, setup):
    user, service, assessment = setup
    assessments.record_answer(assessment, ITEM, "met", "kept", user)
    assessment.state = "signed_off"
    db.session.commit()
    version_id = assessment.checklist_version_id
    page = client.get(f"/services/{service.id}/assessments/new").get_data(as_text=True)
    # Copying is the default, from the signed-off assessment.
    assert f'<option selected value="{assessment.id}">' in page or f'value="{assessment.id}" selected' in page
    response = client.post(f"/services/{service.id}/assessments/new",
                           data={"checklist": str(version_id), "copy_from": str(assessment.id)})
    assert response.status_code == 302
    db.session.expire_all()
    new = db.session.scalars(select(Assessment).order_by(Assessment.id.desc())).first()
    assert new.id != assessment.id and new.copied_from_id == assessment.id
    assert assessments.answer_for(new, ITEM).note == "kept"
    assessments.record_answer(new, ITEM, "partial", "changed", user)
    db.session.commit()
    assert assessments.answer_for(assessment, ITEM).status == "met"


def test_reassess_copies_from_the_signed_off_one_not_the_newest_empty_draft(client, setup):
    user, service, assessment = setup
    assessments.record_answer(assessment, ITEM, "met", "from the signed-off one", user)
    assessment.state = "signed_off"
    db.session.commit()
    rejected = assessments.start_assessment(service, assessment.checklist_version, user)
    rejected.state = "rejected"  # newer, but empty: nothing worth copying
    db.session.commit()
    page = client.get(f"/services/{service.id}/assessments/new").get_data(as_text=True)
    copy_select = page.split('id="copy_from"')[1].split("</select>")[0]
    assert f'value="{rejected.id}"' not in copy_select and f'value="{assessment.id}"' in copy_select
    response = client.post(f"/services/{service.id}/assessments/new",
                           data={"checklist": str(assessment.checklist_version_id), "copy_from": str(assessment.id)})
    assert response.status_code == 302
    db.session.expire_all()
    new = db.session.scalars(select(Assessment).order_by(Assessment.id.desc())).first()
    assert new.copied_from_id == assessment.id
    assert assessments.answer_for(new, ITEM).note == "from the signed-off one"


def test_at_most_one_open_draft_per_service_and_checklist(client, setup):
    _user, service, assessment = setup
    page = client.get(f"/services/{service.id}/assessments/new").get_data(as_text=True)
    assert "already has an open draft" in page and f"/assessments/{assessment.id}" in page
    response = client.post(f"/services/{service.id}/assessments/new",
                           data={"checklist": str(assessment.checklist_version_id), "copy_from": "0"})
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/assessments/{assessment.id}")
    assert count(Assessment) == 1
    with pytest.raises(assessments.OpenDraftExists):
        assessments.start_assessment(service, assessment.checklist_version, _user)


def test_compare_two_assessments_and_one_at_two_dates(client, setup):
    user, service, assessment = setup
    assessments.record_answer(assessment, ITEM, "not_met", "", user)
    assessment.state = "signed_off"
    db.session.commit()
    second = assessments.start_assessment(service, assessment.checklist_version, user, copy_from=assessment)
    assessments.record_answer(second, ITEM, "met", "", user)
    db.session.commit()
    page = client.get(f"/services/{service.id}/compare?a={assessment.id}&b={second.id}").get_data(as_text=True)
    assert "Structured logging (JSON)" in page and "+" in page
    rows = {r.key: r for r in assessments.compare(assessment, second)}
    assert rows[ITEM].before == "not_met" and rows[ITEM].after == "met" and rows[ITEM].changed
    moment = db.session.scalar(select(func.min(AnswerChange.changed_at)))
    assert assessments.score_at(assessment, moment - timedelta(seconds=1)) == 0.0
    assert client.get(f"/services/{service.id}/compare?a={assessment.id}&b={assessment.id}&a_at=bogus").status_code == 400


def test_reassessing_keeps_approved_waivers_that_have_not_expired(setup):
    user, service, assessment = setup
    reviewer = UserFactory(is_reviewer=True)
    assessments.record_answer(assessment, CRITICAL, "not_met", "", user)
    assessments.record_answer(assessment, ITEM, "not_met", "", user)
    live = assessments.request_waiver(assessment, CRITICAL, "legacy vault", "manual rotation", user,
                                      date.today() + timedelta(days=60), user)
    assessments.decide_waiver(live, True, reviewer)
    lapsed = assessments.request_waiver(assessment, ITEM, "soon", "none", user, date.today() + timedelta(days=5), user)
    assessments.decide_waiver(lapsed, True, reviewer)
    lapsed.expires_on = date.today() - timedelta(days=1)
    assessments.refresh_score(assessment)
    assessment.state = "signed_off"
    db.session.commit()
    blockers = assessment.blocker_count
    second = assessments.start_assessment(service, assessment.checklist_version, user, copy_from=assessment)
    db.session.commit()
    kept = assessments.answer_for(second, CRITICAL).waivers
    assert [(w.state, w.expires_on, w.reason, w.approved_by_id) for w in kept] == [
        ("approved", live.expires_on, "legacy vault", reviewer.id)]
    assert assessments.answer_for(second, ITEM).waivers == []  # expired: not carried over
    assert second.blocker_count == blockers  # the waived critical gap is not a blocker again


def test_upgrade_carries_answers_over_by_key_and_replaces(setup):
    user, _, assessment = setup
    assessments.record_answer(assessment, ITEM, "met", "json", user)
    assessments.record_answer(assessment, "log_rotation", "partial", "", user)
    db.session.commit()
    old_path = catalog.checklist_dirs()[0] + "/production-readiness.yaml"
    text = Path(old_path).read_text()
    text = text.replace("key: structured_logging", "key: json_logging\n        replaces: [structured_logging]")
    text = text.replace('version: "1.0.0"', 'version: "1.1.0"')
    new = catalog._store(parse_checklist(text, "v11.yaml"))
    db.session.commit()
    diff = assessments.upgrade(assessment, new, user)
    db.session.commit()
    db.session.expire_all()
    assert diff.renamed == {"structured_logging": "json_logging"}
    assert assessments.answer_for(assessment, "json_logging").note == "json"
    assert assessments.answer_for(assessment, "log_rotation").status == "partial"
    assert assessment.checklist_version.version == "1.1.0"


def test_filters_show_only_matching_items(client, setup):
    user, _, assessment = setup
    assessments.record_answer(assessment, ITEM, "not_met", "", user)
    db.session.commit()

    def shown(which: str) -> set[str]:
        page = client.get(f"/assessments/{assessment.id}?filter={which}").get_data(as_text=True)
        cards = page.split('<article id="item-')[1:]
        return {card.split('"')[0] for card in cards if " hidden" not in card.split(">")[0]}

    assert ITEM in shown("not_met") and CRITICAL not in shown("not_met")
    assert CRITICAL in shown("critical") and ITEM not in shown("critical")
    assert "health_checks_configured" in shown("probe") and ITEM not in shown("probe")
    assert ITEM not in shown("unanswered") and CRITICAL in shown("unanswered")
    assert len(shown("all")) == 46


# Probes beside the answers ------------------------------------------------------------

def probe_result(service, kind, outcome, explanation="", error_code=None, url="https://svc.example.test/"):
    """A stored probe result and the read model's latest outcome for its kind."""
    run = ProbeRun(service_id=service.id, trigger="cli", finished_at=utcnow())
    db.session.add(run)
    db.session.flush()
    result = ProbeResult(run_id=run.id, service_id=service.id, kind=kind, url=url, outcome=outcome,
                         explanation=explanation, error_code=error_code, finished_at=utcnow())
    db.session.add(result)
    db.session.flush()
    check = db.session.scalar(select(ServiceCheck).where(ServiceCheck.service_id == service.id,
                                                          ServiceCheck.kind == kind))
    if check is None:
        check = ServiceCheck(service_id=service.id, kind=kind, outcome=outcome)
        db.session.add(check)
    check.outcome, check.result_id = outcome, result.id
    db.session.flush()
    return result


def test_override_of_a_probe_needs_a_note_of_ones_own(client, setup):
    _user, service, assessment = setup
    result = probe_result(service, "runbook_present", "fail", "No runbook has been written for this service yet.")
    probe_note = f"Probe runbook_present: fail — {result.explanation}"
    # What a probe answer looked like: the probe's explanation written into the note.
    db.session.add(Answer(assessment_id=assessment.id, item_key="runbook", status="not_met", note=probe_note,
                          source="probe", probe_result_id=result.id))
    db.session.commit()
    # The old page pre-filled the note box with the probe's text; sending it back is no note of one's own.
    response = client.post(answer_url(assessment, "runbook"), data={"status": "met", "note": probe_note, "version": "1"},
                           headers={"HX-Request": "true"})
    text = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "an override needs a note of your own" in text and "Save as Met with this note" in text
    db.session.expire_all()
    assert db.session.scalar(select(Answer.status).where(Answer.item_key == "runbook")) == "not_met"
    # A status click from the compact row sends no note at all: refused too.
    response = client.post(answer_url(assessment, "runbook"), data={"status": "met", "version": "1"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 400
    # Without script: back to the page with the row open, offering to save "Met" with a note.
    response = client.post(answer_url(assessment, "runbook"), data={"status": "met", "version": "1"})
    assert response.status_code == 302 and "open=runbook" in response.headers["Location"]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "note of your own" in page and "Save as Met with this note" in page
    response = client.post(answer_url(assessment, "runbook"),
                           data={"status": "met", "note": "Runbook lives in the wiki: https://wiki.example.test/rb",
                                 "version": "1"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    db.session.expire_all()
    answer = db.session.scalar(select(Answer).where(Answer.item_key == "runbook"))
    assert (answer.status, answer.source) == ("met", "manual")
    assert "probe says Not met: overridden" in response.get_data(as_text=True)


def test_override_without_a_probe_answer_still_needs_a_note(client, setup):
    _user, service, assessment = setup
    probe_result(service, "health", "fail", "health endpoint answered 503")
    db.session.commit()
    # Nobody answered yet; the probe's latest result says "not met": "met" is an override.
    response = client.post(answer_url(assessment, "health_checks_configured"), data={"status": "met", "version": "0"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 400 and "note of your own" in response.get_data(as_text=True)
    response = client.post(answer_url(assessment, "health_checks_configured"),
                           data={"status": "not_met", "version": "0"}, headers={"HX-Request": "true"})
    assert response.status_code == 200  # agreeing with the probe needs no note


def test_a_new_assessment_starts_with_what_probes_already_know(setup):
    user, service, assessment = setup
    probe_result(service, "health", "pass", "health endpoint answered 200 with status ok")
    probe_result(service, "runbook_present", "fail", "No runbook has been written for this service yet.")
    assessment.state = "signed_off"
    db.session.commit()
    new = assessments.start_assessment(service, assessment.checklist_version, user)
    db.session.commit()
    db.session.expire_all()
    answers = {a.item_key: a for a in db.session.scalars(select(Answer).where(Answer.assessment_id == new.id))}
    assert (answers["health_checks_configured"].status, answers["health_checks_configured"].source) == ("met", "probe")
    assert (answers["runbook"].status, answers["runbook"].source) == ("not_met", "probe")
    assert answers["runbook"].note == ""  # the explanation stays on the probe result
    assert "metrics_exported" not in answers  # never probed: stays unanswered
    assert db.session.get(Assessment, new.id).answered_pct > 0


def test_copied_override_wins_over_the_probe_at_creation(setup):
    user, service, assessment = setup
    probe_result(service, "runbook_present", "fail", "No runbook.")
    db.session.commit()
    assessments.record_answer(assessment, "runbook", "met", "Runbook in the team wiki", user)
    assessment.state = "signed_off"
    db.session.commit()
    new = assessments.start_assessment(service, assessment.checklist_version, user, copy_from=assessment)
    db.session.commit()
    db.session.expire_all()
    answer = assessments.answer_for(db.session.get(Assessment, new.id), "runbook")
    assert (answer.status, answer.source, answer.note) == ("met", "manual", "Runbook in the team wiki")


def test_probe_results_read_as_sentences_with_the_raw_error_one_click_away(client, setup):
    _user, service, assessment = setup
    service.health_url = "https://svc.example.test:5099/health"
    raw = "TLS handshake failed: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"
    result = probe_result(service, "health", "error", raw, error_code="tls_invalid",
                          url="https://svc.example.test:5099/health")
    db.session.commit()
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    row = page.split('id="item-health_checks_configured"')[1].split("</article>")[0]
    assert "answered plain HTTP on an HTTPS request: is TLS enabled on port 5099?" in row
    assert f'href="/probe-results/{result.id}"' in row
    panel = client.get(f"/assessments/{assessment.id}/items/health_checks_configured",
                       headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "WRONG_VERSION_NUMBER" in panel and "tls_invalid" in panel


def test_probe_names_keep_their_capitals_on_items_and_probe_pages(client, setup):
    _user, service, assessment = setup
    service.base_url = "https://svc.example.test/"
    result = probe_result(service, "https", "fail", "plain HTTP only", url="https://svc.example.test/")
    probe_result(service, "correlation_id", "pass", "echoed")
    db.session.commit()
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    row = page.split('id="item-https_everywhere"')[1].split("</article>")[0]
    assert "HTTPS probe:" in row and "Https" not in row
    raw = client.get(f"/probe-results/{result.id}").get_data(as_text=True)
    assert "<h1>HTTPS check" in raw and "<title>HTTPS result" in raw
    assert f'href="/teams/{service.team_id}"' in raw  # the crumbs start at the team, as on Probes
    probes_page = client.get(f"/services/{service.id}/probes").get_data(as_text=True)
    assert ">correlation ID</a>" in probes_page and ">HTTPS</a>" in probes_page


def test_a_probe_that_can_never_run_says_what_to_configure(client, setup):
    _user, service, assessment = setup
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    row = page.split('id="item-metrics_exported"')[1].split("</article>")[0]
    assert "Never probed: no metrics URL is configured" in row
    assert f"/services/{service.id}/edit" in row
    runbook_row = page.split('id="item-runbook"')[1].split("</article>")[0]
    assert "Never probed" not in runbook_row  # answered from Preflight's own records


def test_in_review_a_probe_that_disagrees_is_shown_beside_the_answer(client, setup):
    user, service, assessment = setup
    assessments.record_answer(assessment, "runbook", "met", "wiki", user)
    assessment.state = "in_review"
    probe_result(service, "runbook_present", "fail", "No runbook has been written for this service yet.")
    db.session.commit()
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    row = page.split('id="item-runbook"')[1].split("</article>")[0]
    assert "probe says Not met" in row


def test_after_a_save_every_figure_on_the_page_agrees(client, setup):
    _user, _service, assessment = setup
    response = client.post(answer_url(assessment, CRITICAL), data={"status": "met", "version": "0"},
                           headers={"HX-Request": "true"})
    text = response.get_data(as_text=True)
    card = assessments.scorecard(db.session.get(Assessment, assessment.id))
    category = catalog.checklist_of(assessment.checklist_version).item(CRITICAL).category
    cs = card.categories[category]
    swapped = {part.split('"')[0] for part in text.split(' id="')[1:] if 'hx-swap-oob="true"' in part.split(">")[0]}
    assert {"score-bar", "category-progress", f"cat-{category}-progress"} <= swapped
    header = text.split(f'id="cat-{category}-progress"')[1].split("</span>")[0]
    assert f"{cs.answered} of {cs.applicable} answered" in header and cs.answered == 1
    nav = text.split('id="category-progress"')[1].split("</nav>")[0]
    assert f"{cs.answered}/{cs.applicable}" in nav
    assert "Blockers <span class=\"count\">" + str(len(card.blockers)) in nav
    bar = text.split('id="score-bar"')[1].split("</section>")[0]
    assert f"({card.answered}/{card.applicable})" in bar


def test_status_click_from_the_row_keeps_the_note(client, setup):
    _user, _service, assessment = setup
    client.post(answer_url(assessment), data={"status": "partial", "note": "half done", "version": "0"})
    version = db.session.scalar(select(Answer.version))
    client.post(answer_url(assessment), data={"status": "met", "version": str(version)}, headers={"HX-Request": "true"})
    db.session.expire_all()
    assert db.session.scalar(select(Answer.note)) == "half done"


def test_assessment_page_makes_a_constant_number_of_queries(app, client, setup):
    user, service, assessment = setup
    checklist = assessments.checklist_for(assessment)
    for item in checklist.items:
        if item.applies_to(service.tier):
            assessments.record_answer(assessment, item.key, "partial", f"note {item.key}", user)
            assessments.add_evidence(assessment, item.key, f"https://wiki.example.test/{item.key}", "doc", user)
    assessments.request_waiver(assessment, CRITICAL, "r", "c", user, date.today() + timedelta(days=30), user)
    for n in range(3):
        probe_result(service, "health", ["pass", "fail", "warn"][n])
    db.session.commit()
    from sqlalchemy import event

    statements = []

    def counter(*_args):
        statements.append(1)

    event.listen(db.engine, "before_cursor_execute", counter)
    try:
        assert client.get(f"/assessments/{assessment.id}").status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", counter)
    assert len(statements) <= 15, len(statements)
