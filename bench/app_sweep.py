"""Time a whole scheduled probe sweep inside the app: fetch, store, answer, snapshot.

    .venv/bin/python bench/app_sweep.py [--services 200]

Unlike probe_sweep.py (the fetcher and checks alone), this goes through
`webapp.probes.tasks.probe_services`: runs created, results committed in batches while
the sweep runs, probe-backed answers updated. Every tenth service's health URL hangs.
Uses a scratch SQLite database, or DATABASE_URL if set (it creates and drops the tables
there, so point it at a throwaway database). Targets are the test suite's local servers
on 127.0.0.1. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=200)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="preflight-bench-")
    os.environ["PREFLIGHT_INSTANCE_PATH"] = scratch

    from sqlalchemy import func, select

    from tests.probe_targets import hostile_server
    from webapp import accounts, create_app, registry
    from webapp.extensions import db
    from webapp.models import ProbeResult
    from webapp.probes.tasks import probe_services

    app = create_app({"SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL") or f"sqlite:///{scratch}/bench.sqlite3",
                      "RATELIMIT_ENABLED": False, "SECRET_KEY": "bench" * 8,
                      "PROBE_ALLOW_NETWORKS": "127.0.0.0/8", "PROBE_DEADLINE_SECONDS": 2})
    with hostile_server() as targets, app.app_context():
        db.drop_all()
        db.create_all()
        user = accounts.create_user("bench@example.test", "Bench", "a long password")
        team = registry.create_team("Bench", "", user)
        services = [registry.register_service(team, {
            "name": f"service {n}", "tier": 2,
            "health_url": targets.url("/silence" if n % 10 == 0 else "/health"),
            "metrics_url": targets.url("/metrics")}, user) for n in range(args.services)]
        db.session.commit()
        started = time.monotonic()
        probe_services(services, "schedule")
        wall = time.monotonic() - started
        stored = db.session.scalar(select(func.count(ProbeResult.id)))
        db.session.remove()  # release its locks, or PostgreSQL's DROP waits for them forever
        db.drop_all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"app sweep: {args.services} services ({args.services // 10} hanging), {stored} results stored, "
          f"wall {wall:.2f} s (deadline 2 s), peak RSS {peak:.0f} MB, database {app.config['SQLALCHEMY_DATABASE_URI'].split(':')[0]}")


if __name__ == "__main__":
    main()
