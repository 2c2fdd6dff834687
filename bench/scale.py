"""Preflight at the size of a large organisation: queries and server time of the pages that
list services, on databases seeded with `flask demo seed`.

    .venv/bin/python bench/scale.py                      # SQLite: 10 and 1,000 services
    .venv/bin/python bench/scale.py --postgres postgresql+psycopg://postgres@127.0.0.1/scratch
    BENCH_POSTGRES_URL=... .venv/bin/python bench/scale.py --services 1000 --iterations 200

For each database (a scratch SQLite file; PostgreSQL too when a URL is given, whose tables
are DROPPED: give it a throwaway database, never `test`) it seeds 10 and N services through
the real CLI (`flask db upgrade`, `flask demo seed`), then signs in with the Flask test
client and requests each page many times, printing the SQL statements per request and
p50/p95 of the time in the app. `--database URL` measures an existing seeded database
instead; `--app-root DIR` measures another checkout's `webapp` (for before/after numbers).
Also prints the process's CPU time per request, which a shared machine disturbs less than
wall time. Prints numbers; asserts nothing. Targets (issue 8): dashboard ≤ 10 queries, the same at 10
and at 1,000 services, p95 < 30 ms; service and team pages ≤ 15 queries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def seed(url: str, services: int, assessments: int) -> float:
    """A fresh database with `services` demo services, through the real commands."""
    env = dict(os.environ, DATABASE_URL=url, FLASK_APP="webapp", SECRET_KEY="bench-" * 8)
    flask = [sys.executable, "-m", "flask"]
    if url.startswith("postgresql"):
        _drop_everything(url)
    started = time.monotonic()
    for command in (["db", "upgrade"], ["demo", "seed", "--services", str(services),
                                        "--assessments", str(assessments)]):
        subprocess.run(flask + command, env=env, cwd=REPO, check=True, capture_output=True)
    return time.monotonic() - started


def _drop_everything(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if make_url(url).database in ("test", "postgres", None):
        sys.exit(f"refusing to drop the tables of {make_url(url).database!r}: give a scratch database")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def measure(url: str, iterations: int, label: str) -> list[tuple]:
    """(label, page, queries, p50 ms, p95 ms, bytes) for each page."""
    from sqlalchemy import event, func, select

    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import Assessment, Service, User

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False,
                      "SECRET_KEY": "bench-" * 8})
    statements = [0]
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *args: statements.__setitem__(0, statements[0] + 1))
        admin = db.session.scalar(select(User).where(User.is_admin).order_by(User.id).limit(1))
        busiest = db.session.execute(
            select(Assessment.service_id, func.count()).group_by(Assessment.service_id)
            .order_by(func.count().desc()).limit(1)).first()
        team_id = db.session.scalar(select(Service.team_id).group_by(Service.team_id)
                                    .order_by(func.count().desc()).limit(1))
        db.session.remove()
    client = app.test_client()
    response = client.post("/login", data={"email": admin.email, "password": "preflight-demo"})
    if response.status_code != 302:
        sys.exit(f"could not sign in as {admin.email} ({response.status_code})")
    pages = [
        ("dashboard", "/"),
        ("dashboard, by score, page 3", "/?sort=score&page=3"),
        ("dashboard, filtered + search", "/?tier=1&verdict=not_ready&q=a"),
        (f"service page ({busiest[1]} assessments)", f"/services/{busiest[0]}"),
        ("team page", f"/teams/{team_id}"),
        ("CSV export (every row)", "/dashboard.csv"),
    ]
    out = []
    for page, path in pages:
        rounds = iterations if "export" not in page else max(3, iterations // 10)
        client.get(path)  # warm caches (templates, parsed checklists)
        timings, cpu = [], []
        for _ in range(rounds):
            statements[0] = 0
            started, started_cpu = time.perf_counter(), time.process_time()
            response = client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
            if response.status_code != 200:
                sys.exit(f"{path}: HTTP {response.status_code}")
        timings.sort()
        p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
        out.append((label, page, statements[0], statistics.median(timings), p95, len(response.data)))
        # CPU time of this process (SQLite runs in it too): on a shared machine, wall time
        # also counts waiting for a core.
        print(f"  {label:<24} {page:<34} {statements[0]:>6} q  p50 {statistics.median(timings):8.1f} ms"
              f"  p95 {p95:8.1f} ms  (CPU p50 {statistics.median(cpu):7.1f} ms)"
              f"  {len(response.data) / 1024:5.0f} KiB", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--assessments", type=int, default=20, help="per service")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES_URL"),
                        help="a scratch PostgreSQL database (its tables are dropped)")
    parser.add_argument("--database", help="measure this already seeded database instead of seeding")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--app-root", type=Path, default=REPO, help="the checkout whose webapp is measured")
    args = parser.parse_args()
    sys.path.insert(0, str(args.app_root.resolve()))
    scratch = tempfile.mkdtemp(prefix="preflight-scale-")
    os.environ.setdefault("PREFLIGHT_INSTANCE_PATH", scratch)

    if args.database:
        measure(args.database, args.iterations, "given database")
        return
    backends = [] if args.no_sqlite else [("SQLite", lambda name: f"sqlite:///{scratch}/{name}.sqlite3")]
    if args.postgres:
        url = args.postgres.replace("postgresql://", "postgresql+psycopg://", 1)
        backends.append(("PostgreSQL", lambda name, url=url: url))
    for backend, url_for in backends:
        for services in (10, args.services):
            url = url_for(f"services-{services}")
            took = seed(url, services, args.assessments)
            print(f"{backend}: seeded {services:,} services × {args.assessments} assessments in {took:.1f} s",
                  flush=True)
            measure(url, args.iterations, f"{backend} {services:,} svc")
    # The probe sweep and the retention roll-up at this scale are measured by
    # bench/app_sweep.py and bench/rollup.py; call them from here once they take a database.


if __name__ == "__main__":
    main()
