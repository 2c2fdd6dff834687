"""Background jobs (Huey): the probe scheduler, probe runs, evidence link checks, retention.

Jobs are the callers here, so they own the commits, and they keep transactions short: a
sweep commits results in batches while it runs and does the services' bookkeeping in
batches as their last results come in, so a person's save is never blocked for long, and
a conflict (someone saved the same answer, SQLite busy) costs that one service: its batch
is redone service by service. Every run ends finished: a run that could not finish is
closed with an error.

The sweep and the roll-up hold an expiring database lock (webapp/probes/locks.py) instead
of Huey's `lock_task`, which stayed held forever when a worker was killed mid-sweep.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from flask import current_app
from huey import crontab
from sqlalchemy import inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError

from webapp import collector, flags, retry
from webapp.extensions import db, huey
from webapp.models import Evidence, ProbeRun, Service, utcnow
from webapp.probes import locks, runs
from webapp.probes.rules import HEALTH_GROUP, CheckResult, run_check, run_health_group

log = logging.getLogger("webapp.probes")
BATCH_SECONDS = 0.5
# Rows and services per transaction while a sweep runs. Each statement costs ~2 ms of CPU in
# SQLAlchemy and the driver whatever its rows, so fewer, larger batches (100 results and 50
# services were ~0.6 s more of a 1,000-service sweep) while each write stays far under
# the 250 ms a person's save may wait (20-50 ms measured, bench/app_sweep.py).
BATCH_ROWS = 250  # results
START_BATCH = 100  # runs started per commit (three statements)
FINISH_BATCH = 100  # services whose bookkeeping shares a transaction (a conflict redoes them one by one)
# Services whose probe-backed answers share a transaction: a first sweep writing every
# answer of 45 drafts held SQLite's write lock ~90 ms (most of it the ORM's flush).
ANSWER_BATCH = 20
CONFLICTS = (StaleDataError, IntegrityError, OperationalError)
SWEEP_LOCK, RETENTION_LOCK = "probe-sweep", "probe-retention"
ABANDONED_AFTER = timedelta(minutes=15)  # far beyond any sweep's ceil(hanging / concurrency) × deadline
# Set when the worker is asked to stop (SIGTERM, see webapp/probes/worker.py): a sweep in
# flight stops waiting for its targets, closes its runs with an error and releases its lock.
STOPPING = threading.Event()

_app = None
_app_lock = threading.Lock()


@contextmanager
def app_context():
    """The worker builds its Flask app on first use, never at import time."""
    global _app
    from flask import has_app_context

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


def sweep_lock_ttl() -> timedelta:
    """How long a sweep lock lives without renewal: several probe deadlines. The sweep
    renews it as it goes; a killed worker's lock lapses after this."""
    return timedelta(seconds=max(60, 6 * current_app.config["PROBE_DEADLINE_SECONDS"]))


def _batches(items: list, size: int) -> Iterator[list]:
    """`items` in consecutive slices of `size` (the last one shorter): a transaction each."""
    for first in range(0, len(items), size):
        yield items[first:first + size]


@contextmanager
def _own_session():
    """The sweep works in a session of its own (a fresh app context) that holds no ORM
    objects between transactions: with 1,000 services in the caller's identity map, every
    one of a sweep's hundreds of commits expired them all (most of a sweep's time). The
    caller's objects are expired afterwards, so it reads what the sweep wrote."""
    with current_app.app_context():
        yield
    db.session.expire_all()


def probe_services(services: list[Service], trigger: str, lease: locks.Lease | None = None) -> list[int]:
    """`probe_service_ids` for loaded services."""
    # Their ids from the identity map: an expired service would be reloaded, a query each.
    return probe_service_ids([inspect(service).identity[0] for service in services], trigger, lease)


def probe_service_ids(service_ids: list[int], trigger: str, lease: locks.Lease | None = None) -> list[int]:
    """Start a run for each service, then probe them all together. Commits."""
    db.session.commit()
    run_ids = []
    with _own_session():
        for batch in _batches(service_ids, START_BATCH):
            run_ids += [ref.id for ref in runs.start_runs(batch, trigger)]
            db.session.commit()
    complete_runs(run_ids, lease)
    return run_ids


