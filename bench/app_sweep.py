"""Time a whole scheduled probe sweep inside the app: fetch, store, answer, snapshot — with
people saving answers at the same time.

    .venv/bin/python bench/app_sweep.py [--services 1000] [--hanging 100] [--deadline 2]
        [--concurrency N] [--sweeps 2] [--postgres URL]

Unlike probe_sweep.py (the fetcher and checks alone), this goes through
`webapp.probes.tasks.probe_service_ids`, what the scheduled sweep calls: runs created,
results committed in batches while the sweep runs, probe-backed answers updated. `--hanging` services have a health URL that
never answers. Uses a scratch SQLite database, or the PostgreSQL database given with
`--postgres` (it creates and drops the tables there: use a throwaway database). Targets are
the test suite's local servers on 127.0.0.1. Prints numbers; asserts nothing:

- wall time of each of `--sweeps` sweeps in a row (2: the first knows nothing of the targets,
  the second knows the first's outcomes, as every scheduled sweep after the first does, and
  asks failing health URLs first), and the floor the concurrency limit sets:
  ceil(hanging requests / PROBE_CONCURRENCY) × deadline (a hanging health URL costs one
  hanging request: health, correlation id and the first latency sample share it);
- the longest write transaction: from the moment its first INSERT/UPDATE/DELETE returned
  (on SQLite: the write lock is taken) to its COMMIT or ROLLBACK, per connection
  (SQLAlchemy engine events) — on SQLite, how long the database write lock was held;
- a concurrent writer: another process saving answers (the real `record_answer`, a commit
  per save, like a person's request in a gunicorn worker) throughout the sweep (the sweep
  starts once its first save is done, so its start-up does not share the sweep's CPU): how
  many succeeded, and the slowest save.

The targets run in a child process too, so only the sweep runs in this one.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WRITES = ("INSERT", "UPDATE", "DELETE")


class WriteTimer:
    """First write → commit/rollback per connection, the longest kept."""

    def __init__(self, engine):
        from sqlalchemy import event

        self.longest, self.count, self.lock, self.what = 0.0, 0, threading.Lock(), ""
        event.listen(engine, "after_cursor_execute", self.after)
        event.listen(engine, "commit", self.end)
        event.listen(engine, "rollback", self.end)

    def after(self, conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip()[:6].upper() in WRITES and "first_write" not in conn.info:
            conn.info["first_write"] = time.perf_counter()
            conn.info["what"] = f"{threading.current_thread().name}: {' '.join(statement.split()[:3])}"

    def end(self, conn):
        started, what = conn.info.pop("first_write", None), conn.info.pop("what", "")
        if started is not None:
            with self.lock:
                held = time.perf_counter() - started
                if held > self.longest:
                    self.longest, self.what = held, what
                self.count += 1


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def serve_targets() -> None:
    """Child process: the hostile local servers, so they do not compete with the sweep for
    this process's GIL (in production the targets are other machines)."""
    from tests.probe_targets import hostile_server

    with hostile_server() as targets:
        print(targets.url("/"), flush=True)
        sys.stdin.read()


