"""Probes inside the app: runs stored, probe-backed answers filled in, overrides respected,
"Probe now", the CLI, concurrency with hanging targets, and retention roll-ups."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from flask import current_app
from sqlalchemy import event, func, insert, select, text, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from tests.factories import MembershipFactory, ServiceFactory
from tests.probe_targets import hostile_server
from webapp import assessments, catalog
from webapp.extensions import db
from webapp.models import (
    Answer,
    Assessment,
    ProbeDailyRollup,
    ProbeResult,
    ProbeRun,
    ScoreSnapshot,
    ServiceCheck,
    utcnow,
)
from webapp.probes import runs
from webapp.probes.rules import CheckResult
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
    before = client.get(f"/services/{service.id}/probes").get_data(as_text=True)
    assert "No health checks in the last 7 days." in before and "of 0 health checks" not in before
    response = client.post(f"/services/{service.id}/probes/run")
    assert response.status_code == 302 and "/probes/runs/" in response.headers["Location"]
    page = client.get(response.headers["Location"], headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "health" in page and "Pass" in page
    page = client.get(f"/services/{service.id}/probes").get_data(as_text=True)
    assert "uptime" in page.lower() and "of 1 health check passed" in page


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


def test_a_sweep_collects_garbage_less_often_and_restores_the_collector_after(monkeypatch, targets, world):
    """While sweeping the young-generation threshold is raised (collections took a sixth of
    the CPU); afterwards, even when sweeps overlap, the process's own setting is back."""
    import gc

    from webapp import collector
    from webapp.probes.fetch import Fetcher

    _, first, _ = world
    service = ServiceFactory(team=first.team, health_url=targets.url("/health"), base_url=None)
    db.session.commit()
    before, seen, fetch = gc.get_threshold(), [], Fetcher.fetch

    async def recording(self, url, **kwargs):
        seen.append(gc.get_threshold())
        return await fetch(self, url, **kwargs)

    monkeypatch.setattr(Fetcher, "fetch", recording)
    with collector.fewer_collections():  # an overlapping sweep in another thread
        probe_services([service], "schedule")
        assert gc.get_threshold()[0] == collector.SWEEP_THRESHOLD
    assert seen and all(t[0] == collector.SWEEP_THRESHOLD for t in seen)
    assert gc.get_threshold() == before


def _record_fetches(monkeypatch) -> list[str]:
    """The URLs the fetcher is asked for from now on, in the order asked."""
    from webapp.probes.fetch import Fetcher

    asked, fetch = [], Fetcher.fetch

    async def recording(self, url, **kwargs):
        asked.append(url)
        return await fetch(self, url, **kwargs)

    monkeypatch.setattr(Fetcher, "fetch", recording)
    return asked


def test_a_sweep_asks_for_every_health_url_before_anything_else(monkeypatch, targets, world):
    """Health URLs are the ones that hang: their first requests go out first, so a hanging
    one starts its deadline at the start of the sweep, not behind the other requests."""
    _, first, _ = world
    services = [ServiceFactory(team=first.team, health_url=targets.url(f"/health?s={n}"), base_url=None,
                               metrics_url=targets.url(f"/metrics?s={n}")) for n in range(3)]
    db.session.commit()
    asked = _record_fetches(monkeypatch)
    probe_services(services, "schedule")
    assert [url.split("/")[-1] for url in asked[:6]] == [
        "health?s=0", "health?s=1", "health?s=2", "metrics?s=0", "metrics?s=1", "metrics?s=2"]


def test_a_sweep_logs_its_outcomes_in_one_line_and_only_what_did_not_pass_call_by_call(caplog, world):
    _, service, _ = world
    with caplog.at_level(logging.INFO, logger="webapp.probes"):
        probe_services([service], "schedule")
    events = [(getattr(r, "event", None), r) for r in caplog.records]
    calls = [r for event, r in events if event == "probe.call"]
    sweeps = [r for event, r in events if event == "probe.sweep"]
    assert len(sweeps) == 1 and sweeps[0].services == 1
    outcomes = sweeps[0].outcomes
    assert outcomes["pass"] >= 4  # health, readiness, deep health, metrics...
    assert calls and all(r.outcome != "pass" for r in calls)  # ...are not a line each
    assert len(calls) == sum(n for outcome, n in outcomes.items() if outcome != "pass")


