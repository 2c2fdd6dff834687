"""Probe runs in the database: what to probe, storing results, answering probe-backed items,
and retention (raw results for PROBE_RETENTION_DAYS, daily roll-ups forever). Flush only.

Writes happen only when something changed: an answer when its status changes, a score
snapshot when the score or verdict moves (`assessments.refresh_score`), the read model's
`ServiceCheck` on every result (it says when a kind was last checked).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import NamedTuple

from flask import current_app
from sqlalchemy import and_, bindparam, case, delete, func, or_, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.orm import selectinload

from webapp import assessments, db_deadlines, runbooks
from webapp.extensions import db
from webapp.models import (
    Answer,
    Assessment,
    AuditEvent,
    ProbeDailyRollup,
    ProbeResult,
    ProbeRun,
    RunbookRevision,
    Service,
    ServiceCheck,
    probe_urls,
    utcnow,
)
from webapp.probes.fetch import AddressPolicy, Fetcher, FetchLimits
from webapp.probes.rules import CheckResult

ANSWER_FOR_OUTCOME = {"pass": "met", "warn": "partial", "fail": "not_met", "error": "not_met"}
RECORD_CHECKS = ("runbook_present", "oncall_present")  # answered from Preflight's own records


class RunRef(NamedTuple):
    """A run's ids: enough to store results without loading the run again per batch."""

    id: int
    service_id: int


def make_fetcher() -> Fetcher:
    config = current_app.config
    return Fetcher(AddressPolicy.from_setting(config["PROBE_ALLOW_NETWORKS"]),
                   FetchLimits(deadline_s=float(config["PROBE_DEADLINE_SECONDS"])),
                   max_connections=config["PROBE_CONCURRENCY"])


# What the sweep reads of a service to know what to fetch (`network_targets` takes a Service
# or a row of these): columns, not ORM objects, for the thousand services of a sweep.
TARGET_COLUMNS = (Service.health_url, Service.readiness_url, Service.deep_health_url, Service.metrics_url,
                  Service.base_url, Service.runbook_url)


def network_targets(service) -> list[tuple[str, str]]:
    """(kind, url) pairs to fetch for a service, from the URLs its team registered."""
    targets = list(probe_urls(service).items())
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


def check_options(service, kind: str) -> dict:
    """Extra arguments a check needs: deep health must differ from the shallow health URL."""
    if kind == "deep_health" and service.health_url:
        return {"shallow_url": service.health_url}
    return {}


def _record_results(service, revision, link_outcome: str | None) -> list[CheckResult]:
    outcome, explanation = runbooks.presence(service, revision, link_outcome)
    results = [CheckResult("runbook_present", service.runbook_url or "", outcome, explanation)]
    results.append(CheckResult(
        "oncall_present", service.oncall_url or "", "pass" if service.oncall_url else "fail",
        "An on-call rotation URL is registered." if service.oncall_url
        else "No on-call rotation URL is registered for this service."))
    return results


def record_checks_many(service_ids: Iterable[int]) -> dict[int, list[CheckResult]]:
    """The checks answered from Preflight's own data (a reviewed runbook, or an external one
    that answers; an on-call rotation) for several services in three queries, whatever their
    number. The external runbook's last outcome comes from the read model, which the sweep
    updated with this run's `runbook_link` result before the services finish."""
    ids = sorted(set(service_ids))
    services = db.session.execute(select(Service.id, Service.runbook_url, Service.oncall_url)
                                  .where(Service.id.in_(ids))).all()
    newest = func.row_number().over(partition_by=RunbookRevision.service_id,
                                    order_by=(RunbookRevision.created_at.desc(), RunbookRevision.id.desc()))
    ranked = select(RunbookRevision.service_id, RunbookRevision.body, RunbookRevision.reviewed_at,
                    newest.label("rank")).where(RunbookRevision.service_id.in_(ids)).subquery()
    revisions = {row.service_id: row for row in db.session.execute(
        select(ranked.c.service_id, ranked.c.body, ranked.c.reviewed_at).where(ranked.c.rank == 1))}
    links = dict(db.session.execute(select(ServiceCheck.service_id, ServiceCheck.outcome).where(
        ServiceCheck.service_id.in_(ids), ServiceCheck.kind == "runbook_link")).all())
    return {service.id: _record_results(service, revisions.get(service.id), links.get(service.id))
            for service in services}


