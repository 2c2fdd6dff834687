"""Request tests for each /api/v1 operation: status, body, and the rows left in the database."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from tests.signoff_helpers import answered_assessment
from webapp import assessments, catalog, tokens
from webapp.extensions import db
from webapp.models import (
    Answer,
    Assessment,
    AuditEvent,
    Evidence,
    ProbeResult,
    ProbeRun,
    Report,
    Service,
    ServiceCheck,
    Team,
    Waiver,
    utcnow,
)


@pytest.fixture
def ctx(app):
    """A maintainer of team “core” with service “api” and a token of every scope."""
    membership = MembershipFactory(role="maintainer", team__slug="core", team__name="Core")
    service = ServiceFactory(team=membership.team, slug="api", name="API", tier=2)
    _, secret = tokens.create_token(membership.user, "t", ["read", "write", "probe"], 30)
    db.session.commit()

    return SimpleNamespace(user=membership.user, team=membership.team, service=service,
                           headers={"Authorization": f"Bearer {secret}"})


def start(service, user) -> Assessment:
    catalog.sync(force=True)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"), user)
    db.session.commit()
    return assessment


def critical_key(assessment) -> str:
    return next(i.key for i in assessments.checklist_for(assessment).items if i.critical and i.applies_to(2))


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


# Teams -----------------------------------------------------------------------------------

def test_create_get_list_and_rename_team(client, ctx):
    response = client.post("/api/v1/teams", json={"name": "Payments", "description": "Money"}, headers=ctx.headers)
    assert response.status_code == 201
    assert response.headers["Location"] == "/api/v1/teams/payments"
    assert response.get_json()["slug"] == "payments"
    got = client.get("/api/v1/teams/payments", headers=ctx.headers)
    assert got.get_json()["description"] == "Money" and got.headers["ETag"] == response.headers["ETag"]
    listed = client.get("/api/v1/teams", headers=ctx.headers).get_json()
    assert [t["slug"] for t in listed["items"]] == ["core", "payments"] and listed["next_cursor"] is None
    renamed = client.patch("/api/v1/teams/payments", json={"name": "Payments Platform"},
                           headers={**ctx.headers, "If-Match": got.headers["ETag"]})
    assert renamed.status_code == 200 and renamed.headers["Location"] == "/api/v1/teams/payments-platform"
    db.session.expire_all()
    team = db.session.scalar(select(Team).where(Team.slug == "payments-platform"))
    assert team.description == "Money"


def test_duplicate_team_is_a_conflict(client, ctx):
    response = client.post("/api/v1/teams", json={"name": "Core"}, headers=ctx.headers)
    assert response.status_code == 409
    assert response.get_json()["detail"] == "A team with that name already exists."
    assert count(Team) == 1


# Services --------------------------------------------------------------------------------

def test_register_service_with_owners_by_email(client, ctx):
    backup = UserFactory(email="backup@example.test")
    db.session.commit()
    response = client.post("/api/v1/teams/core/services", headers=ctx.headers, json={
        "name": "Payments API", "tier": 1, "lifecycle": "launching", "owner": ctx.user.email,
        "backup_owner": "backup@example.test", "health_url": "https://pay.example.test/health"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["slug"] == "payments-api" and body["owner"] == ctx.user.email
    assert response.headers["Location"] == "/api/v1/services/core/payments-api"
    db.session.expire_all()
    service = db.session.scalar(select(Service).where(Service.slug == "payments-api"))
    assert service.backup_owner_id == backup.id and service.tier == 1
    assert db.session.scalar(select(AuditEvent.action).where(AuditEvent.service_id == service.id)) == "service.create"


def test_register_service_refuses_unknown_owner_and_bad_urls(client, ctx):
    response = client.post("/api/v1/teams/core/services", headers=ctx.headers,
                           json={"name": "X", "owner": "ghost@example.test"})
    assert response.status_code == 422
    assert response.get_json()["errors"] == [{"field": "owner", "pointer": "#/owner",
                                              "detail": "No account uses ghost@example.test."}]
    response = client.post("/api/v1/teams/core/services", headers=ctx.headers,
                           json={"name": "X", "health_url": "javascript:alert(1)", "tier": 7})
    fields = {e["field"]: e["detail"] for e in response.get_json()["errors"]}
    assert fields["health_url"] == "Enter a full http:// or https:// URL."
    assert "less than or equal to 3" in fields["tier"]
    # What the web form refuses, the API refuses too: an address probes never fetch, a bad
    # port, credentials in a URL.
    response = client.post("/api/v1/teams/core/services", headers=ctx.headers,
                           json={"name": "X", "health_url": "http://169.254.169.254/latest/meta-data/",
                                 "metrics_url": "http://127.0.0.1:99999/metrics",
                                 "oncall_url": "https://ops:hunter2@oncall.example/rota"})
    assert response.status_code == 422
    fields = {e["field"]: e["detail"] for e in response.get_json()["errors"]}
    assert "Probes never fetch this address" in fields["health_url"]
    assert "1 to 65535" in fields["metrics_url"] and "user name or password" in fields["oncall_url"]
    assert "hunter2" not in response.get_data(as_text=True)
    assert count(Service) == 1


def test_list_and_get_services(client, ctx):
    ServiceFactory(team=ctx.team, slug="old", lifecycle="retired")
    db.session.commit()
    listed = client.get("/api/v1/services?team=core", headers=ctx.headers).get_json()
    assert [s["slug"] for s in listed["items"]] == ["api"]
    everything = client.get("/api/v1/services?include_retired=true", headers=ctx.headers).get_json()
    assert {s["slug"] for s in everything["items"]} == {"api", "old"}
    got = client.get("/api/v1/services/core/api", headers=ctx.headers)
    assert got.status_code == 200 and got.get_json()["team"] == "core" and got.headers["ETag"]
    missing = client.get("/api/v1/services/core/nope", headers=ctx.headers)
    assert missing.status_code == 404 and missing.get_json()["detail"] == "There is no service “core/nope”."


def test_update_service_changes_only_sent_fields(client, ctx):
    etag = client.get("/api/v1/services/core/api", headers=ctx.headers).headers["ETag"]
    response = client.patch("/api/v1/services/core/api", json={"tier": 1, "oncall_url": "https://pager.example.test"},
                            headers={**ctx.headers, "If-Match": etag})
    assert response.status_code == 200 and response.headers["ETag"] != etag
    db.session.expire_all()
    service = db.session.scalar(select(Service))
    assert (service.tier, service.oncall_url, service.name) == (1, "https://pager.example.test", "API")
    cleared = client.patch("/api/v1/services/core/api", json={"oncall_url": None},
                           headers={**ctx.headers, "If-Match": response.headers["ETag"]})
    assert cleared.status_code == 200 and cleared.get_json()["oncall_url"] is None
    # A PATCH that changes nothing writes nothing: the ETag others hold stays good.
    same = client.patch("/api/v1/services/core/api", json={"tier": 1}, headers={**ctx.headers, "If-Match": "*"})
    assert same.status_code == 200 and same.headers["ETag"] == cleared.headers["ETag"]
    empty = client.patch("/api/v1/services/core/api", json={}, headers={**ctx.headers, "If-Match": "*"})
    assert empty.headers["ETag"] == cleared.headers["ETag"]
    # Retired through the lifecycle field: dated like POST …/retire does.
    retired = client.patch("/api/v1/services/core/api", json={"lifecycle": "retired"},
                           headers={**ctx.headers, "If-Match": cleared.headers["ETag"]})
    assert retired.get_json()["retired_at"] is not None
    created = client.post("/api/v1/teams/core/services", headers=ctx.headers,
                          json={"name": "Old batch", "lifecycle": "retired"})
    assert created.status_code == 201 and created.get_json()["retired_at"] is not None


def test_retire_service(client, ctx):
    response = client.post("/api/v1/services/core/api/retire", headers=ctx.headers)
    assert response.status_code == 200 and response.get_json()["lifecycle"] == "retired"
    again = client.post("/api/v1/services/core/api/retire", headers=ctx.headers)
    assert again.status_code == 409 and again.get_json()["detail"] == "This service is already retired."


# Assessments and answers -----------------------------------------------------------------

def test_start_list_and_get_assessment(client, ctx):
    catalog.sync(force=True)
    db.session.commit()
    response = client.post("/api/v1/services/core/api/assessments", json={}, headers=ctx.headers)
    assert response.status_code == 201
    body = response.get_json()
    assert body["state"] == "draft" and body["checklist"] == "production-readiness"
    assert body["verdict"] == "not_ready" and len(body["items"]) > 10
    assert response.headers["Location"] == f"/api/v1/assessments/{body['id']}"
    listed = client.get("/api/v1/services/core/api/assessments", headers=ctx.headers).get_json()
    assert [a["id"] for a in listed["items"]] == [body["id"]]
    got = client.get(f"/api/v1/assessments/{body['id']}", headers=ctx.headers).get_json()
    assert got["categories"] and got["items"][0]["etag"] == '"v0"'


def test_start_assessment_with_unknown_checklist(client, ctx):
    response = client.post("/api/v1/services/core/api/assessments", json={"checklist": "nope"}, headers=ctx.headers)
    assert response.status_code == 422
    assert response.get_json()["errors"][0]["field"] == "checklist"
    assert count(Assessment) == 0


def test_set_answer_updates_score_and_history(client, ctx):
    assessment = start(ctx.service, ctx.user)
    key = critical_key(assessment)
    response = client.put(f"/api/v1/assessments/{assessment.id}/items/{key}/answer",
                          json={"status": "met", "note": "Done in CI"},
                          headers={**ctx.headers, "If-Match": '"v0"'})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["item"]["status"] == "met" and body["item"]["answered_by"] == ctx.user.email
    assert body["assessment"]["score"] > 0 and response.headers["ETag"] == body["item"]["etag"]
    db.session.expire_all()
    answer = db.session.scalar(select(Answer))
    assert (answer.status, answer.note, len(answer.changes)) == ("met", "Done in CI", 1)
    assert db.session.get(Assessment, assessment.id).score == body["assessment"]["score"]


def test_set_answer_rule_errors_are_409(client, ctx):
    assessment = start(ctx.service, ctx.user)
    key = critical_key(assessment)
    response = client.put(f"/api/v1/assessments/{assessment.id}/items/{key}/answer",
                          json={"status": "n_a"}, headers={**ctx.headers, "If-Match": "*"})
    assert response.status_code == 409
    assert response.get_json()["detail"] == "Say why this item does not apply: N/A needs a reason in the note."
    missing = client.put(f"/api/v1/assessments/{assessment.id}/items/nope/answer",
                         json={"status": "met"}, headers={**ctx.headers, "If-Match": "*"})
    assert missing.status_code == 404
    assert count(Answer) == 0


def test_add_and_remove_evidence(client, ctx):
    assessment = start(ctx.service, ctx.user)
    key = critical_key(assessment)
    response = client.post(f"/api/v1/assessments/{assessment.id}/items/{key}/evidence",
                           json={"url": "https://ci.example.test/runs/42", "title": "Load test"},
                           headers=ctx.headers)
    assert response.status_code == 201
    evidence_id = response.get_json()["evidence"]["id"]
    assert db.session.scalar(select(Evidence.title)) == "Load test"
    removed = client.delete(f"/api/v1/evidence/{evidence_id}", headers=ctx.headers)
    assert removed.status_code == 204 and removed.data == b""
    assert count(Evidence) == 0
    assert client.delete(f"/api/v1/evidence/{evidence_id}", headers=ctx.headers).status_code == 404


def test_request_and_decide_waiver(client, ctx):
    reviewer = UserFactory(is_reviewer=True)
    _, reviewer_secret = tokens.create_token(reviewer, "r", ["read", "write"], 30)
    assessment = start(ctx.service, ctx.user)
    key = critical_key(assessment)
    assessments.record_answer(assessment, key, "not_met", "", ctx.user)
    db.session.commit()
    expires = (utcnow() + timedelta(days=30)).date().isoformat()
    response = client.post(f"/api/v1/assessments/{assessment.id}/items/{key}/waivers", headers=ctx.headers, json={
        "reason": "Launch first", "compensating_control": "Manual failover",
        "risk_owner": ctx.user.email, "expires_on": expires})
    assert response.status_code == 201, response.get_json()
    waiver_id = response.get_json()["id"]
    # The maintainer is no reviewer: refused. The reviewer approves.
    refused = client.post(f"/api/v1/waivers/{waiver_id}/decision", json={"decision": "approve"}, headers=ctx.headers)
    assert refused.status_code == 403
    approved = client.post(f"/api/v1/waivers/{waiver_id}/decision", json={"decision": "approve"},
                           headers={"Authorization": f"Bearer {reviewer_secret}"})
    assert approved.status_code == 200 and approved.get_json()["approved_by"] == reviewer.email
    db.session.expire_all()
    assert db.session.get(Waiver, waiver_id).state == "approved"


def test_submit_for_review_after_every_applicable_item_is_answered(client, ctx):
    assessment = answered_assessment(ctx.service, ctx.user, skip=("log_rotation",))
    db.session.commit()
    url = f"/api/v1/assessments/{assessment.id}/submit"
    refused = client.post(url, headers=ctx.headers)
    assert refused.status_code == 409 and refused.get_json()["unanswered"] == ["log_rotation"]
    assert refused.get_json()["detail"] == "1 applicable item still unanswered; answer every one before submitting."
    outsider = MembershipFactory(role="maintainer")
    _, other = tokens.create_token(outsider.user, "o", ["read", "write"], 30)
    _, read_only = tokens.create_token(ctx.user, "r", ["read"], 30)
    db.session.commit()
    assert client.post(url, headers={"Authorization": f"Bearer {other}"}).status_code == 403
    assert client.post(url, headers={"Authorization": f"Bearer {read_only}"}).status_code == 403
    client.put(f"/api/v1/assessments/{assessment.id}/items/log_rotation/answer",
               json={"status": "met"}, headers={**ctx.headers, "If-Match": "*"})

    submitted = client.post(url, headers=ctx.headers)
    assert submitted.status_code == 200, submitted.get_json()
    assert submitted.get_json()["state"] == "in_review" and submitted.get_json()["submitted_at"]
    db.session.expire_all()
    stored = db.session.get(Assessment, assessment.id)
    assert (stored.state, stored.review_round, stored.submitted_by_id) == ("in_review", 1, ctx.user.id)
    assert db.session.scalar(select(AuditEvent.action).where(AuditEvent.action == "assessment.submit"))
    again = client.post(url, headers=ctx.headers)
    assert again.status_code == 409 and again.get_json()["detail"] == "Only a draft can be submitted for review."


# Probes ----------------------------------------------------------------------------------

def test_trigger_probe_run_and_read_results(client, ctx):
    response = client.post("/api/v1/services/core/api/probe-runs", headers=ctx.headers)
    assert response.status_code == 202
    run_id = response.get_json()["id"]
    assert response.headers["Location"] == f"/api/v1/services/core/api/probe-runs/{run_id}"
    run = client.get(f"/api/v1/services/core/api/probe-runs/{run_id}", headers=ctx.headers).get_json()
    # No URLs registered: only the checks answered from Preflight's own records ran.
    assert {r["kind"] for r in run["results"]} == {"runbook_present", "oncall_present"}
    assert run["trigger"] == "api" and run["finished_at"] is not None
    assert count(ProbeRun) == 1 and count(ProbeResult) == 2


def test_latest_checks_come_from_the_read_model(client, ctx):
    db.session.add(ServiceCheck(service_id=ctx.service.id, kind="health", outcome="fail"))
    db.session.commit()
    body = client.get("/api/v1/services/core/api/checks", headers=ctx.headers).get_json()
    assert [(c["kind"], c["outcome"]) for c in body["checks"]] == [("health", "fail")]


def test_probe_run_of_another_service_is_404(client, ctx):
    other = ServiceFactory(team=ctx.team, slug="web")
    db.session.add(ProbeRun(service_id=other.id, trigger="cli"))
    db.session.commit()
    run_id = db.session.scalar(select(ProbeRun.id))
    assert client.get(f"/api/v1/services/core/api/probe-runs/{run_id}", headers=ctx.headers).status_code == 404


# Readiness and reports -------------------------------------------------------------------

def test_readiness_of_an_unassessed_service(client, ctx):
    body = client.get("/api/v1/services/core/api/readiness", headers=ctx.headers).get_json()
    assert body["verdict"] == "not_assessed" and body["ready"] is False
    assert body["assessment"] is None and body["signed_off_report"] is None


def test_readiness_reports_verdict_failing_criticals_and_checks(client, ctx):
    assessment = start(ctx.service, ctx.user)
    key = critical_key(assessment)
    assessments.record_answer(assessment, key, "not_met", "", ctx.user)
    db.session.add(ServiceCheck(service_id=ctx.service.id, kind="health", outcome="pass"))
    db.session.commit()
    body = client.get("/api/v1/services/core/api/readiness", headers=ctx.headers).get_json()
    stored = db.session.get(Assessment, assessment.id)
    assert (body["verdict"], body["score"], body["blocker_count"]) == (stored.verdict, stored.score,
                                                                      stored.blocker_count)
    assert body["ready"] is False and body["assessment"]["id"] == assessment.id
    assert {"key": key, "title": assessments.checklist_for(assessment).item(key).title,
            "status": "not_met"} in body["failing_criticals"]
    assert len(body["failing_criticals"]) == stored.blocker_count
    assert body["checks"][0]["kind"] == "health"


def test_readiness_gives_signed_off_report_id_and_sha256(client, ctx):
    assessment = start(ctx.service, ctx.user)
    assessment.state, assessment.decided_at = "signed_off", utcnow()
    pdf = b"%PDF-1.7 signed"
    report = Report(assessment_id=assessment.id, pdf=pdf, sha256=hashlib.sha256(pdf).hexdigest())
    db.session.add(report)
    db.session.commit()
    body = client.get("/api/v1/services/core/api/readiness", headers=ctx.headers).get_json()
    assert body["signed_off_report"]["id"] == report.id
    assert body["signed_off_report"]["sha256"] == hashlib.sha256(pdf).hexdigest()


def test_reports_list_get_download_and_verify(client, ctx):
    assessment = start(ctx.service, ctx.user)
    pdf = b"%PDF-1.7 the report"
    digest = hashlib.sha256(pdf).hexdigest()
    db.session.add(Report(assessment_id=assessment.id, pdf=pdf, sha256=digest))
    db.session.commit()
    listed = client.get("/api/v1/reports?team=core&service=api", headers=ctx.headers).get_json()
    assert [r["sha256"] for r in listed["items"]] == [digest]
    report_id = listed["items"][0]["id"]
    meta = client.get(f"/api/v1/reports/{report_id}", headers=ctx.headers).get_json()
    assert meta["size_bytes"] == len(pdf) and meta["download_url"] == f"/api/v1/reports/{report_id}/pdf"
    download = client.get(meta["download_url"], headers=ctx.headers)
    assert download.data == pdf and download.mimetype == "application/pdf"
    assert download.headers["ETag"] == f'"{digest}"'
    # The file is the stored one, but it carries no signature: not genuine (a real report is
    # signed at sign-off; tests/test_reports.py verifies real ones).
    by_file = client.post("/api/v1/reports/verify", data=pdf, content_type="application/pdf", headers=ctx.headers)
    assert by_file.get_json()["match"] is False and by_file.get_json()["report"]["id"] == report_id
    assert by_file.get_json()["signature_checked"] is True
    assert by_file.get_json()["detail"].startswith("Signature: ")
    tampered = client.post("/api/v1/reports/verify", data=pdf + b" ", content_type="application/pdf",
                           headers=ctx.headers)
    assert tampered.status_code == 200 and tampered.get_json()["match"] is False
    by_hash = client.post("/api/v1/reports/verify", json={"sha256": digest.upper()}, headers=ctx.headers)
    assert by_hash.get_json()["match"] is True


# Audit and me ----------------------------------------------------------------------------

def test_audit_events_filter_by_object_and_time(client, ctx):
    client.post("/api/v1/services/core/api/retire", headers=ctx.headers)
    everything = client.get("/api/v1/audit-events", headers=ctx.headers).get_json()["items"]
    assert everything[0]["action"] == "service.retire"  # newest first
    assert everything[0]["actor"] == ctx.user.email and everything[0]["service"] == "api"
    retire = client.get(f"/api/v1/audit-events?object_type=service&object_id={ctx.service.id}&action=service.retire",
                        headers=ctx.headers).get_json()["items"]
    assert len(retire) == 1 and retire[0]["before"] == {"lifecycle": "live"}
    future = (utcnow() + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert client.get(f"/api/v1/audit-events?since={future}", headers=ctx.headers).get_json()["items"] == []
    by_service = client.get("/api/v1/audit-events?team=core&service=api", headers=ctx.headers).get_json()["items"]
    assert {e["action"] for e in by_service} == {"service.retire"}


def test_me_describes_the_token(client, ctx):
    body = client.get("/api/v1/me", headers=ctx.headers).get_json()
    assert body["email"] == ctx.user.email
    assert body["token"]["scopes"] == ["read", "write", "probe"] and body["token"]["team"] is None