def complete_runs(run_ids: list[int], lease: locks.Lease | None = None) -> list[int]:
    """Probe the services of started runs concurrently (bounded); store results as they come;
    do the services' bookkeeping (record checks, finish the run, answer probe-backed items)
    in batches as soon as their last results are in. Commits. No run is left unfinished."""
    with _own_session():
        try:
            probe_runs = runs.runs_to_probe(run_ids)
            targets = [target for ref, service in probe_runs for target in _targets(ref, service)]
            # Health URLs first (those that failed last time before the others): they are the
            # ones that hang, and a hanging request should start its deadline at the
            # beginning of the sweep, not at the end. (The sort is stable.)
            targets.sort(key=lambda target: target[1] != HEALTH_GROUP)
            db.session.commit()  # end the read transaction before the long wait on the network
            db.session.expunge_all()
            sweep = Sweep(targets, lease)
            started = time.monotonic()
            with collector.fewer_collections():
                stopping = asyncio.run(sweep.run())
            if stopping:
                return run_ids  # stopping: the finally below closes the runs
            _finish_services(sorted({ref.id for ref, _service in probe_runs} - sweep.finished))  # nothing to fetch
            elapsed = time.monotonic() - started
            log.info("probed %d service(s) in %.1f s: %s", len(probe_runs), elapsed,
                     ", ".join(f"{n} {outcome}" for outcome, n in sorted(sweep.outcomes.items())) or "no network checks",
                     extra={"event": "probe.sweep", "services": len(probe_runs), "duration_ms": round(elapsed * 1000),
                            "outcomes": dict(sweep.outcomes)})
        finally:
            _close_unfinished(run_ids, "stopped: the worker shut down before the run finished"
                              if STOPPING.is_set() else "failed: the run could not finish")
    return run_ids


def _targets(ref: runs.RunRef, service) -> list[tuple[runs.RunRef, str | tuple[str, ...], str, dict]]:
    """What the sweep fetches for a service: health, correlation id and latency of the same
    URL become one grouped target (`rules.run_health_group`), every other check its own."""
    targets = [(ref, kind, url, runs.check_options(service, kind)) for kind, url in runs.network_targets(service)]
    grouped = [t for t in targets if t[1] in HEALTH_GROUP and t[2] == service.health_url]
    if len(grouped) < len(HEALTH_GROUP):
        return targets
    return [(ref, HEALTH_GROUP, service.health_url, {})] + [t for t in targets if t not in grouped]


def _finish_services(run_ids: list[int]) -> None:
    for _step in _finishing(run_ids):
        pass


def _finishing(run_ids: list[int]) -> Iterator[None]:
    """The bookkeeping of a batch of services in one short transaction (a fixed number of
    statements), then their probe-backed answers in another, yielding after each transaction
    (the sweep lets its event loop run there). On a conflict (SQLite busy, two sweeps at
    once, a person's save) the batch is redone service by service, so a conflict costs one
    service, never the others."""
    for batch in _batches(run_ids, FINISH_BATCH):
        try:
            drafts = runs.finish_runs(batch)
            db.session.commit()
        except CONFLICTS as exc:
            db.session.rollback()
            log.info("probe bookkeeping conflict (%s); redoing %d services one by one", type(exc).__name__, len(batch))
            for run_id in batch:
                _finish_service(run_id)
                yield
            continue
        yield
        for answers in _batches(drafts, ANSWER_BATCH):
            _answer_batch(answers)
            yield


def _finish_service(run_id: int) -> None:
    """One service's bookkeeping in its own transaction; a conflict is retried once, then
    the run is closed with the error. Other services are not affected."""
    error: Exception | None = None
    for _attempt in range(2):
        try:
            drafts = runs.finish_runs([run_id])
            db.session.commit()
            for service_id, _run_id in drafts:
                _answer_from_probes(service_id, run_id)
            return
        except CONFLICTS as exc:
            db.session.rollback()
            log.warning("probe run %s: bookkeeping conflict, %s: %s", run_id, type(exc).__name__, exc)
            error = exc
    _close_unfinished([run_id], f"failed: bookkeeping conflict ({type(error).__name__})")


def _answer_batch(drafts: list[tuple[int, int]]) -> None:
    """Probe-backed answers of a batch of services (service id, run id) in one transaction;
    on a conflict (a person saved one of the answers), redone service by service, so the
    conflict costs one service."""
    if not drafts:
        return
    try:
        runs.apply_to_services([service_id for service_id, _run_id in drafts])
        db.session.commit()
    except CONFLICTS as exc:
        db.session.rollback()
        log.info("probe answers conflict (%s); redoing %d services one by one", type(exc).__name__, len(drafts))
        for service_id, run_id in drafts:
            _answer_from_probes(service_id, run_id)
    finally:
        db.session.expunge_all()  # the sweep's session keeps no objects between batches