def runs_to_probe(run_ids: list[int]) -> list[tuple[RunRef, Row]]:
    """The unfinished runs among these, each with its service's `TARGET_COLUMNS`; those whose
    health check last ended in an error (a timeout, a refused connection) first: a health
    URL that hung last time probably hangs again, and the sooner it starts, the sooner its
    deadline ends the sweep."""
    last_health = (select(ServiceCheck.outcome).where(ServiceCheck.service_id == ProbeRun.service_id,
                                                      ServiceCheck.kind == "health")
                   .correlate(ProbeRun).scalar_subquery())
    rows = db.session.execute(
        select(ProbeRun.id, ProbeRun.service_id, *TARGET_COLUMNS, last_health.label("last_health"))
        .join(Service, Service.id == ProbeRun.service_id)
        .where(ProbeRun.id.in_(run_ids), ProbeRun.finished_at.is_(None)).order_by(ProbeRun.id)).all()
    return [(RunRef(row.id, row.service_id), row) for row in sorted(rows, key=lambda row: row.last_health != "error")]


def services_with_drafts(service_ids: Iterable[int]) -> set[int]:
    """Which of these services have a draft assessment (the only kind probes answer)."""
    return set(db.session.scalars(select(Assessment.service_id).distinct().where(
        Assessment.service_id.in_(list(service_ids)), Assessment.state == "draft")))


def finish_runs(run_ids: list[int]) -> list[tuple[int, int]]:
    """The bookkeeping of finished runs, set-based in a fixed number of statements: the
    record checks stored, the read model updated, the runs finished (runs already closed
    meanwhile are left alone). Returns (service id, run id) of those whose service has a
    draft assessment, whose probe-backed answers the caller updates with
    `apply_to_services`. Flush only."""
    refs = [RunRef(*row) for row in db.session.execute(  # reads first: the write transaction starts below
        select(ProbeRun.id, ProbeRun.service_id).where(ProbeRun.id.in_(run_ids), ProbeRun.finished_at.is_(None))
        .order_by(ProbeRun.id))]
    if not refs:
        return []
    service_ids = {ref.service_id for ref in refs}
    checks = record_checks_many(service_ids)
    drafts = services_with_drafts(service_ids)
    store_results([(ref, result) for ref in refs for result in checks.get(ref.service_id, [])])
    db.session.execute(update(ProbeRun).where(ProbeRun.id.in_([ref.id for ref in refs]),
                                              ProbeRun.finished_at.is_(None))
                       .values(finished_at=utcnow()).execution_options(synchronize_session=False))
    return [(ref.service_id, ref.id) for ref in refs if ref.service_id in drafts]


def due_service_ids(now: datetime | None = None) -> list[int]:
    """Live services whose interval has elapsed, longest overdue first."""
    now = now or utcnow()
    return list(db.session.scalars(
        select(Service.id).where(Service.lifecycle != "retired",
                                 (Service.next_probe_at.is_(None)) | (Service.next_probe_at <= now))
        .order_by(Service.next_probe_at)))


JITTER = 0.1  # reschedules land within ±10% of the interval, so a spread never collapses


def next_probe_time(service: Service, now: datetime | None = None) -> datetime:
    return _next_probe_time(service.probe_interval_minutes, now)


def _next_probe_time(interval_minutes: int, now: datetime | None = None) -> datetime:
    """One interval from now, give or take 10%: services probed in the same sweep drift
    apart instead of staying in lockstep forever."""
    interval = interval_minutes * 60
    return (now or utcnow()) + timedelta(seconds=interval * random.uniform(1 - JITTER, 1 + JITTER))


def start_run(service: Service, trigger: str) -> ProbeRun:
    """One run ("Probe now"), through the ORM: the view shows it."""
    service.next_probe_at = next_probe_time(service)
    run = ProbeRun(service_id=service.id, trigger=trigger)
    db.session.add(run)
    db.session.flush()
    return run