def test_health_urls_that_failed_last_time_are_asked_first(monkeypatch, targets, world):
    """A health URL that hung last sweep probably hangs again: the next sweep asks it before
    the others, so its deadline starts first. Other URLs keep their order."""
    _, first, _ = world
    services = [ServiceFactory(team=first.team, health_url=targets.url(f"/health?s={n}"), base_url=None)
                for n in range(3)]
    services[2].health_url = targets.url("/reset?s=2")  # its connection is reset: an error
    db.session.commit()
    probe_services(services, "schedule")
    assert runs.latest_results(services[2])["health"].outcome == "error"
    asked = _record_fetches(monkeypatch)
    probe_services(services, "schedule")
    assert [url.split("?")[-1] for url in asked[:3]] == ["s=2", "s=0", "s=1"]


def test_a_hanging_health_url_costs_one_request_not_three(app, monkeypatch, targets, world):
    """Health, correlation id and latency share the first request to the health URL. With
    room for one request at a time, a hanging health URL holds the sweep one deadline (2 s);
    before, each check waited its own deadline in turn (6 s)."""
    _, healthy, _ = world
    hanging = ServiceFactory(team=healthy.team, health_url=targets.url("/silence"), base_url=None)
    db.session.commit()
    monkeypatch.setitem(app.config, "PROBE_CONCURRENCY", 1)
    started = time.monotonic()
    probe_services([hanging], "schedule")
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 2 * 2, elapsed
    latest = runs.latest_results(hanging)
    for kind in ("health", "correlation_id", "latency"):
        assert (latest[kind].outcome, latest[kind].error_code) == ("error", "timeout"), kind
    probe_services([healthy], "schedule")
    latest = runs.latest_results(healthy)
    assert [latest[kind].outcome for kind in ("health", "correlation_id")] == ["pass", "pass"]
    assert len(latest["latency"].details["samples_ms"]) == 3  # the shared request and two more


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
    assert due.next_probe_at > utcnow() + timedelta(minutes=13)  # 15 minutes, ±10% jitter
    assert later.id not in probed and retired.id not in probed


def test_a_second_sweep_waits_for_the_lock(targets, world):
    from webapp.probes import locks
    from webapp.probes.tasks import SWEEP_LOCK, probe_due_services

    _, due, _ = world
    due.next_probe_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    with locks.held(SWEEP_LOCK, timedelta(minutes=1)) as lease:  # another consumer is sweeping
        assert lease is not None
        assert probe_due_services.call_local() == 0
        assert locks.acquire(SWEEP_LOCK, timedelta(minutes=1)) is None
    assert db.session.scalar(select(func.count(ProbeRun.id))) == 0
    assert probe_due_services.call_local() == 1  # released: the next sweep runs


