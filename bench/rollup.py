"""Time the daily retention roll-up over a million old probe results, with peak memory.

    .venv/bin/python bench/rollup.py [--rows 1000000] [--services 1000] [--postgres URL]

Fills a scratch SQLite database (or the throwaway PostgreSQL database given with
`--postgres`: it drops and creates the tables there) with `--rows` probe results older than
the retention window, spread over 30 days, in bulk (executemany on SQLite, COPY on
PostgreSQL) in a child process; then runs the real job's code, `runs.roll_up_old_results`
with a commit per chunk, in this process, and prints its wall time and the process's peak
RSS (which includes the app itself, ~100 MB). Prints numbers; asserts nothing.
Targets: under 60 s and under 200 MB.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = ("health", "metrics", "latency", "correlation_id", "runbook_present", "oncall_present")
OUTCOMES = ("pass", "pass", "pass", "warn", "fail", "error")
BATCH = 50_000


def make_app(url: str, **overrides):
    from webapp import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "RATELIMIT_ENABLED": False, "SECRET_KEY": "bench" * 8,
                       **overrides})


def fill(url: str, rows: int, services: int) -> None:
    from sqlalchemy import insert

    from webapp import accounts, registry
    from webapp.extensions import db
    from webapp.models import ProbeResult, ProbeRun, Service, utcnow

    app = make_app(url, DB_STATEMENT_TIMEOUT_MS=600_000)  # one COPY of a million rows; the roll-up keeps the default
    with app.app_context():
        db.drop_all()
        db.create_all()
        user = accounts.create_user("bench@example.test", "Bench", "a long password")
        team = registry.create_team("Bench", "", user)
        db.session.commit()
        db.session.execute(insert(Service), [{"team_id": team.id, "name": f"s{n}", "slug": f"s{n}", "tier": 2}
                                             for n in range(services)])
        service_ids = list(db.session.scalars(db.select(Service.id).order_by(Service.id)))
        db.session.execute(insert(ProbeRun), [{"service_id": s, "trigger": "schedule", "finished_at": utcnow()}
                                              for s in service_ids])
        run_of = dict(db.session.execute(db.select(ProbeRun.service_id, ProbeRun.id)).all())
        db.session.commit()
        oldest = utcnow() - timedelta(days=70)
        spacing = timedelta(days=30) / rows  # in time order, as a sweep writes them
        rng = random.Random(7)

        def rows_from(first: int, count: int):
            for n in range(first, first + count):
                service = service_ids[n % len(service_ids)]
                at = oldest + spacing * n
                yield (run_of[service], service, KINDS[n % len(KINDS)], "http://bench.test/health", at, at,
                       rng.choice(OUTCOMES), 200, round(rng.lognormvariate(3, 1), 1), "", "{}")

        columns = ("run_id", "service_id", "kind", "url", "started_at", "finished_at", "outcome",
                   "status_code", "latency_ms", "explanation", "details")
        started = time.monotonic()
        if db.engine.dialect.name == "postgresql":
            connection = db.engine.raw_connection()
            try:
                with connection.cursor() as cursor, cursor.copy(
                        f"COPY probe_result ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows_from(0, rows):
                        copy.write_row(row)
                connection.commit()
            finally:
                connection.close()
        else:
            table = ProbeResult.__table__
            marks = ", ".join("?" for _ in columns)
            with db.engine.begin() as connection:
                raw = connection.connection.driver_connection
                for first in range(0, rows, BATCH):
                    raw.executemany(f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})",
                                    [(*r[:4], r[4].isoformat(" "), r[5].isoformat(" "), *r[6:])
                                     for r in rows_from(first, min(BATCH, rows - first))])
        print(f"inserted {rows:,} results for {services:,} services in {time.monotonic() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--postgres", metavar="URL", help="a throwaway PostgreSQL database instead of SQLite")
    parser.add_argument("--fill-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill_only:
        fill(args.url, args.rows, args.services)
        return
    scratch = tempfile.mkdtemp(prefix="preflight-rollup-")
    os.environ["PREFLIGHT_INSTANCE_PATH"] = scratch
    url = args.postgres or f"sqlite:///{scratch}/bench.sqlite3"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    subprocess.run([sys.executable, __file__, "--fill-only", "--url", url, "--rows", str(args.rows),
                    "--services", str(args.services)], check=True)

    from sqlalchemy import func, select

    from bench.app_sweep import WriteTimer
    from webapp import db_deadlines
    from webapp.extensions import db
    from webapp.models import ProbeDailyRollup, ProbeResult
    from webapp.probes import runs

    app = make_app(url)
    with app.app_context():
        before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        chunks = 0

        def after_chunk() -> None:
            nonlocal chunks
            chunks += 1
            db.session.commit()

        timer = WriteTimer(db.engine)  # first write to COMMIT: on SQLite, the write lock held
        started, started_cpu = time.monotonic(), time.process_time()
        removed = runs.roll_up_old_results(30, after_chunk=after_chunk)
        db.session.commit()
        wall, cpu = time.monotonic() - started, time.process_time() - started_cpu
        with db_deadlines.longer(db.session, 600):  # counting over a million dead rows
            left = db.session.scalar(select(func.count(ProbeResult.id)))
            rollups, total = db.session.execute(select(func.count(ProbeDailyRollup.id),
                                                       func.sum(ProbeDailyRollup.runs))).one()
        db.session.remove()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"roll-up on {url.split(':')[0]}: {removed:,} results folded into {rollups:,} daily rows "
              f"({total:,} runs counted, {left} left) in {chunks} chunks: "
              f"wall {wall:.1f} s, peak RSS {peak:.0f} MB (app loaded: {before_rss:.0f} MB); CPU of this process "
              f"{cpu:.1f} s; longest write transaction {timer.longest * 1000:.0f} ms; load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
        try:
            db.drop_all()
        except Exception as exc:  # noqa: BLE001 - the numbers are out; the next run drops them first
            # Dropping a million dead rows on a busy PostgreSQL can outlast DB_STATEMENT_TIMEOUT_MS.
            print(f"(tables not dropped: {type(exc).__name__}; the next run drops them)")


if __name__ == "__main__":
    main()
