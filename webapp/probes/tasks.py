"""Background jobs (Huey): the probe scheduler, probe runs, evidence link checks, retention.

Jobs are the callers here, so they own the commits. Results are committed in small batches
while a sweep runs, so "Probe now" shows them as they arrive.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import contextmanager

from huey import crontab
from sqlalchemy import select

from webapp.extensions import db, huey
from webapp.models import Evidence, ProbeRun, Service, utcnow
from webapp.probes import runs
from webapp.probes.rules import CheckResult, run_check

log = logging.getLogger("webapp.probes")
BATCH_SECONDS = 0.5

_app = None
_app_lock = threading.Lock()


@contextmanager
def app_context():
    """The worker builds its Flask app on first use, never at import time."""
    global _app
    from flask import current_app, has_app_context

    if has_app_context():  # immediate mode in tests, or called from a request/CLI
        yield current_app
        return
    with _app_lock:
        if _app is None:
            from webapp import create_app

            _app = create_app()
    with _app.app_context():
        try:
            yield _app
        finally:
            db.session.remove()


def probe_services(services: list[Service], trigger: str) -> list[int]:
    """Start a run for each service, then probe them all together. Commits."""
    probe_runs = [runs.start_run(service, trigger) for service in services]
    db.session.commit()
    return complete_runs([run.id for run in probe_runs])


def complete_runs(run_ids: list[int]) -> list[int]:
    """Probe the services of started runs concurrently (bounded); store results as they come;
    then answer probe-backed items. Commits."""
    probe_runs = [db.session.get(ProbeRun, run_id) for run_id in run_ids]
    probe_runs = [run for run in probe_runs if run is not None and run.finished_at is None]
    targets = [(run.id, kind, url, runs.check_options(run.service, kind))
               for run in probe_runs for kind, url in runs.network_targets(run.service)]
    asyncio.run(_sweep(targets))
    for run_id in [run.id for run in probe_runs]:
        run = db.session.get(ProbeRun, run_id)
        for result in runs.record_checks(run.service):
            runs.store_result(run, result)
        runs.finish_run(run)
        runs.apply_to_assessments(run.service)
    db.session.commit()  # one commit for the bookkeeping of the whole sweep
    return run_ids


async def _sweep(targets: list[tuple[int, str, str, dict]]) -> None:
    """Run every check; one hanging target only ever costs its own deadline."""
    from flask import current_app

    gate = asyncio.Semaphore(current_app.config["PROBE_CONCURRENCY"])
    pending: list[tuple[int, CheckResult]] = []

    async def one(fetcher, run_id: int, kind: str, url: str, options: dict) -> None:
        async with gate:
            started = time.perf_counter()
            result = await run_check(kind, url, fetcher, **options)
            log.info("probe %s %s: %s in %.0f ms", kind, url, result.outcome,
                     (time.perf_counter() - started) * 1000,
                     extra={"event": "probe.call", "probe_kind": kind, "run_id": run_id,
                            "outcome": result.outcome,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
            pending.append((run_id, result))

    def flush() -> None:
        while pending:
            run_id, result = pending.pop(0)
            runs.store_result(db.session.get(ProbeRun, run_id), result)
        db.session.commit()

    async with runs.make_fetcher() as fetcher:
        tasks = [asyncio.create_task(one(fetcher, *target)) for target in targets]
        while not all(task.done() for task in tasks):
            await asyncio.wait(tasks, timeout=BATCH_SECONDS)
            flush()
        for task in tasks:
            task.result()  # surface bugs; run_check itself never raises on target faults
    flush()


@huey.task()
def complete_run_task(run_id: int) -> list[int]:
    """"Probe now": the view started the run; the worker does the probing."""
    with app_context():
        return complete_runs([run_id])


@huey.periodic_task(crontab(minute="*"))
@huey.lock_task("probe-due-services")  # every consumer schedules it; only one sweep at a time
def probe_due_services() -> int:
    """Every minute: probe all services whose interval has elapsed, together."""
    with app_context():
        due = runs.due_services()
        if due:
            started = time.monotonic()
            probe_services(due, "schedule")
            log.info("probed %d services in %.1f s", len(due), time.monotonic() - started)
        return len(due)


@huey.periodic_task(crontab(minute="17", hour="*"))
def check_evidence_links() -> int:
    """Hourly: check evidence links not checked in the last day; mark broken ones."""
    with app_context():
        from datetime import timedelta

        stale = utcnow() - timedelta(days=1)
        evidence = db.session.scalars(select(Evidence).where(
            (Evidence.checked_at.is_(None)) | (Evidence.checked_at < stale)).limit(500)).all()
        asyncio.run(check_links(evidence))
        db.session.commit()
        return len(evidence)


async def check_links(evidence: list[Evidence]) -> None:
    """GET each link with the probe fetcher's limits and address policy; flush only."""
    async with runs.make_fetcher() as fetcher:
        fetched = await asyncio.gather(*(fetcher.fetch(e.url) for e in evidence))
    for item, result in zip(evidence, fetched, strict=True):
        item.checked_at = utcnow()
        if result.error_code == "ssrf_blocked":
            # An internal wiki is fine evidence; we just may not look at it.
            item.check_ok, item.check_error = None, "not checked: address not allowed for probes"
        elif result.error_code:
            item.check_ok, item.check_error = False, f"{result.error_code}: {result.error or ''}"[:200]
        elif result.status_code and result.status_code >= 400:
            item.check_ok, item.check_error = False, f"HTTP {result.status_code}"
        else:
            item.check_ok, item.check_error = True, None
    db.session.flush()


@huey.periodic_task(crontab(minute="42", hour="3"))
def roll_up_probe_results() -> int:
    """Daily: keep raw probe results for PROBE_RETENTION_DAYS, then only daily roll-ups."""
    with app_context() as app:
        removed = runs.roll_up_old_results(app.config["PROBE_RETENTION_DAYS"])
        db.session.commit()
        return removed


@huey.periodic_task(crontab(minute="*"))
def sync_checklists() -> int:
    """Every minute: load changed checklist files into the database, so every web process
    offers the same versions without a restart. Writes nothing when no file changed; two
    workers syncing at once are safe (see catalog.sync)."""
    with app_context():
        from webapp import catalog

        problems = catalog.sync()
        db.session.commit()
        return len(problems)