def start_runs(service_ids: list[int], trigger: str) -> list[RunRef]:
    """Start a run for each service and move its next probe time on, in three statements
    (executemany), with no ORM objects. Flush only."""
    now = utcnow()
    intervals = dict(db.session.execute(select(Service.id, Service.probe_interval_minutes)
                                        .where(Service.id.in_(service_ids))).all())
    ids = [service_id for service_id in service_ids if service_id in intervals]
    if not ids:
        return []
    table, services = ProbeRun.__table__, Service.__table__
    refs = db.session.execute(
        table.insert().returning(table.c.id, table.c.service_id, sort_by_parameter_order=True),
        [{"service_id": service_id, "trigger": trigger, "started_at": now} for service_id in ids]).all()
    db.session.execute(services.update().where(services.c.id == bindparam("sid"))
                       .values(next_probe_at=bindparam("at")),
                       [{"sid": service_id, "at": _next_probe_time(intervals[service_id], now)} for service_id in ids])
    return [RunRef(ref.id, ref.service_id) for ref in refs]


def store_result(run: ProbeRun | RunRef, result: CheckResult) -> ProbeResult:
    finished = utcnow()
    row = ProbeResult(
        run_id=run.id, service_id=run.service_id, kind=result.kind, url=result.url[:2048],
        started_at=finished - timedelta(milliseconds=result.duration_ms), finished_at=finished,
        outcome=result.outcome, status_code=result.status_code,
        latency_ms=round(result.duration_ms, 1), error_code=result.error_code,
        explanation=result.explanation[:2000], details=result.details)
    db.session.add(row)  # flushed with its batch: one INSERT round-trip per row adds up in a sweep
    return row


def _result_row(ref: RunRef, result: CheckResult, finished: datetime) -> dict:
    return {"run_id": ref.id, "service_id": ref.service_id, "kind": result.kind, "url": result.url[:2048],
            "started_at": finished - timedelta(milliseconds=result.duration_ms), "finished_at": finished,
            "outcome": result.outcome, "status_code": result.status_code,
            "latency_ms": round(result.duration_ms, 1), "error_code": result.error_code,
            "explanation": result.explanation[:2000], "details": result.details}  # bounded by CheckResult


_RESULT_COLUMNS = {"run_id": "INTEGER", "service_id": "INTEGER", "kind": "TEXT", "url": "TEXT",
                   "started_at": "TIMESTAMPTZ", "finished_at": "TIMESTAMPTZ", "outcome": "TEXT",
                   "status_code": "INTEGER", "latency_ms": "FLOAT8", "error_code": "TEXT", "explanation": "TEXT",
                   "details": "JSON", "n": "INTEGER"}
# The batch travels as one JSON document that PostgreSQL unpacks (json_to_recordset): the
# statement's text is the same for every batch, so psycopg converts it once and PostgreSQL
# prepares it, and the rows are serialised by the json module's C encoder. (A multi-row VALUES
# of 1,200 parameters was beyond psycopg's query cache; one array per column cost psycopg
# ~0.3 s of a sweep's CPU converting its 72,000 elements one by one.) Rows go in in batch
# order (ORDER BY n), so their serial ids ascend in that order.
_INSERT_RESULTS_POSTGRESQL = text(
    f"INSERT INTO probe_result ({', '.join(c for c in _RESULT_COLUMNS if c != 'n')}) "
    f"SELECT {', '.join(c for c in _RESULT_COLUMNS if c != 'n')} "
    f"FROM json_to_recordset(CAST(:rows AS JSON)) "
    f"AS batch({', '.join(f'{c} {t}' for c, t in _RESULT_COLUMNS.items())}) ORDER BY n RETURNING id")


def _insert_results_postgresql(rows: list[dict]) -> list[int]:
    """Insert result rows on PostgreSQL; their ids in row order."""
    document = _json_document([{**row, "n": n} for n, row in enumerate(rows)])
    return sorted(db.session.execute(_INSERT_RESULTS_POSTGRESQL, {"rows": document}).scalars())


def _json_document(rows: list[dict]) -> str:
    """Rows for `json_to_recordset`: timestamps as ISO 8601, which PostgreSQL reads as TIMESTAMPTZ."""
    return json.dumps(rows, default=datetime.isoformat)