def _answer_from_probes(service_id: int, run_id: int) -> None:
    """One service's probe-backed answers in one transaction; a conflict (a person saved the
    same answer) is retried once against the fresh answer; if it still fails, the run says
    so and the next sweep tries again."""
    try:
        for attempt in range(2):
            try:
                runs.apply_to_services([service_id])
                db.session.commit()
                return
            except CONFLICTS as exc:
                db.session.rollback()
                log.warning("probe run %s: answers conflict (%s), attempt %d", run_id, type(exc).__name__,
                            attempt + 1)
                error = f"answers not updated: conflict ({type(exc).__name__})"
        try:
            db.session.execute(update(ProbeRun).where(ProbeRun.id == run_id).values(error=error))
            db.session.commit()
        except CONFLICTS:
            db.session.rollback()
    finally:
        db.session.expunge_all()  # the sweep's session keeps no objects between services


def _close_unfinished(run_ids: list[int], error: str) -> None:
    db.session.rollback()  # whatever failed is not ours to keep; everything else is committed
    try:
        if runs.close_runs(run_ids, error):
            log.warning("closed unfinished probe runs: %s", error)
        db.session.commit()
    except Exception:  # the database itself is gone: the abandoned-runs job closes them later
        db.session.rollback()
        log.exception("could not close probe runs %s", run_ids)


def _store_batch(batch: list[tuple[runs.RunRef, CheckResult]]) -> None:
    """Store a batch of results and the read model's latest outcomes in one short
    transaction; on a conflict, retry row by row so one bad row costs only itself."""
    try:
        runs.store_results(batch)
        db.session.commit()
        return
    except CONFLICTS as exc:
        db.session.rollback()
        if len(batch) == 1:
            log.warning("probe result for run %s dropped: %s", batch[0][0].id, exc)
            return
    for item in batch:
        _store_batch([item])


class Sweep:
    """Every check of a sweep on one event loop; one hanging target only ever costs its own
    deadline. Every half second the database work is done on the loop's own thread: storing
    results, and each service's bookkeeping once its last result is in, in short
    transactions. (Not in a helper thread: competing for the GIL with the busy event loop,
    a thread's transactions held SQLite's write lock for seconds.)"""

    def __init__(self, targets: list[tuple[runs.RunRef, str | tuple[str, ...], str, dict]],
                 lease: locks.Lease | None):
        self.targets, self.lease = targets, lease
        self.pending: list[tuple[runs.RunRef, CheckResult]] = []
        self.remaining = Counter()  # results still to come, per run
        for ref, kind, *_rest in targets:
            self.remaining[ref.id] += len(kind) if isinstance(kind, tuple) else 1
        self.finished: set[int] = set()
        self.renewed = time.monotonic()
        self.outcomes = Counter()  # network checks by outcome, for the sweep's log line

    async def run(self) -> bool:
        """Returns True if the worker is stopping and the sweep gave up on pending targets."""
        async def one(fetcher, ref: runs.RunRef, kind: str | tuple[str, ...], url: str, options: dict) -> None:
            # No gate here: the fetcher lets PROBE_CONCURRENCY requests out at a time, in
            # the order they were asked for, so every first request precedes the follow-ups.
            started = time.perf_counter()
            results = (await run_health_group(url, fetcher) if kind == HEALTH_GROUP
                       else [await run_check(kind, url, fetcher, **options)])
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            for result in results:
                self.outcomes[result.outcome] += 1
                # A pass is routine (DEBUG): at INFO a 1,000-service sweep wrote ~4,000 lines;
                # what needs a look (warn, fail, error) stays at INFO.
                log.log(logging.DEBUG if result.outcome == "pass" else logging.INFO,
                        "probe %s %s: %s in %.0f ms", result.kind, url, result.outcome, elapsed_ms,
                        extra={"event": "probe.call", "probe_kind": result.kind, "outcome": result.outcome,
                               "duration_ms": elapsed_ms})
                self.pending.append((ref, result))

        async with runs.make_fetcher() as fetcher:
            tasks = [asyncio.create_task(one(fetcher, *target)) for target in self.targets]
            while not all(task.done() for task in tasks):
                await asyncio.wait(tasks, timeout=BATCH_SECONDS)
                # The database work runs on this thread between network events, a
                # transaction at a time: done in one go, it stalled the loop for seconds
                # and the targets' deadlines ran out meanwhile (healthy ones timed out).
                for _step in self.steps():
                    await asyncio.sleep(0)
                if STOPPING.is_set():
                    for task in tasks:
                        task.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    self.flush(bookkeeping=False)
                    return True
            for task in tasks:
                task.result()  # surface bugs; run_check itself never raises on target faults
        self.flush()
        return False

    def flush(self, bookkeeping: bool = True) -> None:
        for _step in self.steps(bookkeeping):
            pass

    def steps(self, bookkeeping: bool = True) -> Iterator[None]:
        """Store the results in hand and finish the services whose last result is in,
        yielding after each transaction."""
        taken, self.pending[:] = self.pending[:], []
        for batch in _batches(taken, BATCH_ROWS):
            _store_batch(batch)
            yield
        done = []
        for ref, _result in taken:
            self.remaining[ref.id] -= 1
            if self.remaining[ref.id] == 0:
                done.append(ref.id)
        if bookkeeping:
            self.finished.update(done)
            yield from _finishing(done)
        if self.lease is not None and time.monotonic() - self.renewed > self.lease.ttl.total_seconds() / 3:
            self.renewed = time.monotonic()
            if not self.lease.renew():
                log.warning("probe sweep lost its lock (expired and taken over); finishing anyway")


