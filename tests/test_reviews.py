"""Review and sign-off through HTTP: submit rules, tier roles, four eyes, reject and
resubmit, conditions, frozen assessments refusing every change, the queue, permissions."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from tests.factories import ServiceFactory, UserFactory
from tests.signoff_helpers import Cast, answered_assessment
from webapp import assessments, catalog, reviews
from webapp.checklists import parse_checklist
from webapp.extensions import db
from webapp.models import (
    Answer,
    Assessment,
    AuditEvent,
    Condition,
    Evidence,
    Report,
    SignOff,
    User,
    Waiver,
)

ITEM = "structured_logging"


@pytest.fixture
def cast(app):
    return Cast(tier=2)


def _fresh(model, ident):
    db.session.expire_all()
    return db.session.get(model, ident)


def _as(client, auth, user):
    client.post("/logout")
    response = auth.login(user)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]


def _submitted(cast) -> Assessment:
    assessment = answered_assessment(cast.service, cast.member)
    assessments.submit_for_review(assessment, cast.member)
    db.session.commit()
    return assessment


def _decide(client, assessment_id, role, decision="approve", comment="", **extra):
    data = {"role": role, "decision": decision, "comment": comment, **extra}
    return client.post(f"/assessments/{assessment_id}/signoff", data=data)


# Submitting ----------------------------------------------------------------------------

def test_submit_is_refused_until_every_applicable_item_is_answered(client, auth, cast):
    assessment = answered_assessment(cast.service, cast.member, skip=(ITEM, "log_rotation"))
    db.session.commit()
    _as(client, auth, cast.member)
    response = client.post(f"/assessments/{assessment.id}/submit")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "2 applicable items still unanswered" in page
    assert f'filter=unanswered#item-{ITEM}"' in page and "#item-log_rotation" in page
    assert _fresh(Assessment, assessment.id).state == "draft"
    reloaded = client.get(f"/assessments/{assessment.id}/submit")  # reload or Back: not a 405
    assert reloaded.status_code == 302 and reloaded.headers["Location"].endswith("filter=unanswered")

    client.post(f"/assessments/{assessment.id}/items/{ITEM}/answer", data={"status": "met", "note": ""})
    client.post(f"/assessments/{assessment.id}/items/log_rotation/answer", data={"status": "n_a", "note": "no files"})
    assert client.post(f"/assessments/{assessment.id}/submit").status_code == 302
    assessment = _fresh(Assessment, assessment.id)
    assert (assessment.state, assessment.review_round, assessment.submitted_by_id) == ("in_review", 1, cast.member.id)


def test_in_review_answers_and_evidence_are_read_only(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.member)
    htmx = {"HX-Request": "true"}
    response = client.post(f"/assessments/{assessment.id}/items/{ITEM}/answer",
                           data={"status": "not_met", "note": "oops"}, headers=htmx)
    assert response.status_code == 400
    assert "in review: answers are read-only" in response.get_data(as_text=True)
    assert _fresh(Assessment, assessment.id).answers and assessments.answer_for(assessment, ITEM).status == "met"
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    assert "Answers are read-only until the reviewers decide" in page


# Roles per tier ------------------------------------------------------------------------

@pytest.mark.parametrize(("tier", "roles"), [(1, ("owner", "sre", "security")),
                                             (2, ("owner", "sre")), (3, ("owner", "reviewer"))])
def test_roles_come_from_the_checklist_by_tier(app, tier, roles):
    cast = Cast(tier=tier)
    assessment = answered_assessment(cast.service, cast.member)
    assert reviews.required_roles(assessment) == roles


def test_tier_1_needs_owner_sre_and_security_to_sign_off(client, auth):
    cast = Cast(tier=1)
    assessment = _submitted(cast)
    for user, role in ((cast.owner, "owner"), (cast.sre, "sre")):
        _as(client, auth, user)
        assert _decide(client, assessment.id, role).status_code == 302
    assert _fresh(Assessment, assessment.id).state == "in_review"
    _as(client, auth, cast.security)
    assert _decide(client, assessment.id, "security").status_code == 302
    assessment = _fresh(Assessment, assessment.id)
    assert assessment.state == "signed_off"
    actions = set(db.session.scalars(select(AuditEvent.action)))
    assert {"signoff.approve", "assessment.sign_off", "assessment.submit"} <= actions
    assert db.session.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "signoff.approve")) == 3


def test_a_meeting_stays_on_the_projector_view_when_the_review_ends(client, auth):
    """The last sign-off, or a rejection, made in meeting mode returns to the meeting's
    decision slide, which says how it ended and offers the signed report."""
    cast = Cast(tier=3)
    assessment = _submitted(cast)
    _as(client, auth, cast.owner)
    _decide(client, assessment.id, "owner", back="meeting")
    _as(client, auth, cast.security)
    response = _decide(client, assessment.id, "reviewer", back="meeting")
    assert response.headers["Location"].endswith(f"/assessments/{assessment.id}/meeting#slide-decision")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    decision = page[page.index('id="slide-decision"'):]
    report = db.session.scalar(select(Report).where(Report.assessment_id == assessment.id))
    assert "Signed off. The assessment is frozen" in page and "✔ Signed off</strong>" in decision
    assert f'href="/reports/{report.id}.pdf">Download signed report</a>' in decision
    assert 'name="decision"' not in decision  # nothing left to sign

    rejected = _submitted(Cast(tier=3))
    _as(client, auth, rejected.service.owner)
    response = _decide(client, rejected.id, "owner", decision="reject", comment="Not yet.", back="meeting")
    assert response.headers["Location"].endswith(f"/assessments/{rejected.id}/meeting#slide-decision")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Rejected: the assessment is back in draft" in page and "This assessment is draft; there is nothing to sign." in page


def test_tier_3_reviewer_role_is_anyone_with_a_reviewer_role(client, auth):
    cast = Cast(tier=3)
    assessment = _submitted(cast)
    _as(client, auth, cast.owner)
    _decide(client, assessment.id, "owner")
    _as(client, auth, cast.security)  # holds "security": a reviewer role of any kind counts
    assert _decide(client, assessment.id, "reviewer").status_code == 302
    assert _fresh(Assessment, assessment.id).state == "signed_off"


# Four eyes -----------------------------------------------------------------------------

def test_one_person_fills_one_role(client, auth):
    cast = Cast(tier=1)
    both = UserFactory(name="Both Hats", reviewer_roles=["security", "sre"])
    assessment = _submitted(cast)
    _as(client, auth, both)
    assert _decide(client, assessment.id, "sre").status_code == 302
    response = _decide(client, assessment.id, "security")
    assert response.status_code == 400
    assert "one person fills one role" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(SignOff.id))) == 1


def test_the_submitter_signs_only_as_owner(client, auth, cast):
    cast.owner.reviewer_roles = ["sre"]
    assessment = answered_assessment(cast.service, cast.owner)
    assessments.submit_for_review(assessment, cast.owner)
    db.session.commit()
    _as(client, auth, cast.owner)
    response = _decide(client, assessment.id, "sre")
    assert response.status_code == 400
    assert "You submitted this assessment" in response.get_data(as_text=True)
    assert _decide(client, assessment.id, "owner").status_code == 302
    _as(client, auth, cast.sre)
    assert _decide(client, assessment.id, "sre").status_code == 302
    assert _fresh(Assessment, assessment.id).state == "signed_off"


def test_people_without_the_role_cannot_sign(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.outsider)
    assert _decide(client, assessment.id, "owner").status_code == 403
    _as(client, auth, cast.security)  # a reviewer, but tier 2 wants an sre
    assert _decide(client, assessment.id, "sre").status_code == 403
    assert db.session.scalar(select(func.count(SignOff.id))) == 0


def test_nobody_decides_their_own_waiver(client, auth, cast):
    cast.owner.is_reviewer = True
    assessment = answered_assessment(cast.service, cast.member, status="not_met")
    waiver = assessments.request_waiver(assessment, ITEM, "later", "manual checks", cast.owner,
                                        date.today() + timedelta(days=30), cast.owner)
    db.session.commit()
    _as(client, auth, cast.owner)
    response = client.post(f"/waivers/{waiver.id}/decide", data={"decision": "approve"}, follow_redirects=True)
    assert "someone else must decide it" in response.get_data(as_text=True)
    assert _fresh(Waiver, waiver.id).state == "requested"
    _as(client, auth, cast.reviewer)
    client.post(f"/waivers/{waiver.id}/decide", data={"decision": "approve"})
    assert _fresh(Waiver, waiver.id).state == "approved"


# Reject and resubmit -------------------------------------------------------------------

def test_reject_returns_to_draft_with_comments_on_items_and_resubmit_starts_over(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.owner)
    _decide(client, assessment.id, "owner")
    _as(client, auth, cast.sre)
    response = _decide(client, assessment.id, "sre", "reject", "Logging is not there yet.",
                       **{"item_comments-0-item_key": ITEM,
                          "item_comments-0-text": "No request ids in the logs we saw."})
    assert response.status_code == 302
    assessment = _fresh(Assessment, assessment.id)
    assert assessment.state == "draft"
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    card = page.split(f'<article id="item-{ITEM}"')[1].split("</article>")[0]
    assert "No request ids in the logs we saw." in card
    assert "Logging is not there yet." in page
    assert f'<a href="#item-{ITEM}">Structured logging (JSON)</a>' in page  # its title, not its key
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "signoff.reject")).after["items"] == [ITEM]

    _as(client, auth, cast.member)
    client.post(f"/assessments/{assessment.id}/items/{ITEM}/answer", data={"status": "partial", "note": "ids added"})
    assert client.post(f"/assessments/{assessment.id}/submit").status_code == 302
    assessment = _fresh(Assessment, assessment.id)
    assert assessment.review_round == 2
    assert reviews.approvals_by_role(assessment) == {"owner": None, "sre": None}  # round 1 is void
    _as(client, auth, cast.sre)
    _decide(client, assessment.id, "sre")
    assert _fresh(Assessment, assessment.id).state == "in_review"
    _as(client, auth, cast.owner)
    _decide(client, assessment.id, "owner")
    assert _fresh(Assessment, assessment.id).state == "signed_off"


def test_reject_needs_a_comment(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.sre)
    response = _decide(client, assessment.id, "sre", "reject", "")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    # Under the comment box, where the reviewer has to type, not under the decision.
    assert re.search(r'id="comment-errors"[^>]*>\s*<li>Say why you reject: a comment is required', page)
    assert _fresh(Assessment, assessment.id).state == "in_review"


def test_review_page_crumbs_start_at_the_team_and_name_the_assessment(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.sre)
    page = client.get(f"/assessments/{assessment.id}/review").get_data(as_text=True)
    crumbs = page.split('class="breadcrumbs">')[1].split("</p>")[0]
    assert f'href="/teams/{cast.service.team_id}"' in crumbs
    assert f"Assessment of {assessment.created_at:%Y-%m-%d}</a>" in crumbs


def test_a_refused_decision_offers_again_only_the_roles_the_reviewer_can_sign(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.sre)
    response = _decide(client, assessment.id, "sre", "approve_with_conditions", "",
                       **{"conditions-0-text": "Something"})
    assert response.status_code == 400
    role_select = re.search(r'<select[^>]*name="role".*?</select>', response.get_data(as_text=True), re.S)
    assert re.findall(r'<option[^>]*value="([^"]+)"', role_select.group(0)) == ["sre"]


def test_signing_a_not_ready_assessment_warns_with_its_blockers(client, auth, cast):
    ready = _submitted(cast)
    _as(client, auth, cast.sre)
    assert 'data-testid="signoff-not-ready"' not in client.get(f"/assessments/{ready.id}/review").get_data(as_text=True)

    other = ServiceFactory(team=cast.service.team, tier=2)
    db.session.commit()
    failing = answered_assessment(other, cast.member, "not_met")
    assessments.submit_for_review(failing, cast.member)
    db.session.commit()
    blockers = len(assessments.scorecard(failing).blockers)
    for page in (f"/assessments/{failing.id}/review", f"/assessments/{failing.id}/meeting"):
        html = client.get(page).get_data(as_text=True)
        warning = html.split('data-testid="signoff-not-ready"')[1].split("</div>")[0]
        assert "<strong>Not ready</strong>" in warning and f"with {blockers} critical items" in warning


# Conditions ----------------------------------------------------------------------------

def test_approve_with_conditions_tracks_action_items_to_done(client, auth, cast):
    assessment = _submitted(cast)
    due = (date.today() + timedelta(days=14)).isoformat()
    _as(client, auth, cast.sre)
    response = _decide(client, assessment.id, "sre", "approve_with_conditions", "",
                       **{"conditions-0-text": "Add a deep health check",
                          "conditions-0-owner_id": str(cast.member.id), "conditions-0-due_on": due})
    assert response.status_code == 302
    condition = db.session.scalar(select(Condition))
    assert (condition.text, condition.owner_id, condition.due_on.isoformat()) == (
        "Add a deep health check", cast.member.id, due)
    _as(client, auth, cast.owner)
    _decide(client, assessment.id, "owner")
    snapshot = json.loads(db.session.scalar(select(Report.snapshot)))
    assert snapshot["conditions"][0]["text"] == "Add a deep health check"

    service_id = cast.service.id
    client.get(f"/services/{service_id}")  # first use of a checklist parses it; not counted
    statements = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        page = client.get(f"/services/{service_id}").get_data(as_text=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert "Add a deep health check" in page and "Overdue" not in page
    assert "Download PDF" in page  # the signed report, read with the assessments
    # A condition's owner and signer come with it: no query per condition (issue 10).
    assert len(statements) <= 10, statements
    db.session.get(Condition, condition.id).due_on = date.today() - timedelta(days=1)
    db.session.commit()
    page = client.get(f"/services/{cast.service.id}").get_data(as_text=True)
    assert "Overdue" in page

    _as(client, auth, cast.member)
    assert client.post(f"/conditions/{condition.id}/done").status_code == 302
    assert _fresh(Condition, condition.id).done_by_id == cast.member.id
    assert "Add a deep health check" not in client.get(f"/services/{cast.service.id}").get_data(as_text=True)


def test_conditions_need_owner_and_future_due_date(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.sre)
    response = _decide(client, assessment.id, "sre", "approve_with_conditions", "",
                       **{"conditions-0-text": "Something"})
    assert response.status_code == 400
    assert "needs a description, an owner and a due date" in response.get_data(as_text=True)
    response = _decide(client, assessment.id, "sre", "approve_with_conditions", "",
                       **{"conditions-0-text": "Something", "conditions-0-owner_id": str(cast.member.id),
                          "conditions-0-due_on": date.today().isoformat()})
    assert "due date must be in the future" in response.get_data(as_text=True)
    response = _decide(client, assessment.id, "sre", "approve_with_conditions", "",
                       **{"conditions-0-text": "Something", "conditions-0-owner_id": str(cast.member.id),
                          "conditions-0-due_on": "2999-01-01"})
    assert "A condition is due within two years" in response.get_data(as_text=True)
    response = _decide(client, assessment.id, "sre", "approve_with_conditions", "",
                       **{"conditions-1-text": "Something", "conditions-1-owner_id": str(cast.member.id),
                          "conditions-1-due_on": "2026-02-30"})  # no such day
    page = response.get_data(as_text=True)
    assert response.status_code == 400 and "<li>Condition 2, due date: Not a valid date value.</li>" in page
    assert "{&#39;" not in page and "{'" not in page  # no Python dict shown
    assert db.session.scalar(select(func.count(SignOff.id))) == 0
    # Chosen with no condition at all: the conditions are open to fill in, not folded away.
    page = _decide(client, assessment.id, "sre", "approve_with_conditions", "").get_data(as_text=True)
    assert '<details class="form-details" open>' in page


def test_retiring_a_service_withdraws_its_review_from_every_queue(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.sre)
    assert assessment in reviews.queue_for(cast.sre)
    _as(client, auth, cast.owner)
    assert client.post(f"/services/{cast.service.id}/retire").status_code == 302
    withdrawn = _fresh(Assessment, assessment.id)
    assert withdrawn.state == "draft"
    assert reviews.queue_for(_fresh(User, cast.sre.id)) == []
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "assessment.withdraw"))
    assert event.object_id == assessment.id and event.before == {"state": "in_review"}
    # The withdrawn draft is kept, read-only: it cannot be answered or sent back to review.
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    assert "This service is retired: its assessments are read-only" in page and "Submit for review" not in page
    refused = client.post(f"/assessments/{assessment.id}/submit", follow_redirects=True)
    assert "This service is retired" in refused.get_data(as_text=True)
    refused = client.post(f"/assessments/{assessment.id}/items/{ITEM}/answer", data={"status": "not_met", "note": ""},
                          headers={"HX-Request": "true"})
    assert refused.status_code == 400 and "This service is retired" in refused.get_data(as_text=True)
    withdrawn = _fresh(Assessment, assessment.id)
    assert withdrawn.state == "draft" and assessments.answer_for(withdrawn, ITEM).status == "met"
    withdrawn.state = "in_review"  # however it got back there: a retired service is not signed off
    db.session.commit()
    _as(client, auth, cast.sre)
    response = _decide(client, assessment.id, "sre")
    assert response.status_code == 400 and "This service is retired" in response.get_data(as_text=True)


def test_the_review_page_lists_waiver_requests_still_undecided(client, auth, cast):
    assessment = answered_assessment(cast.service, cast.member)
    assessments.record_answer(assessment, ITEM, "not_met", "", cast.member,
                              expected_version=assessments.answer_for(assessment, ITEM).version)
    assessments.request_waiver(assessment, ITEM, "legacy", "manual check", cast.owner,
                               date.today() + timedelta(days=30), cast.member)
    assessments.submit_for_review(assessment, cast.member)
    db.session.commit()
    _as(client, auth, cast.sre)
    page = client.get(f"/assessments/{assessment.id}/review").get_data(as_text=True)
    title = assessments.checklist_for(assessment).item(ITEM).title
    assert "1 waiver request waits for a reviewer" in page
    assert f'open={ITEM}#item-{ITEM}">{title}</a>' in page


# Signed off: frozen, snapshot, superseded ----------------------------------------------

def _sign(client, auth, cast) -> Assessment:
    assessment = _submitted(cast)
    for user, role in ((cast.owner, "owner"), (cast.sre, "sre")):
        _as(client, auth, user)
        assert _decide(client, assessment.id, role).status_code == 302
    return _fresh(Assessment, assessment.id)


def test_sign_off_stores_a_snapshot_and_supersedes_the_previous_one(client, auth, cast):
    first = _sign(client, auth, cast)
    report = db.session.scalar(select(Report).where(Report.assessment_id == first.id))
    snapshot = json.loads(report.snapshot)
    assert reviews.sha256(report.snapshot.encode()) == report.snapshot_sha256
    assert reviews.canonical_json(snapshot) == report.snapshot.encode()
    assert [s["role"] for s in snapshot["signers"]] == ["owner", "sre"]
    assert snapshot["score"]["verdict"] == "ready" and len(snapshot["items"]) == 46
    assert snapshot["assessment"]["state"] == "signed_off"

    second = _sign(client, auth, cast)
    assert (_fresh(Assessment, first.id).state, second.state) == ("superseded", "signed_off")
    assert db.session.scalar(select(func.count(Report.id))) == 2


def _fingerprint(assessment_id: int) -> str:
    db.session.expire_all()
    assessment = db.session.get(Assessment, assessment_id)
    rows = {
        "assessment": (assessment.state, assessment.review_round, str(assessment.updated_at),
                       assessment.checklist_version_id),
        "answers": sorted((a.item_key, a.status, a.note, a.version) for a in assessment.answers),
        "evidence": sorted(e.url for a in assessment.answers for e in a.evidence),
        "waivers": sorted((w.id, w.state) for a in assessment.answers for w in a.waivers),
        "signoffs": db.session.scalar(select(func.count(SignOff.id))),
        "reports": db.session.scalar(select(func.count(Report.id))),
    }
    return json.dumps(rows, default=str)


TEAM, REVIEWERS = ("member", "owner"), ("sre", "reviewer")
MUTATIONS = [
    # (name, path, form data, htmx?, who tries, expected status, expected refusal text)
    ("answer", "/assessments/{a}/items/{item}/answer", {"status": "not_met", "note": "x"}, True, TEAM, 400, "signed off"),
    ("add evidence", "/assessments/{a}/items/{item}/evidence", {"url": "https://x.example.test/"}, True, TEAM, 400, "signed off"),
    ("remove evidence", "/evidence/{e}/remove", {}, True, TEAM, 400, "signed off"),
    ("request waiver", "/assessments/{a}/items/{item}/waiver",
     {"reason": "r", "compensating_control": "c", "risk_owner_id": "{owner}", "expires_on": "{soon}"},
     False, ("owner",), 400, "signed off"),
    ("decide waiver", "/waivers/{w}/decide", {"decision": "approve"}, False, REVIEWERS, 302,
     "its waivers can no longer be decided"),
    ("submit", "/assessments/{a}/submit", {}, False, TEAM, 302, "Only a draft can be submitted"),
    ("upgrade", "/assessments/{a}/upgrade", {"version": "{v}"}, False, TEAM, 302, "signed off"),
    ("sign off", "/assessments/{a}/signoff", {"role": "owner", "decision": "approve"}, False, ("owner",), 409,
     "there is nothing to sign"),
    ("reject", "/assessments/{a}/signoff", {"role": "sre", "decision": "reject", "comment": "no"}, False,
     ("sre",), 409, "there is nothing to sign"),
]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_signed_off_assessment_refuses_every_change(client, auth, cast, mutation):
    name, path, data, htmx, who, status, text = mutation
    assessment = answered_assessment(cast.service, cast.member, evidence=True)
    answer = assessments.answer_for(assessment, ITEM)
    answer.status = "not_met"
    waiver = Waiver(answer=answer, reason="r", compensating_control="c", risk_owner_id=cast.owner.id,
                    expires_on=date.today() + timedelta(days=9), requested_by_id=cast.member.id)
    db.session.add(waiver)
    db.session.commit()
    assessments.submit_for_review(assessment, cast.member)
    reviews.decide(assessment, cast.owner, "owner", "approve")
    reviews.decide(assessment, cast.sre, "sre", "approve")
    # A newer checklist version exists, so "upgrade" reaches the freeze rule itself.
    text_yaml = Path(catalog.checklist_dirs()[0], "production-readiness.yaml").read_text()
    newer = catalog._store(parse_checklist(text_yaml.replace('version: "1.0.0"', 'version: "9.0.0"'), "v9.yaml"))
    db.session.commit()
    assert assessment.state == "signed_off"
    evidence_id = db.session.scalar(select(Evidence.id).join(Answer).where(Answer.assessment_id == assessment.id))
    values = {"a": assessment.id, "item": ITEM, "e": evidence_id, "w": waiver.id, "v": newer.id,
              "owner": cast.owner.id, "soon": (date.today() + timedelta(days=5)).isoformat()}
    before = _fingerprint(assessment.id)

    for person in who:  # people who could make this change on a draft
        _as(client, auth, getattr(cast, person))
        form = {k: v.format(**values) for k, v in data.items()}
        response = client.post(path.format(**values), data=form,
                               headers={"HX-Request": "true"} if htmx else {})
        assert response.status_code == status, (name, person)
        body = (client.get(response.headers["Location"]).get_data(as_text=True)
                if status == 302 else response.get_data(as_text=True))
        assert text in body, (name, body[:2000])
        assert "Someone changed this first" not in body  # a state, not a concurrent edit
        assert _fingerprint(assessment.id) == before


# The queue, the navigation count, roles ------------------------------------------------

def test_review_queue_lists_what_waits_for_me_with_a_count_in_the_navigation(client, auth, cast):
    assessment = _submitted(cast)
    _as(client, auth, cast.sre)
    page = client.get("/reviews").get_data(as_text=True)
    assert "Waiting for you" in page and f"/assessments/{assessment.id}/review" in page
    assert 'class="nav-count" aria-label="1 waiting for you"' in page
    _decide(client, assessment.id, "sre")
    page = client.get("/reviews").get_data(as_text=True)
    assert "Nothing waits for you." in page and "nav-count" not in page
    _as(client, auth, cast.outsider)
    assert "nav-count" not in client.get("/reviews").get_data(as_text=True)


def test_the_navigation_count_counted_in_sql_equals_the_queue_on_a_varied_portfolio(app):
    """`queue_count` applies the four-eyes rules in SQL; `queue_for` in Python. Both must agree
    for every kind of person: owners, backups, maintainers, role holders, the submitter, who
    already decided, approvals of an older round, two checklist versions with other roles."""
    from sqlalchemy import event

    from tests.factories import MembershipFactory, ServiceFactory, TeamFactory

    text = Path(catalog.checklist_dirs()[0], "production-readiness.yaml").read_text()
    catalog.sync()
    v1 = catalog.latest_version("production-readiness")
    # A second version whose tiers need other roles (stored directly: only the queue reads it).
    v2 = catalog._store(parse_checklist(text.replace("tier_2: [owner, sre]", "tier_2: [owner, security]")
                                        .replace("tier_3: [owner, reviewer]", "tier_3: [owner, sre]"), "v2.yaml"))
    assert v2.id != v1.id
    owner, backup, maintainer = UserFactory(), UserFactory(), UserFactory()
    sre, security, reviewer = (UserFactory(reviewer_roles=["sre"]), UserFactory(reviewer_roles=["security"]),
                               UserFactory(is_reviewer=True))
    both, submitter, outsider = (UserFactory(reviewer_roles=["security", "sre"]),
                                 UserFactory(reviewer_roles=["sre"]), UserFactory())
    team_a, team_b = TeamFactory(), TeamFactory()
    MembershipFactory(team=team_b, user=maintainer, role="maintainer")
    MembershipFactory(team=team_a, user=submitter, role="member")
    made = []
    # (team, tier, version, owner, backup, submitted by, round, [(signer, role, decision, round)], state)
    plan = [
        (team_a, 1, v1, owner, None, submitter, 1, [], "in_review"),
        (team_a, 2, v1, owner, backup, owner, 1, [(sre, "sre", "approve", 1)], "in_review"),
        (team_b, 3, v1, None, backup, submitter, 2, [(reviewer, "reviewer", "approve", 1),
                                                     (security, "reviewer", "reject", 1)], "in_review"),
        (team_b, 2, v2, None, None, None, 1, [(maintainer, "owner", "approve", 1)], "in_review"),
        (team_b, 3, v2, owner, None, sre, 1, [(security, "sre", "reject", 1)], "in_review"),
        (team_a, 1, v2, None, None, both, 3, [(both, "sre", "approve", 2), (owner, "owner", "approve", 3)],
         "in_review"),
        (team_a, 1, v1, owner, backup, submitter, 1, [(sre, "sre", "approve_with_conditions", 1),
                                                      (security, "security", "approve", 1)], "in_review"),
        (team_a, 2, v1, owner, None, submitter, 1, [], "draft"),
        (team_b, 1, v1, None, backup, submitter, 1, [], "signed_off"),
    ]
    for team, tier, version, own, back, by, round_, decided, state in plan:
        service = ServiceFactory(team=team, tier=tier, owner=own, backup_owner=back)
        db.session.flush()
        assessment = assessments.start_assessment(service, version, owner)
        assessment.state, assessment.review_round = state, round_
        assessment.submitted_by_id = by.id if by else None
        for signer, role, decision, signed_round in decided:
            db.session.add(SignOff(assessment=assessment, signer_id=signer.id, role=role,
                                   decision=decision, review_round=signed_round))
        made.append(assessment)
    db.session.commit()

    statements = []

    def count(*_):
        statements.append(1)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        counts = {}
        for person in (owner, backup, maintainer, sre, security, reviewer, both, submitter, outsider):
            expected = len(reviews.queue_for(person))
            statements.clear()
            counts[person.id] = reviews.queue_count(person)
            assert counts[person.id] == expected, (person.reviewer_roles, person.is_reviewer)
            assert len(statements) == 2
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    # The fixture really varies: the counts are not all one value, and some are zero.
    assert len(set(counts.values())) >= 4 and 0 in counts.values(), counts


def test_admins_grant_reviewer_roles(client, auth, cast):
    admin = UserFactory(is_admin=True)
    db.session.commit()
    _as(client, auth, cast.member)
    assert client.post(f"/admin/users/{cast.member.id}/reviewer-roles", data={"roles": ["sre"]}).status_code == 403
    _as(client, auth, admin)
    page = client.get("/admin/users").get_data(as_text=True)
    assert f'action="/admin/users/{cast.member.id}/reviewer-roles"' in page
    response = client.post(f"/admin/users/{cast.member.id}/reviewer-roles", data={"roles": ["sre", "security"]})
    assert response.status_code == 302
    assert _fresh(User, cast.member.id).reviewer_roles == ["security", "sre"]
    assert "Mo Member now signs off as security, sre." in client.get("/admin/users").get_data(as_text=True)
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "user.reviewer_roles"))
    assert event.after == {"roles": ["security", "sre"]} and event.actor_id == admin.id
    assert client.post(f"/admin/users/{cast.member.id}/reviewer-roles", data={"roles": ["root"]}).status_code == 302
    assert _fresh(User, cast.member.id).reviewer_roles == ["security", "sre"]  # unknown role refused


def test_signoff_schema_is_validated(app):
    text = Path(catalog.checklist_dirs()[0], "production-readiness.yaml").read_text()
    bad = text.replace("tier_2: [owner, sre]", "tier_2: [owner, owner]")
    with pytest.raises(Exception, match="each role once"):
        parse_checklist(bad, "bad.yaml")
    with pytest.raises(Exception, match="signoff: unknown field 'tier_4'"):
        parse_checklist(text.replace("tier_3: [owner, reviewer]", "tier_3: [owner, reviewer]\n  tier_4: [owner]"), "x.yaml")
    checklist = parse_checklist(text, "ok.yaml")
    assert checklist.signoff.roles_for(1) == ("owner", "sre", "security")
    assert type(checklist).from_json(checklist.to_json()).signoff == checklist.signoff


def test_review_pages_need_login(client, cast):
    assessment = _submitted(cast)
    for url in ("/reviews", f"/assessments/{assessment.id}/review", f"/assessments/{assessment.id}/meeting",
                "/reports/verify"):
        response = client.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_seed_signoffs_signs_answered_drafts_for_the_demo(app):
    cast = Cast(tier=1)
    answered_assessment(cast.service, cast.member)
    made = reviews.seed_signoffs([cast.service], {"sre": cast.sre, "security": cast.security})
    db.session.commit()
    assert len(made) == 1 and made[0].assessment.state == "signed_off"
    assert [s.role for s in made[0].assessment.signoffs] == ["owner", "sre", "security"]


def test_decisions_read_as_sentences_on_the_service_timeline(client, auth, cast):
    signed = _sign(client, auth, cast)
    page = client.get(f"/services/{cast.service.id}/timeline?kind=reviews").get_data(as_text=True)
    assert "Submitted an assessment for review." in page
    assert "Approved as owner (review round 1)." in page and "Approved as sre (review round 1)." in page
    report = db.session.scalar(select(Report).where(Report.assessment_id == signed.id))
    assert f"signed report SHA-256 {report.sha256[:16]}" in page