# Every result moves its ServiceCheck: as one statement over a JSON document, like the
# results, instead of an executemany UPDATE (psycopg's pipeline cost ~50 us a row, ~0.4 s
# of a steady 1,000-service sweep).
_MOVE_CHECKS_POSTGRESQL = text(
    "UPDATE service_check SET outcome = moved.new_outcome, result_id = moved.new_result, "
    "checked_at = moved.new_checked, changed_at = moved.new_changed "
    "FROM json_to_recordset(CAST(:rows AS JSON)) AS moved(check_id INTEGER, new_outcome TEXT, new_result INTEGER, "
    "new_checked TIMESTAMPTZ, new_changed TIMESTAMPTZ) WHERE service_check.id = moved.check_id")


def store_results(batch: list[tuple[RunRef, CheckResult]]) -> None:
    """Store a batch of results and keep the read model's latest outcome per service and
    kind, in a fixed number of statements (executemany, no ORM objects): a sweep stores
    thousands of rows, and the ORM's per-object work was most of its time. Flush only."""
    if not batch:
        return
    finished = utcnow()
    service_ids = {ref.service_id for ref, _result in batch}
    known = {(row.service_id, row.kind): row for row in db.session.execute(  # read before writing
        select(ServiceCheck.id, ServiceCheck.service_id, ServiceCheck.kind, ServiceCheck.outcome,
               ServiceCheck.changed_at).where(ServiceCheck.service_id.in_(service_ids)))}
    rows = [_result_row(ref, result, finished) for ref, result in batch]
    if db.engine.dialect.name == "postgresql":
        stored = _insert_results_postgresql(rows)
    else:
        table = ProbeResult.__table__
        stored = db.session.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True),
                                    rows).scalars().all()
    latest: dict[tuple[int, str], tuple[int, str]] = {}
    for result_id, (ref, result) in zip(stored, batch, strict=True):
        latest[(ref.service_id, result.kind)] = (result_id, result.outcome)  # in id order: newest wins
    added, moved, events = [], [], []
    for (service_id, kind), (result_id, outcome) in latest.items():
        check = known.get((service_id, kind))
        if check is None:
            added.append({"service_id": service_id, "kind": kind, "outcome": outcome, "result_id": result_id,
                          "checked_at": finished, "changed_at": finished})
            continue
        changed = check.outcome != outcome
        if changed:
            # A probe turning red or green is part of the service's story (its timeline).
            events.append({"action": "probe.changed", "object_type": "servicecheck", "object_id": check.id,
                           "service_id": service_id, "before": {"outcome": check.outcome},
                           "after": {"kind": kind, "outcome": outcome}, "at": finished})
        moved.append({"check_id": check.id, "new_outcome": outcome, "new_result": result_id,
                      "new_checked": finished, "new_changed": finished if changed else check.changed_at})
    checks = ServiceCheck.__table__
    if added:
        db.session.execute(checks.insert(), added)
    if moved and db.engine.dialect.name == "postgresql":
        db.session.execute(_MOVE_CHECKS_POSTGRESQL, {"rows": _json_document(moved)})
    elif moved:
        db.session.execute(checks.update().where(checks.c.id == bindparam("check_id")).values(
            outcome=bindparam("new_outcome"), result_id=bindparam("new_result"),
            checked_at=bindparam("new_checked"), changed_at=bindparam("new_changed")), moved)
    if events:
        db.session.execute(AuditEvent.__table__.insert(), events)


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


def finish_run(run: ProbeRun, error: str | None = None) -> None:
    run.finished_at = utcnow()
    if error:
        run.error = error[:200]
    db.session.flush()


def close_runs(run_ids: Iterable[int], error: str) -> int:
    """Close runs that could not finish, with the reason; finished runs are left alone."""
    ids = list(run_ids)
    if not ids:
        return 0
    closed = db.session.execute(update(ProbeRun).where(ProbeRun.id.in_(ids), ProbeRun.finished_at.is_(None))
                                .values(finished_at=utcnow(), error=error[:200])).rowcount
    db.session.flush()
    return closed