def test_a_lock_left_by_a_dead_worker_is_taken_over(targets, world):
    """The lock of a killed worker must not stop probing: it expires, and a holder on this
    host whose process is gone is replaced at once."""
    from webapp.models import JobLock
    from webapp.probes import locks
    from webapp.probes.tasks import SWEEP_LOCK, probe_due_services

    _, due, _ = world
    due.next_probe_at = utcnow() - timedelta(minutes=1)
    db.session.add(JobLock(name=SWEEP_LOCK, holder="elsewhere@1234:beef", expires_at=utcnow() + timedelta(hours=1)))
    db.session.commit()
    assert probe_due_services.call_local() == 0  # a live holder on another host: wait
    db.session.execute(update(JobLock).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert probe_due_services.call_local() == 1  # expired: taken over
    due.next_probe_at = utcnow() - timedelta(minutes=1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    db.session.add(JobLock(name=SWEEP_LOCK, holder=f"{locks.HOST}@{dead.pid}:beef",
                           expires_at=utcnow() + timedelta(hours=1)))
    db.session.commit()
    assert probe_due_services.call_local() == 1  # its process is gone: taken over at once
    assert db.session.scalar(select(func.count(JobLock.name))) == 0


# ---------------------------------------------------------------- write only on change


def probe_answers(assessment) -> dict[str, tuple]:
    db.session.expire_all()
    return {a.item_key: (a.status, a.version, a.note, len(a.changes))
            for a in db.session.scalars(select(Answer).where(Answer.assessment_id == assessment.id,
                                                             Answer.source == "probe"))}


def test_idle_sweeps_write_no_answers_and_no_snapshots(world):
    """Four sweeps that find nothing new change no answer version (no false 409 for a
    person whose page is older than one interval) and add no score snapshot."""
    _, service, assessment = world
    probe_services([service], "schedule")
    first = probe_answers(assessment)
    assert first[HEALTH_ITEM][0] == "met" and len(first) >= 4
    assert all(note == "" for _status, _version, note, _changes in first.values())  # never the person's field
    snapshots = db.session.scalar(select(func.count(ScoreSnapshot.id)))
    for _ in range(4):
        probe_services([service], "schedule")
    assert probe_answers(assessment) == first
    assert db.session.scalar(select(func.count(ScoreSnapshot.id))) == snapshots
    checks = {c.kind: c for c in db.session.scalars(select(ServiceCheck).where(ServiceCheck.service_id == service.id))}
    latest = runs.latest_results(service)
    assert {kind: check.result_id for kind, check in checks.items()} == {k: r.id for k, r in latest.items()}
    health = assessments.answer_for(assessment, HEALTH_ITEM)
    assert health.probe_result_id == db.session.scalar(
        select(func.min(ProbeResult.id)).where(ProbeResult.kind == "health"))  # the result that set it


def test_a_changed_outcome_writes_the_answer_once(targets, world):
    _, service, assessment = world
    probe_services([service], "schedule")
    before = probe_answers(assessment)[HEALTH_ITEM]
    snapshots = db.session.scalar(select(func.count(ScoreSnapshot.id)))
    service.health_url = targets.url("/health-says-fail")
    db.session.commit()
    probe_services([service], "schedule")
    probe_services([service], "schedule")
    status, version, note, changes = probe_answers(assessment)[HEALTH_ITEM]
    assert (status, version, note, changes) == ("not_met", before[1] + 1, "", before[3] + 1)
    assert db.session.scalar(select(func.count(ScoreSnapshot.id))) == snapshots + 1
    from webapp.models import AuditEvent

    events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "probe.changed")).all()
    assert [(e.before, e.after) for e in events if e.after["kind"] == "health"] == [
        ({"outcome": "pass"}, {"kind": "health", "outcome": "fail"})]


def test_probes_do_not_change_answers_once_in_review(targets, world):
    _user, service, assessment = world
    probe_services([service], "schedule")
    # In review (submitting needs every item answered: the state is what matters here).
    db.session.get(Assessment, assessment.id).state = "in_review"
    db.session.commit()
    before = probe_answers(assessment)
    service.health_url = targets.url("/health-says-fail")
    db.session.commit()
    probe_services([service], "schedule")
    assert probe_answers(assessment) == before  # frozen: the answer stays as it was reviewed
    check = db.session.scalar(select(ServiceCheck).where(ServiceCheck.service_id == service.id,
                                                         ServiceCheck.kind == "health"))
    assert check.outcome == "fail"  # but the result is recorded, to be shown beside the answer


# ---------------------------------------------------------------- short transactions