def person_saving(url: str, draft_ids: list[int], user_id: int, ready, stop, report) -> None:
    """Child process, like a gunicorn worker: a person's save is load, change, one commit,
    in its own session, every 50 ms, until told to stop. Says when its first save is done,
    so the sweep starts with saves already going (and not beside the child's start-up)."""
    from webapp import assessments, create_app
    from webapp.extensions import db
    from webapp.models import Assessment, User

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "RATELIMIT_ENABLED": False, "SECRET_KEY": "bench" * 8})
    saves = {"ok": 0, "failed": 0, "slowest": 0.0, "errors": set()}
    n = 0
    with app.app_context():
        while not stop.is_set():
            started = time.perf_counter()
            try:
                assessment = db.session.get(Assessment, draft_ids[n % len(draft_ids)])
                current = assessments.answer_for(assessment, "structured_logging")
                status = "partial" if current is not None and current.status == "met" else "met"
                assessments.record_answer(assessment, "structured_logging", status, f"save {n}",
                                          db.session.get(User, user_id),
                                          expected_version=current.version if current else 0)
                db.session.commit()
                saves["ok"] += 1
            except Exception as exc:  # noqa: BLE001 - counted and printed
                db.session.rollback()
                saves["failed"] += 1
                saves["errors"].add(f"{type(exc).__name__}: {str(exc)[:80]}")
            finally:
                db.session.remove()
            saves["slowest"] = max(saves["slowest"], time.perf_counter() - started)
            ready.set()
            n += 1
            time.sleep(0.05)
    report.put(saves)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--hanging", type=int, default=100)
    parser.add_argument("--deadline", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None, help="PROBE_CONCURRENCY (default: the app's)")
    parser.add_argument("--assessments", type=int, default=50, help="services with a draft assessment")
    parser.add_argument("--sweeps", type=int, default=2, help="sweeps in a row (the second knows the first's outcomes)")
    parser.add_argument("--postgres", metavar="URL", help="a throwaway PostgreSQL database instead of SQLite")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the sweep's CPU time (all threads' time, this thread's calls) to FILE")
    parser.add_argument("--serve-targets", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_targets:
        serve_targets()
        return
    scratch = tempfile.mkdtemp(prefix="preflight-bench-")
    os.environ["PREFLIGHT_INSTANCE_PATH"] = scratch

    from sqlalchemy import func, select

    from webapp import accounts, assessments, catalog, create_app, registry
    from webapp.extensions import db
    from webapp.models import ProbeResult, ProbeRun, Service
    from webapp.probes.tasks import probe_service_ids
    from webapp.probes.worker import raise_open_files_limit

    url = args.postgres or f"sqlite:///{scratch}/bench.sqlite3"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    overrides = {"SQLALCHEMY_DATABASE_URI": url, "RATELIMIT_ENABLED": False, "SECRET_KEY": "bench" * 8,
                 "PROBE_ALLOW_NETWORKS": "127.0.0.0/8", "PROBE_DEADLINE_SECONDS": args.deadline}
    if args.concurrency:
        overrides["PROBE_CONCURRENCY"] = args.concurrency
    app = create_app(overrides)
    logging.getLogger("webapp.probes").setLevel(logging.WARNING)  # not 4,000 lines of "probe ..."
    concurrency = app.config["PROBE_CONCURRENCY"]
    raise_open_files_limit(concurrency)
    every = max(1, args.services // max(1, args.hanging))
    server = subprocess.Popen([sys.executable, __file__, "--serve-targets"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    base = server.stdout.readline().strip().rstrip("/")
    with app.app_context():
        db.drop_all()
        db.create_all()
        catalog.sync(force=True)
        user = accounts.create_user("bench@example.test", "Bench", "a long password")
        team = registry.create_team("Bench", "", user)
        services = [registry.register_service(team, {
            "name": f"service {n}", "tier": 2,
            "health_url": base + ("/silence" if n % every == 0 and n // every < args.hanging else "/health"),
            "metrics_url": base + "/metrics"}, user) for n in range(args.services)]
        version = catalog.latest_version("production-readiness")
        drafts = [assessments.start_assessment(s, version, user) for s in services[:args.assessments]]
        db.session.commit()
        hanging_services = sum("/silence" in s.health_url for s in services)
        draft_ids, user_id = [d.id for d in drafts], user.id
        db.session.remove()

        timer = WriteTimer(db.engine)
        spawn = multiprocessing.get_context("spawn")
        ready, stop, report = spawn.Event(), spawn.Event(), spawn.Queue()
        writer = spawn.Process(target=person_saving, args=(url, draft_ids, user_id, ready, stop, report))
        with app.app_context():
            due = db.session.scalars(select(Service.id).order_by(Service.id)).all()
            writer.start()
            ready.wait(timeout=120)
            profiler = cProfile.Profile(time.process_time) if args.profile else None
            sweeps = []
            for _sweep in range(args.sweeps):
                timer.longest, timer.count, timer.what = 0.0, 0, ""
                started, started_cpu = time.monotonic(), time.process_time()
                if profiler:
                    profiler.enable()
                probe_service_ids(due, "schedule")
                if profiler:
                    profiler.disable()
                sweeps.append((time.monotonic() - started, time.process_time() - started_cpu,
                               os.getloadavg()[0], timer.longest, timer.what, timer.count))
            if profiler:
                profiler.dump_stats(args.profile)
            stop.set()
            saves = report.get(timeout=60)
            writer.join()
            writer_cpu = _children_cpu()
            stored = db.session.scalar(select(func.count(ProbeResult.id))) // args.sweeps
            outcomes = db.session.execute(select(ProbeResult.kind, ProbeResult.outcome, ProbeResult.error_code,
                                                 func.count()).group_by(ProbeResult.kind, ProbeResult.outcome,
                                                                        ProbeResult.error_code)).all()
            unfinished = db.session.scalar(select(func.count(ProbeRun.id)).where(ProbeRun.finished_at.is_(None)))
            db.session.remove()  # release its locks, or PostgreSQL's DROP waits for them forever
            db.drop_all()
    server.stdin.close()
    server.wait()
    targets_cpu = _children_cpu() - writer_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    hanging_requests = hanging_services  # health, correlation id and latency share the first request
    floor = math.ceil(hanging_requests / concurrency) * args.deadline
    print(f"app sweep on {url.split(':')[0]}: {args.services} services ({hanging_services} hanging), "
          f"{stored} results a sweep, {unfinished} runs unfinished")
    print(f"  results over {args.sweeps} sweeps: " + ", ".join(f"{kind} {outcome}{'/' + code if code else ''} {n}"
                                    for kind, outcome, code, n in sorted(outcomes)))
    for n, (wall, cpu, load, longest, what, count) in enumerate(sweeps, 1):
        known = "nothing known yet" if n == 1 else "last outcomes known: failing health URLs go first"
        print(f"  sweep {n} ({known}): wall {wall:.2f} s (CPU {cpu:.2f} s in the sweep's process; load average "
              f"{load:.1f}); floor ceil({hanging_requests} hanging requests / PROBE_CONCURRENCY {concurrency})"
              f" x {args.deadline} s deadline = {floor} s; over the floor by {wall - floor:+.2f} s")
        print(f"    longest write transaction {longest * 1000:.0f} ms ({what} ...) over {count} write transactions")
    print(f"  CPU of the target server process {targets_cpu:.1f} s (it stands in for 1,000 machines)")
    print(f"  concurrent saves: {saves['ok']} ok, {saves['failed']} failed, slowest {saves['slowest'] * 1000:.0f} ms"
          + (f"; errors: {sorted(saves['errors'])}" if saves["errors"] else ""))
    print(f"  peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