def close_abandoned_runs(older_than: timedelta, now: datetime | None = None) -> int:
    """Close runs a dead worker left unfinished (started more than `older_than` ago), so
    "Probe now" stops waiting for them."""
    cutoff = (now or utcnow()) - older_than
    abandoned = db.session.scalars(select(ProbeRun.id).where(ProbeRun.finished_at.is_(None),
                                                             ProbeRun.started_at < cutoff)).all()
    return close_runs(abandoned, "abandoned: the worker stopped before the run finished")


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


def apply_to_services(service_ids: Iterable[int]) -> int:
    """Answer probe-backed items of the services' draft assessments from the latest result of
    each kind (the read model), in a fixed number of statements whatever the number of
    services. From `in_review` on, answers are frozen: results are still recorded, and shown
    beside the answer, but do not change it. Writes only what changed and rescores only
    assessments that changed; returns how many did. Flush only."""
    latest: dict[int, dict[str, ServiceCheck]] = {}
    for check in db.session.scalars(select(ServiceCheck).where(ServiceCheck.service_id.in_(sorted(set(service_ids))))):
        latest.setdefault(check.service_id, {})[check.kind] = check
    if not latest:
        return 0
    # Everything scoring reads comes with the drafts: lazy loads cost a query per answer.
    drafts = db.session.scalars(select(Assessment).where(Assessment.service_id.in_(sorted(latest)),
                                                         Assessment.state == "draft")
                                .order_by(Assessment.id)
                                .options(selectinload(Assessment.answers).selectinload(Answer.waivers),
                                         selectinload(Assessment.service),
                                         selectinload(Assessment.checklist_version))).all()
    touched = []
    # Reads first, one flush at the end: on SQLite the write lock is taken at the first write
    # and held to the commit, so flushing per answer held it across every read; and each
    # flush refreshes the dashboard's read model for its services (several queries).
    with db.session.no_autoflush:
        for assessment in drafts:
            checks = latest[assessment.service_id]
            changed = False
            for item in assessments.checklist_for(assessment).items:
                check = checks.get(item.probe) if item.probe else None
                if check is None or check.result_id is None or not item.applies_to(assessment.service.tier):
                    continue
                answer = assessments.record_probe_answer(assessment, item.key, ANSWER_FOR_OUTCOME[check.outcome],
                                                         check.result_id, flush=False)
                changed = changed or answer is not None
            if changed:
                touched.append(assessment)
        assessments.refresh_scores(touched)
    return len(touched)


def uptime(service: Service, kind: str, since: datetime) -> tuple[float | None, int]:
    """Share of passing results of one kind since a moment, and how many there were."""
    outcomes = list(db.session.scalars(select(ProbeResult.outcome).where(
        ProbeResult.service_id == service.id, ProbeResult.kind == kind, ProbeResult.started_at >= since)))
    if not outcomes:
        return None, 0
    return round(100 * sum(o == "pass" for o in outcomes) / len(outcomes), 1), len(outcomes)


ROLLUP_CHUNK = 50_000
# SQLite has one write lock for the whole database, held from a chunk's first write to its
# commit (a chunk's transaction is all writes: the fold, then the DELETE). 10,000 rows held
# it 0.3-0.45 s, and how long a row takes varies with the disk and the machine's load, so on
# SQLite each chunk is sized from how long the last one held the lock, aiming at 0.1 s: well
# under the 0.25 s a person's save may wait, and chunks large enough that their fixed cost
# (index pages of every service rewritten per commit) stays small.
SQLITE_ROLLUP_CHUNK = 4_000  # the first chunk
SQLITE_ROLLUP_CHUNKS = (2_000, 20_000)
SQLITE_ROLLUP_LOCK_SECONDS = 0.2
# Each chunk deletes a row or more of every service, so it touches pages all over the
# service and run indexes: SQLite's default 2 MB page cache re-read them from the file for
# every chunk (a fifth of the roll-up's CPU). The roll-up's connection gets 48 MB, and
# the default back at the end.
SQLITE_ROLLUP_CACHE_KIB = 48 * 1024
ROLLUP_STATEMENT_SECONDS = 120  # a chunk's DELETE on a busy server; requests keep DB_STATEMENT_TIMEOUT_MS