class PersonSaving:
    """A person's save of one answer from their own session and thread, started by the sweep's
    own flush or statement (SQLAlchemy events), so it lands at an exact moment mid-sweep. The
    form was loaded before the sweep (`form_version`). `when(session)` picks an ORM flush,
    `on_statement(statement, parameters)` a Core statement (the sweep's bulk bookkeeping)."""

    def __init__(self, answer_id: int, user_id: int, when=None, on_statement=None):
        self.answer_id, self.user_id = answer_id, user_id
        self.when, self.on_statement = when, on_statement
        self.form_version = db.session.get(Answer, answer_id).version
        self.app = current_app._get_current_object()
        self.outcome: list[object] = []
        self.thread: threading.Thread | None = None

    def save(self) -> None:
        with self.app.app_context(), Session(db.engine) as other:
            answer = other.get(Answer, self.answer_id)
            if answer.version != self.form_version:
                self.outcome.append("conflict: the answer changed since the form was loaded")
                return
            answer.status, answer.source, answer.note = "partial", "manual", "checked by hand"
            answer.answered_by_id = self.user_id
            try:
                other.commit()
                self.outcome.append("ok")
            except Exception as exc:  # noqa: BLE001 - the test's assertion shows it
                self.outcome.append(exc)

    def _maybe_start(self, session, _context, _instances) -> None:
        if self.thread is None and self.when is not None and self.when(session):
            self._start()

    def _maybe_start_at(self, _conn, _cursor, statement, parameters, _context, _executemany) -> None:
        if self.thread is None and self.on_statement is not None and self.on_statement(statement, parameters):
            self._start()

    def _start(self) -> None:
        self.thread = threading.Thread(target=self.save)
        self.thread.start()
        self.thread.join(timeout=3)  # it commits now, or waits for the sweep's transaction

    def __enter__(self):
        event.listen(Session, "before_flush", self._maybe_start)
        event.listen(db.engine, "before_cursor_execute", self._maybe_start_at)
        return self

    def __exit__(self, *_exc):
        event.remove(Session, "before_flush", self._maybe_start)
        event.remove(db.engine, "before_cursor_execute", self._maybe_start_at)
        assert self.thread is not None, "the moment to save never came"
        self.thread.join(timeout=10)


def assert_every_run_finished_cleanly(services) -> None:
    db.session.expire_all()
    probe_runs = db.session.scalars(select(ProbeRun).where(ProbeRun.trigger == "schedule")).all()
    assert probe_runs and all(run.finished_at is not None and run.error is None for run in probe_runs)
    for service in services:
        assert db.session.scalar(select(ServiceCheck.outcome).where(
            ServiceCheck.service_id == service.id, ServiceCheck.kind == "health")) == "pass"
        assert db.session.scalar(select(ServiceCheck.outcome).where(
            ServiceCheck.service_id == service.id, ServiceCheck.kind == "oncall_present")) is not None


def test_a_persons_save_mid_sweep_succeeds_and_other_services_keep_their_bookkeeping(targets, world):
    """The save lands while the sweep does this very service's bookkeeping. Before, the
    sweep rewrote every answer in one long transaction: on PostgreSQL the sweep then failed
    with StaleDataError and lost every service's bookkeeping; on SQLite the save waited
    for the whole sweep and then lost to the rewritten version (a false conflict)."""
    user, service, assessment = world
    others = [ServiceFactory(team=service.team, health_url=targets.url("/health"), base_url=None)
              for _ in range(3)]
    db.session.commit()
    probe_services([service], "schedule")
    answer_id = assessments.answer_for(assessment, HEALTH_ITEM).id

    def bookkeeping_of_this_service(statement, parameters) -> bool:
        """The INSERT of this service's record checks (bulk, so its parameters are flat)."""
        return (statement.lstrip().upper().startswith("INSERT INTO PROBE_RESULT")
                and "runbook_present" in repr(parameters) and f"{service.id}" in repr(parameters))

    with PersonSaving(answer_id, user.id, on_statement=bookkeeping_of_this_service) as person:
        probe_services([service, *others], "schedule")
    assert person.outcome == ["ok"]
    answer = db.session.get(Answer, answer_id)
    assert (answer.source, answer.status, answer.note) == ("manual", "partial", "checked by hand")
    assert_every_run_finished_cleanly([service, *others])


def test_a_conflicting_save_costs_the_sweep_one_retry_of_one_service(targets, world):
    """PostgreSQL: the person saves the answer the sweep has loaded and is about to change
    (the probe outcome changed too). The sweep's UPDATE hits the optimistic-lock conflict
    (StaleDataError); it retries that service alone, the person's answer wins, and every
    other service keeps its bookkeeping. (SQLite serialises writers, so the save waits for
    the sweep's short transaction instead and the conflict is the person's: see above.)"""
    if db.engine.dialect.name != "postgresql":  # not a missing resource: CI's PostgreSQL pass runs it
        pytest.skip("SQLite serialises writers, so this race exists only on PostgreSQL")
    user, service, assessment = world
    others = [ServiceFactory(team=service.team, health_url=targets.url("/health"), base_url=None)
              for _ in range(3)]
    db.session.commit()
    probe_services([service], "schedule")
    service.health_url = targets.url("/health-says-fail")  # the sweep will want "not met"
    db.session.commit()
    answer_id = assessments.answer_for(assessment, HEALTH_ITEM).id

    def about_to_rewrite_the_answer(session) -> bool:
        return any(isinstance(o, Answer) and o.id == answer_id for o in session.dirty)

    with PersonSaving(answer_id, user.id, about_to_rewrite_the_answer) as person:
        probe_services([service, *others], "schedule")
    assert person.outcome == ["ok"]
    answer = db.session.get(Answer, answer_id)
    assert (answer.source, answer.status, answer.note) == ("manual", "partial", "checked by hand")
    assert_every_run_finished_cleanly(others)
    run = db.session.scalars(select(ProbeRun).where(ProbeRun.service_id == service.id)
                             .order_by(ProbeRun.id.desc())).first()
    assert (run.finished_at is not None, run.error) == (True, None)