@huey.task()
def complete_run_task(run_id: int) -> list[int]:
    """"Probe now": the view started the run; the worker does the probing."""
    with app_context():
        return complete_runs([run_id])


@huey.periodic_task(crontab(minute="*"))
def probe_due_services() -> int:
    """Every minute: probe all services whose interval has elapsed, together. Every consumer
    schedules it; the expiring sweep lock lets one run at a time."""
    with app_context(), locks.held(SWEEP_LOCK, sweep_lock_ttl()) as lease:
        if not flags.enabled("scheduled_probes"):
            log.info("probe sweep skipped: switched off (feature flag scheduled_probes)")
            return 0
        if lease is None:
            log.info("probe sweep skipped: another worker holds the sweep lock")
            return 0
        due = runs.due_service_ids()
        if due:
            probe_service_ids(due, "schedule", lease)  # logs a line with the outcomes
        return len(due)


@huey.periodic_task(crontab(minute="*/5"))
def close_abandoned_runs() -> int:
    """Every five minutes: close runs a dead worker left unfinished, so nothing (such as
    "Probe now") waits for them forever."""
    with app_context():
        def work() -> int:
            closed = runs.close_abandoned_runs(ABANDONED_AFTER)
            db.session.commit()
            return closed

        closed = retry.transaction("close abandoned runs", work)
        if closed:
            log.warning("closed %d probe runs abandoned by a dead worker", closed)
        return closed


@huey.periodic_task(crontab(minute="17", hour="*"))
def check_evidence_links() -> int:
    """Hourly: check evidence links not checked in the last day; mark broken ones."""
    with app_context():
        if not flags.enabled("scheduled_probes"):
            log.info("evidence link check skipped: switched off (feature flag scheduled_probes)")
            return 0
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
    """Daily: keep raw probe results for PROBE_RETENTION_DAYS, then only daily roll-ups.
    Chunk by chunk, a commit each, under an expiring lock renewed per chunk."""
    with app_context() as app, locks.held(RETENTION_LOCK, timedelta(minutes=10)) as lease:
        if lease is None:
            log.info("probe roll-up skipped: another worker is rolling up")
            return 0

        def after_chunk() -> None:
            db.session.commit()
            lease.renew()

        removed = runs.roll_up_old_results(app.config["PROBE_RETENTION_DAYS"], after_chunk=after_chunk)
        db.session.commit()
        return removed


@huey.periodic_task(crontab(minute="*"))
def sync_checklists() -> int:
    """Every minute: load changed checklist files into the database, so every web process
    offers the same versions without a restart. Writes nothing when no file changed; two
    workers syncing at once are safe (see catalog.sync)."""
    with app_context():
        from webapp import catalog

        def work() -> int:
            problems = catalog.sync()
            db.session.commit()
            return len(problems)

        return retry.transaction("sync checklists", work)


@huey.periodic_task(crontab(minute="7", hour="*"))
def rescore_lapsed_waivers() -> int:
    """Hourly: an approved waiver that expired changes its assessment's verdict with no write
    of its own; bring the stored score (what lists and the API read) up to date."""
    with app_context():
        from webapp import assessments

        def work() -> int:
            count = assessments.rescore_lapsed_waivers()
            db.session.commit()
            return count

        return retry.transaction("rescore lapsed waivers", work)