def day_of(column):
    """The UTC calendar day of a timestamp column, in SQL."""
    if db.engine.dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)  # SQLite stores ISO text with +00:00; date() normalises to UTC


def old_result_ids(cutoff: datetime) -> tuple[int, int] | None:
    """The lowest and highest id of the results older than `cutoff`, if there are any."""
    low, high = db.session.execute(select(func.min(ProbeResult.id), func.max(ProbeResult.id))
                                   .where(ProbeResult.started_at < cutoff)).one()
    return None if low is None else (low, high)


def next_sqlite_chunk(size: int, held_seconds: float) -> int:
    """The next chunk's size, scaled towards SQLITE_ROLLUP_LOCK_SECONDS of write lock from
    how long `size` rows held it: at most double or half per step, within bounds."""
    scaled = size * SQLITE_ROLLUP_LOCK_SECONDS / max(held_seconds, 0.001)
    smallest, largest = SQLITE_ROLLUP_CHUNKS
    return int(min(max(scaled, size / 2, smallest), size * 2, largest))


def roll_up_range(cutoff: datetime, low: int, high: int) -> int:
    """Fold the results older than `cutoff` with ids in [low, high] into daily roll-ups
    (aggregated in SQL, added to existing roll-up rows), then delete them. Flush only.

    The median latency is exact within the chunk (percentile_cont on PostgreSQL, row_number
    over the sorted latencies on SQLite). A (service, kind, day) that spans chunks, or that already
    has a roll-up row, keeps the run-weighted mean of its chunk medians: an approximation
    that is exact when a day fits in one chunk (ids are in time order, so most days do).
    """
    in_range = and_(ProbeResult.id.between(low, high), ProbeResult.started_at < cutoff)
    if db.engine.dialect.name == "postgresql":
        day = day_of(ProbeResult.started_at).label("day")
        grouped = select(ProbeResult.service_id, ProbeResult.kind, day, *_outcome_counts(ProbeResult),
                         func.percentile_cont(0.5).within_group(ProbeResult.latency_ms).label("median"),
                         ).where(in_range).group_by(ProbeResult.service_id, ProbeResult.kind, day).subquery()
        _fold_in_sql(grouped, postgresql.insert)
    else:
        _fold_in_sql(_sqlite_groups(in_range), sqlite.insert)
    return _delete_results(in_range)


def _outcome_counts(source) -> list:
    return [func.count().label("runs"), *(func.sum(case((source.outcome == outcome, 1), else_=0)).label(column)
            for outcome, column in (("pass", "passes"), ("warn", "warns"), ("fail", "fails"), ("error", "errors")))]


def _sqlite_groups(in_range):
    """Counts and the exact median per (service, kind, day) in one pass, where SQL has no
    median aggregate (SQLite): each row numbered within its group by latency (no latency
    last), the middle one or two latencies averaged."""
    day = day_of(ProbeResult.started_at).label("day")
    group = (ProbeResult.service_id, ProbeResult.kind, day)
    ranked = select(
        ProbeResult.service_id, ProbeResult.kind, day, ProbeResult.outcome, ProbeResult.latency_ms,
        func.row_number().over(partition_by=group, order_by=(ProbeResult.latency_ms.is_(None),
                                                             ProbeResult.latency_ms)).label("rn"),
        func.count(ProbeResult.latency_ms).over(partition_by=group).label("timed"),
    ).where(in_range).subquery()
    middle = and_(ranked.c.latency_ms.is_not(None),
                  or_(ranked.c.rn == (ranked.c.timed + 1) / 2, ranked.c.rn == (ranked.c.timed + 2) / 2))
    return select(ranked.c.service_id, ranked.c.kind, ranked.c.day, *_outcome_counts(ranked.c),
                  func.avg(case((middle, ranked.c.latency_ms))).label("median"),
                  ).group_by(ranked.c.service_id, ranked.c.kind, ranked.c.day).subquery()