def test_a_run_whose_answers_keep_conflicting_says_so_and_others_are_unaffected(monkeypatch, targets, world):
    user, service, _ = world
    other = ServiceFactory(team=service.team, health_url=targets.url("/health"), base_url=None)
    others_draft = assessments.start_assessment(other, catalog.latest_version("production-readiness"), user)
    db.session.commit()
    real = runs.apply_to_services

    def conflicted(service_ids):
        if service.id in service_ids:  # the batch, then the service alone: conflicts every time
            raise StaleDataError("someone else saved")
        return real(service_ids)

    monkeypatch.setattr(runs, "apply_to_services", conflicted)
    probe_services([service, other], "schedule")
    db.session.expire_all()
    by_service = {run.service_id: run for run in db.session.scalars(select(ProbeRun))}
    assert by_service[service.id].finished_at is not None
    assert by_service[service.id].error == "answers not updated: conflict (StaleDataError)"
    assert (by_service[other.id].finished_at is not None, by_service[other.id].error) == (True, None)
    # Both drafts' answers were one batch; the conflict cost only the service that had it.
    assert assessments.answer_for(others_draft, HEALTH_ITEM).status == "met"


def test_runs_left_by_a_dead_worker_are_closed(world):
    from webapp.probes.tasks import close_abandoned_runs

    _, service, _ = world
    stale = ProbeRun(service_id=service.id, trigger="manual", started_at=utcnow() - timedelta(hours=1))
    fresh = ProbeRun(service_id=service.id, trigger="manual")
    db.session.add_all([stale, fresh])
    db.session.commit()
    assert close_abandoned_runs.call_local() == 1
    db.session.expire_all()
    assert stale.finished_at is not None and stale.error.startswith("abandoned")
    assert fresh.finished_at is None


# ---------------------------------------------------------------- spread


def test_new_services_are_spread_over_their_interval(world):
    from webapp import registry

    user, service, _ = world
    created = [registry.register_service(service.team, {"name": f"spread {n}", "tier": 3,
                                                        "probe_interval_minutes": 60}, user)
               for n in range(40)]
    db.session.commit()
    now = utcnow()
    offsets = sorted((s.next_probe_at - now).total_seconds() for s in created)
    assert offsets[0] < 60 * 60 and offsets[-1] <= 60 * 60
    assert offsets[-1] - offsets[0] > 30 * 60  # 40 random draws over an hour: not one minute
    assert len({round(o) for o in offsets}) > 30
    for one in created[:10]:
        runs.start_run(one, "schedule")
    later = sorted((s.next_probe_at - now).total_seconds() for s in created[:10])
    assert all(54 * 60 - 5 <= o <= 66 * 60 + 5 for o in later) and later[-1] - later[0] > 1


