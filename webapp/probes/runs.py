"""Probe runs in the database: what to probe, storing results, answering probe-backed items,
and retention (raw results for PROBE_RETENTION_DAYS, daily roll-ups forever). Flush only."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import delete, func, select, update

from webapp import assessments, runbooks
from webapp.extensions import db
from webapp.models import (
    Answer,
    Assessment,
    AuditEvent,
    ProbeDailyRollup,
    ProbeResult,
    ProbeRun,
    Service,
    ServiceCheck,
    utcnow,
)
from webapp.probes.fetch import AddressPolicy, Fetcher, FetchLimits
from webapp.probes.rules import CheckResult, bounded_details

ANSWER_FOR_OUTCOME = {"pass": "met", "warn": "partial", "fail": "not_met", "error": "not_met"}
RECORD_CHECKS = ("runbook_present", "oncall_present")  # answered from Preflight's own records


def make_fetcher() -> Fetcher:
    config = current_app.config
    return Fetcher(AddressPolicy.from_setting(config["PROBE_ALLOW_NETWORKS"]),
                   FetchLimits(deadline_s=float(config["PROBE_DEADLINE_SECONDS"])),
                   max_connections=config["PROBE_CONCURRENCY"])


def network_targets(service: Service) -> list[tuple[str, str]]:
    """(kind, url) pairs to fetch for a service, from the URLs its team registered."""
    targets = list(service.probe_urls.items())
    if service.base_url:
        targets.append(("https", service.base_url))
        targets.append(("security_headers", service.base_url))
        if service.base_url.lower().startswith("https://"):
            targets.append(("tls_expiry", service.base_url))
    if service.health_url or service.base_url:
        targets.append(("correlation_id", service.health_url or service.base_url))
    if service.health_url:
        targets.append(("latency", service.health_url))
    if service.runbook_url:
        targets.append(("runbook_link", service.runbook_url))
    return targets


def check_options(service: Service, kind: str) -> dict:
    """Extra arguments a check needs: deep health must differ from the shallow health URL."""
    if kind == "deep_health" and service.health_url:
        return {"shallow_url": service.health_url}
    return {}


def record_checks(service: Service) -> list[CheckResult]:
    """Checks answered from Preflight's own data: a reviewed runbook (or an external one that
    answers, as fetched earlier in the same run) and an on-call rotation."""
    link_outcome = None
    if service.runbook_url:
        link_outcome = db.session.scalar(
            select(ProbeResult.outcome).where(ProbeResult.service_id == service.id,
                                              ProbeResult.kind == "runbook_link")
            .order_by(ProbeResult.started_at.desc(), ProbeResult.id.desc()).limit(1))
    outcome, explanation = runbooks.presence(service, runbooks.current(service), link_outcome)
    results = [CheckResult("runbook_present", service.runbook_url or "", outcome, explanation)]
    results.append(CheckResult(
        "oncall_present", service.oncall_url or "", "pass" if service.oncall_url else "fail",
        "An on-call rotation URL is registered." if service.oncall_url
        else "No on-call rotation URL is registered for this service."))
    return results


def due_services(now: datetime | None = None) -> list[Service]:
    now = now or utcnow()
    return list(db.session.scalars(
        select(Service).where(Service.lifecycle != "retired",
                              (Service.next_probe_at.is_(None)) | (Service.next_probe_at <= now))
        .order_by(Service.next_probe_at)))


def start_run(service: Service, trigger: str) -> ProbeRun:
    service.next_probe_at = utcnow() + timedelta(minutes=service.probe_interval_minutes)
    run = ProbeRun(service_id=service.id, trigger=trigger)
    db.session.add(run)
    db.session.flush()
    return run


def store_result(run: ProbeRun, result: CheckResult) -> ProbeResult:
    finished = utcnow()
    row = ProbeResult(
        run_id=run.id, service_id=run.service_id, kind=result.kind, url=result.url[:2048],
        started_at=finished - timedelta(milliseconds=result.duration_ms), finished_at=finished,
        outcome=result.outcome, status_code=result.status_code,
        latency_ms=round(result.duration_ms, 1), error_code=result.error_code,
        explanation=result.explanation[:2000], details=bounded_details(result.details))
    db.session.add(row)  # flushed with its batch: one INSERT round-trip per row adds up in a sweep
    return row


def record_latest(row: ProbeResult) -> ServiceCheck:
    """Keep the read model's latest outcome for the row's service and kind; `changed_at`
    moves only when the outcome does. The row must be flushed (it needs an id)."""
    check = db.session.scalar(select(ServiceCheck).where(ServiceCheck.service_id == row.service_id,
                                                         ServiceCheck.kind == row.kind))
    if check is None:
        check = ServiceCheck(service_id=row.service_id, kind=row.kind, outcome=row.outcome,
                             changed_at=row.finished_at or utcnow())
        db.session.add(check)
    elif check.outcome != row.outcome:
        # A probe turning red or green is part of the service's story (its timeline).
        db.session.add(AuditEvent(action="probe.changed", object_type="servicecheck", object_id=check.id,
                                  service_id=row.service_id, before={"outcome": check.outcome},
                                  after={"kind": row.kind, "outcome": row.outcome}))
        check.outcome, check.changed_at = row.outcome, row.finished_at or utcnow()
    check.result_id, check.checked_at = row.id, row.finished_at or utcnow()
    return check


def finish_run(run: ProbeRun) -> None:
    run.finished_at = utcnow()
    db.session.flush()


def latest_results(service: Service) -> dict[str, ProbeResult]:
    """The newest result of each check kind for a service, read through the read model
    (ServiceCheck, one row per kind) in one query. Services probed before the read model
    existed, with no ServiceCheck rows yet, are read from raw results, newest per kind."""
    rows = db.session.scalars(select(ProbeResult).join(ServiceCheck, ServiceCheck.result_id == ProbeResult.id)
                              .where(ServiceCheck.service_id == service.id)).all()
    if not rows and db.session.scalar(select(ServiceCheck.id).where(
            ServiceCheck.service_id == service.id).limit(1)) is None:
        rank = func.row_number().over(partition_by=ProbeResult.kind,
                                      order_by=(ProbeResult.started_at.desc(), ProbeResult.id.desc()))
        newest = (select(ProbeResult.id, rank.label("rank"))
                  .where(ProbeResult.service_id == service.id).subquery())
        rows = db.session.scalars(select(ProbeResult).join(newest, newest.c.id == ProbeResult.id)
                                  .where(newest.c.rank == 1)).all()
    return {row.kind: row for row in sorted(rows, key=lambda r: r.kind)}


def apply_to_assessments(service: Service) -> int:
    """Answer probe-backed items of the service's open assessments from the latest results."""
    latest = latest_results(service)
    changed = 0
    open_assessments = db.session.scalars(select(Assessment).where(
        Assessment.service_id == service.id, Assessment.state.in_(("draft", "in_review"))))
    for assessment in open_assessments:
        touched = False
        for item in assessments.checklist_for(assessment).items:
            result = latest.get(item.probe) if item.probe else None
            if result is None or not item.applies_to(service.tier):
                continue
            explanation = f"Probe {result.kind}: {result.outcome} — {result.explanation}"
            answer = assessments.record_probe_answer(assessment, item.key, ANSWER_FOR_OUTCOME[result.outcome],
                                                     explanation[:2000], result.id)
            touched = touched or answer is not None
        if touched:
            assessments.refresh_score(assessment)
            changed += 1
    return changed