def _fold_in_sql(grouped, dialect_insert) -> None:
    """The whole fold in one statement, INSERT … SELECT … GROUP BY with ON CONFLICT adding to
    existing roll-up rows; no row comes back to Python (PostgreSQL: an executemany of the
    groups took a third of the roll-up's time; SQLite: merging in Python re-read the day's
    roll-up rows for every chunk, and built every group's parameters inside the write lock)."""
    table = ProbeDailyRollup.__table__
    rows = select(grouped.c.service_id, grouped.c.kind, grouped.c.day, grouped.c.runs, grouped.c.passes,
                  grouped.c.warns, grouped.c.fails, grouped.c.errors, grouped.c.median)
    # SQLite needs a WHERE before ON CONFLICT to tell the upsert from a join's ON.
    insert = dialect_insert(table).from_select(
        ["service_id", "kind", "day", "runs", "passes", "warns", "fails", "errors", "latency_ms_median"],
        rows.where(true()))
    new = insert.excluded
    insert = insert.on_conflict_do_update(index_elements=["service_id", "kind", "day"], set_={
        "runs": table.c.runs + new.runs, "passes": table.c.passes + new.passes, "warns": table.c.warns + new.warns,
        "fails": table.c.fails + new.fails, "errors": table.c.errors + new.errors,
        # the run-weighted mean of the medians
        "latency_ms_median": case(
            (new.latency_ms_median.is_(None), table.c.latency_ms_median),
            (table.c.latency_ms_median.is_(None), new.latency_ms_median),
            else_=(table.c.latency_ms_median * table.c.runs + new.latency_ms_median * new.runs)
            / (table.c.runs + new.runs))})
    db.session.execute(insert)


def _delete_results(in_range) -> int:
    """Delete a chunk's results, first unlinking the answers and read-model rows that
    point at them. Flush only."""
    doomed = select(ProbeResult.id).where(in_range).scalar_subquery()
    db.session.execute(update(Answer).where(Answer.probe_result_id.in_(doomed)).values(probe_result_id=None)
                       .execution_options(synchronize_session=False))
    db.session.execute(update(ServiceCheck).where(ServiceCheck.result_id.in_(doomed)).values(result_id=None)
                       .execution_options(synchronize_session=False))
    removed = db.session.execute(delete(ProbeResult).where(in_range)
                                 .execution_options(synchronize_session=False)).rowcount
    db.session.flush()
    return removed


def roll_up_old_results(retention_days: int, now: datetime | None = None, chunk: int | None = None,
                        after_chunk: Callable[[], None] | None = None) -> int:
    """Fold raw results older than the retention window into daily roll-ups, chunk by chunk,
    then delete them and the runs left empty. Flush only; `after_chunk` (the job's commit and
    lock renewal) runs after each chunk so no transaction grows with the table."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    sized_by_lock = chunk is None and db.engine.dialect.name != "postgresql"
    size = chunk or (ROLLUP_CHUNK if db.engine.dialect.name == "postgresql" else SQLITE_ROLLUP_CHUNK)
    removed = 0
    default_cache = db.session.execute(text("PRAGMA cache_size")).scalar() if sized_by_lock else None
    low, last = old_result_ids(cutoff) or (1, 0)
    while low <= last:  # id ranges of `size` ids, in time order
        high = min(low + size - 1, last)
        started = time.monotonic()
        if sized_by_lock:  # on the chunk's connection (a commit may hand back another)
            db.session.execute(text(f"PRAGMA cache_size=-{SQLITE_ROLLUP_CACHE_KIB}"))
        with db_deadlines.longer(db.session, ROLLUP_STATEMENT_SECONDS):  # its COMMIT too
            removed += roll_up_range(cutoff, low, high)
            if after_chunk is not None:
                after_chunk()
        low = high + 1
        if sized_by_lock:
            size = next_sqlite_chunk(size, time.monotonic() - started)
    if default_cache is not None:
        db.session.execute(text(f"PRAGMA cache_size={int(default_cache)}"))
    empty = select(ProbeRun.id).where(ProbeRun.finished_at < cutoff, ~ProbeRun.results.any())
    db.session.execute(delete(ProbeRun).where(ProbeRun.id.in_(empty.scalar_subquery()))
                       .execution_options(synchronize_session=False))
    db.session.flush()
    return removed