def test_roll_up_aggregates_in_chunks_and_adds_to_existing_rows(world):
    """The roll-up runs in SQL, chunk by chunk, adding to roll-up rows already there; the
    median is exact within a chunk."""
    _, service, _ = world
    run = runs.start_run(service, "schedule")
    runs.finish_run(run)
    day1, day2 = datetime(2026, 1, 10, 23, 0, tzinfo=UTC), datetime(2026, 1, 11, 1, 0, tzinfo=UTC)
    rows = [("health", day1, "pass", 10.0), ("health", day1, "fail", 30.0), ("health", day1, "pass", 20.0),
            ("health", day2, "warn", 5.0), ("health", day2, "error", None), ("latency", day2, "pass", 100.0)]
    db.session.execute(insert(ProbeResult), [
        {"run_id": run.id, "service_id": service.id, "kind": kind, "url": "http://x", "started_at": at,
         "finished_at": at, "outcome": outcome, "latency_ms": latency, "explanation": "", "details": {}}
        for kind, at, outcome, latency in rows])
    db.session.add(ProbeDailyRollup(service_id=service.id, kind="latency", day=day2.date(), runs=1, passes=1,
                                    warns=0, fails=0, errors=0, latency_ms_median=200.0))
    recent = runs.store_result(run, CheckResult("health", "http://x", "pass", "fine"))
    db.session.commit()
    commits = []
    removed = runs.roll_up_old_results(30, now=datetime(2026, 3, 1, tzinfo=UTC), chunk=2,
                                       after_chunk=lambda: commits.append(db.session.commit()))
    db.session.commit()
    assert removed == 6 and len(commits) >= 3
    assert db.session.scalars(select(ProbeResult.id)).all() == [recent.id]  # inside the window: kept
    got = {(r.kind, r.day.isoformat()): (r.runs, r.passes, r.warns, r.fails, r.errors, r.latency_ms_median)
           for r in db.session.scalars(select(ProbeDailyRollup))}
    assert got[("health", "2026-01-10")][:5] == (3, 2, 0, 1, 0)
    assert got[("health", "2026-01-11")] == (2, 0, 1, 0, 1, 5.0)
    assert got[("latency", "2026-01-11")] == (2, 2, 0, 0, 0, 150.0)  # added to the existing row
    assert 10.0 <= got[("health", "2026-01-10")][5] <= 30.0  # chunks of 2: weighted chunk medians
    exact = runs.roll_up_old_results(30, now=datetime(2026, 3, 1, tzinfo=UTC))
    assert exact == 0


def test_the_roll_up_runs_its_chunks_with_a_longer_statement_deadline_than_requests(world):
    """PostgreSQL: requests keep DB_STATEMENT_TIMEOUT_MS (5 s), which cut the roll-up's
    50,000-row DELETE and its COMMIT on a busy server; each chunk's transaction gets longer."""
    if db.engine.dialect.name != "postgresql":  # not a missing resource: SQLite has no statement timeout
        pytest.skip("statement_timeout is PostgreSQL's")
    _, service, _ = world
    run = runs.start_run(service, "schedule")
    runs.finish_run(run)
    old = datetime(2026, 1, 10, tzinfo=UTC)
    db.session.execute(insert(ProbeResult), [{"run_id": run.id, "service_id": service.id, "kind": "health",
                                              "url": "http://x", "started_at": old, "finished_at": old,
                                              "outcome": "pass", "explanation": "", "details": {}}])
    db.session.commit()
    request_timeout = db.session.scalar(text("SHOW statement_timeout"))
    seen = []
    runs.roll_up_old_results(30, now=datetime(2026, 3, 1, tzinfo=UTC), after_chunk=lambda: (
        seen.append(db.session.scalar(text("SHOW statement_timeout"))), db.session.commit()))
    assert seen == [f"{runs.ROLLUP_STATEMENT_SECONDS // 60}min"]
    assert db.session.scalar(text("SHOW statement_timeout")) == request_timeout != seen[0]


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


def test_sqlite_roll_up_chunks_are_sized_by_how_long_the_last_one_held_the_lock():
    """Faster than the aim: the next chunk grows (at most double); slower: it shrinks (at
    most half); always within bounds, so one slow chunk never makes them tiny."""
    aim, (smallest, largest) = runs.SQLITE_ROLLUP_LOCK_SECONDS, runs.SQLITE_ROLLUP_CHUNKS
    assert runs.next_sqlite_chunk(4000, aim) == 4000
    assert runs.next_sqlite_chunk(4000, aim / 1.5) == 6000
    assert runs.next_sqlite_chunk(4000, aim / 100) == 8000
    assert runs.next_sqlite_chunk(4000, aim * 4) == 2000
    assert runs.next_sqlite_chunk(smallest, aim * 10) == smallest
    assert runs.next_sqlite_chunk(largest, 0.0) == largest