def uptime(service: Service, kind: str, since: datetime) -> tuple[float | None, int]:
    """Share of passing results of one kind since a moment, and how many there were."""
    outcomes = list(db.session.scalars(select(ProbeResult.outcome).where(
        ProbeResult.service_id == service.id, ProbeResult.kind == kind, ProbeResult.started_at >= since)))
    if not outcomes:
        return None, 0
    return round(100 * sum(o == "pass" for o in outcomes) / len(outcomes), 1), len(outcomes)


def roll_up_old_results(retention_days: int, now: datetime | None = None) -> int:
    """Fold raw results older than the retention window into daily roll-ups, then delete them."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    old = db.session.scalars(select(ProbeResult).where(ProbeResult.started_at < cutoff)).all()
    if not old:
        return 0
    groups: dict[tuple, list[ProbeResult]] = defaultdict(list)
    for row in old:
        groups[(row.service_id, row.kind, row.started_at.astimezone(UTC).date())].append(row)
    for (service_id, kind, day), rows in groups.items():
        rollup = db.session.scalar(select(ProbeDailyRollup).where(
            ProbeDailyRollup.service_id == service_id, ProbeDailyRollup.kind == kind,
            ProbeDailyRollup.day == day))
        if rollup is None:
            rollup = ProbeDailyRollup(service_id=service_id, kind=kind, day=day,
                                      runs=0, passes=0, warns=0, fails=0, errors=0)
            db.session.add(rollup)
        rollup.runs += len(rows)
        for outcome, attribute in (("pass", "passes"), ("warn", "warns"), ("fail", "fails"), ("error", "errors")):
            setattr(rollup, attribute, getattr(rollup, attribute) + sum(r.outcome == outcome for r in rows))
        latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
        if latencies:
            rollup.latency_ms_median = statistics.median(latencies)
    ids = [row.id for row in old]
    db.session.execute(update(Answer).where(Answer.probe_result_id.in_(ids)).values(probe_result_id=None))
    db.session.execute(delete(ProbeResult).where(ProbeResult.id.in_(ids)))
    db.session.execute(delete(ProbeRun).where(ProbeRun.finished_at < cutoff,
                                              ~ProbeRun.results.any()))
    db.session.flush()
    return len(ids)
