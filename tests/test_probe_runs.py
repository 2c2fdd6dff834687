"""Probes inside the app: runs stored, probe-backed answers filled in, overrides respected,
"Probe now", the CLI, concurrency with hanging targets, and retention roll-ups."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tests.factories import MembershipFactory, ServiceFactory
from tests.probe_targets import hostile_server
from webapp import assessments, catalog
from webapp.extensions import db
from webapp.models import ProbeDailyRollup, ProbeResult, ProbeRun, utcnow
from webapp.probes import runs
from webapp.probes.tasks import probe_services

HEALTH_ITEM = "health_checks_configured"
METRICS_ITEM = "metrics_exported"
RUNBOOK_ITEM = "runbook"
ONCALL_ITEM = "oncall_rotation"


@pytest.fixture(scope="module")
def targets():
    with hostile_server() as servers:
        yield servers


@pytest.fixture
def world(targets, auth):
    membership = MembershipFactory(role="member")
    service = ServiceFactory(
        team=membership.team, tier=1, base_url=targets.url("/"), health_url=targets.url("/health"),
        readiness_url=targets.url("/ready"), deep_health_url=targets.url("/health/deep"),
        metrics_url=targets.url("/metrics"), oncall_url="https://oncall.example.test/payments")
    catalog.sync(force=True)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"),
                                              membership.user)
    db.session.commit()
    auth.login(membership.user)
    return membership.user, service, assessment


def test_probe_run_stores_results_and_answers_probe_backed_items(world):
    _user, service, assessment = world
    probe_services([service], "manual")
    latest = runs.latest_results(service)
    assert latest["health"].outcome == "pass"
    assert latest["metrics"].outcome in ("pass", "warn")
    assert latest["deep_health"].outcome == "pass"
    assert latest["correlation_id"].outcome in ("pass", "fail")
    assert latest["runbook_present"].outcome == "fail" and latest["oncall_present"].outcome == "pass"
    assert latest["https"].outcome in ("fail", "error")  # served over plain HTTP only
    db.session.expire_all()
    health = assessments.answer_for(assessment, HEALTH_ITEM)
    assert (health.source, health.status, health.probe_result_id) == ("probe", "met", latest["health"].id)
    assert assessments.answer_for(assessment, RUNBOOK_ITEM).status == "not_met"
    assert assessments.answer_for(assessment, ONCALL_ITEM).status == "met"
    run = db.session.scalar(select(ProbeRun))
    assert run.finished_at is not None and service.next_probe_at > utcnow()


def test_a_person_overrides_a_probe_answer_only_with_a_note(world):
    user, service, assessment = world
    probe_services([service], "manual")
    with pytest.raises(assessments.AssessmentError, match="came from a probe"):
        assessments.record_answer(assessment, HEALTH_ITEM, "not_met", "", user)
    assessments.record_answer(assessment, HEALTH_ITEM, "not_met", "health endpoint lies: no DB check", user)
    db.session.commit()
    probe_services([service], "manual")
    db.session.expire_all()
    answer = assessments.answer_for(assessment, HEALTH_ITEM)
    assert (answer.source, answer.status) == ("manual", "not_met")


def test_probe_now_button_and_live_results_page(client, world):
    _, service, _ = world
    response = client.post(f"/services/{service.id}/probes/run")
    assert response.status_code == 302 and "/probes/runs/" in response.headers["Location"]
    page = client.get(response.headers["Location"], headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "health" in page and "Pass" in page
    page = client.get(f"/services/{service.id}/probes").get_data(as_text=True)
    assert "uptime" in page.lower()


def test_hanging_targets_do_not_delay_healthy_ones(targets, world):
    _, healthy, _ = world
    hanging = [ServiceFactory(team=healthy.team, health_url=targets.url("/silence"), base_url=None)
               for _ in range(10)]
    db.session.commit()
    started = time.monotonic()
    probe_services([healthy, *hanging], "schedule")
    elapsed = time.monotonic() - started
    assert elapsed < 2 + 2.5, elapsed  # one deadline (2 s) for everyone, plus bookkeeping
    assert runs.latest_results(healthy)["health"].outcome == "pass"
    for service in hanging:
        result = runs.latest_results(service)["health"]
        assert (result.outcome, result.error_code) == ("error", "timeout")


def test_cli_check_prints_one_json_object(runner, targets):
    result = runner.invoke(args=["probes", "check", targets.url("/health"), "--kind", "health"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {"kind", "outcome", "error_code", "duration_ms", "status_code", "explanation", "details"} <= set(data)
    assert data["outcome"] == "pass"
    result = runner.invoke(args=["probes", "check", targets.url("/health-says-fail"), "--kind", "health"])
    assert result.exit_code == 1 and json.loads(result.output)["outcome"] == "fail"
    result = runner.invoke(args=["probes", "check", "http://169.254.169.254/", "--kind", "health"])
    assert result.exit_code == 1 and json.loads(result.output)["error_code"] == "ssrf_blocked"
    assert runner.invoke(args=["probes", "check", "ftp://x", "--kind", "health"]).exit_code == 2
    assert runner.invoke(args=["probes", "check", targets.url("/health"), "--kind", "nope"]).exit_code == 2


def test_cli_run_one_service(runner, world):
    _, service, _ = world
    result = runner.invoke(args=["probes", "run", service.slug])
    assert result.exit_code == 0, result.output
    assert "probed 1 service" in result.output
    assert runner.invoke(args=["probes", "run", "no-such-service"]).exit_code == 2


def test_retention_rolls_up_old_results(world):
    _, service, assessment = world
    probe_services([service], "manual")
    total = db.session.scalar(select(func.count(ProbeResult.id)))
    later = utcnow() + timedelta(days=31)
    removed = runs.roll_up_old_results(30, now=later)
    db.session.commit()
    assert removed == total
    assert db.session.scalar(select(func.count(ProbeResult.id))) == 0
    rollup = db.session.scalar(select(ProbeDailyRollup).where(ProbeDailyRollup.kind == "health"))
    assert (rollup.runs, rollup.passes) == (1, 1)
    db.session.expire_all()
    assert assessments.answer_for(assessment, HEALTH_ITEM).probe_result_id is None


def test_evidence_link_check_marks_broken_and_blocked_links(targets, world):
    import asyncio

    from webapp.models import Evidence
    from webapp.probes.tasks import check_links

    user, _, assessment = world
    links = {"ok": targets.url("/health"), "missing": targets.url("/no-such-page"),
             "metadata": "http://169.254.169.254/latest/meta-data/", "reset": targets.url("/reset")}
    for title, url in links.items():
        assessments.add_evidence(assessment, "structured_logging", url, title, user)
    db.session.commit()
    evidence = db.session.scalars(select(Evidence)).all()
    asyncio.run(check_links(evidence))
    db.session.commit()
    state = {e.title: (e.check_ok, e.check_error) for e in db.session.scalars(select(Evidence))}
    assert state["ok"] == (True, None)
    assert state["missing"][0] is False and "404" in state["missing"][1]
    assert state["metadata"][0] is None and "not checked" in state["metadata"][1]
    assert state["reset"][0] is False
    page = assessments.answer_for(assessment, "structured_logging")
    assert all(e.checked_at for e in page.evidence)


def test_failure_excerpt_is_shown_escaped(client, world):
    _, service, _ = world
    run = runs.start_run(service, "manual")
    from webapp.probes.rules import CheckResult

    row = runs.store_result(run, CheckResult(
        "health", service.health_url, "fail", "answered HTTP 500", status_code=500,
        details={"excerpt": "<script>alert('x')</script><img src=x onerror=alert(1)>"}))
    db.session.commit()
    page = client.get(f"/probe-results/{row.id}").get_data(as_text=True)
    assert "<script>alert(" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page


def test_scheduler_probes_only_due_live_services(targets, world):
    from webapp.probes.tasks import probe_due_services

    _, due, _ = world
    later = ServiceFactory(team=due.team, health_url=targets.url("/health"),
                           next_probe_at=utcnow() + timedelta(minutes=5))
    retired = ServiceFactory(team=due.team, health_url=targets.url("/health"), lifecycle="retired",
                             next_probe_at=utcnow() - timedelta(minutes=5))
    due.next_probe_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    probe_due_services()
    probed = set(db.session.scalars(select(ProbeRun.service_id)))
    assert probed == {due.id}
    db.session.refresh(due)
    assert due.next_probe_at > utcnow() + timedelta(minutes=14)
    assert later.id not in probed and retired.id not in probed


def test_a_second_sweep_waits_for_the_lock(targets, world):
    from webapp.extensions import huey
    from webapp.probes.tasks import probe_due_services

    _, due, _ = world
    due.next_probe_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    with huey.lock_task("probe-due-services"):  # another consumer is sweeping
        probe_due_services()  # Huey logs "not run" and stores the lock error as the result
    assert db.session.scalar(select(func.count(ProbeRun.id))) == 0


def test_runbook_present_passes_on_a_reviewed_runbook_or_a_link_that_answers(world, targets):
    from webapp import runbooks
    from webapp.models import Service

    user, service, _ = world
    runbooks.save_revision(service, "# How to run it", user, based_on_id=None)
    db.session.commit()
    probe_services([service], "manual")
    assert runs.latest_results(service)["runbook_present"].outcome == "warn"  # written, not reviewed
    runbooks.mark_reviewed(service, user)
    db.session.commit()
    probe_services([db.session.get(Service, service.id)], "manual")
    assert runs.latest_results(service)["runbook_present"].outcome == "pass"

    linked = ServiceFactory(team=service.team, runbook_url=targets.url("/health"))
    broken = ServiceFactory(team=service.team, runbook_url=targets.url("/no-such-page"))
    db.session.commit()
    probe_services([linked, broken], "manual")
    assert runs.latest_results(linked)["runbook_link"].outcome == "pass"
    assert runs.latest_results(linked)["runbook_present"].outcome == "pass"
    assert runs.latest_results(broken)["runbook_link"].outcome == "fail"
    assert runs.latest_results(broken)["runbook_present"].outcome == "fail"


def test_latest_outcome_per_kind_and_its_changes_go_on_the_timeline(world):
    from webapp.models import AuditEvent, ServiceCheck

    _user, service, _ = world
    for outcome in ("pass", "pass", "fail"):
        run = runs.start_run(service, "manual")
        row = runs.store_result(run, runs.CheckResult("health", "http://x/health", outcome, "ok"))
        db.session.flush()
        runs.record_latest(row)
        db.session.commit()
    check = db.session.scalar(select(ServiceCheck).where(ServiceCheck.service_id == service.id))
    assert (check.kind, check.outcome) == ("health", "fail")
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "probe.changed")).all()
    assert [(e.before, e.after) for e in events] == [({"outcome": "pass"}, {"kind": "health", "outcome": "fail"})]
