"""What the database circuit breaker saves while PostgreSQL hangs (issue 12).

    TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python bench/db_breaker.py [--requests 20]

A scratch PostgreSQL database behind the tests' TCP proxy (tests/ops_support.py); the proxy
is switched to "hang" and N page requests (GET /login) are sent one after another, once with
the breaker as shipped (opens after 2 failures here) and once with it effectively off (it
would open after 10,000). Prints, for each: wall and CPU seconds, the slowest request, and how
many connections reached the proxy (each one a connection attempt on a struggling database).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run(url: str, threshold: int, requests: int) -> dict:
    from sqlalchemy import create_engine

    from tests.ops_support import TcpProxy
    from webapp import create_app, db_breaker, models  # noqa: F401 - models: the tables create_all makes
    from webapp.extensions import db

    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname, parts.port or 5432)
    proxied = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    direct = create_engine(url)
    with direct.begin() as connection:
        db.metadata.create_all(connection)
    direct.dispose()
    app = create_app({"SECRET_KEY": "x" * 32, "SQLALCHEMY_DATABASE_URI": proxied, "RATELIMIT_ENABLED": False,
                      "DB_STATEMENT_TIMEOUT_MS": 1000, "DB_CONNECT_TIMEOUT": 2})
    app.extensions["preflight_db_breaker"] = db_breaker.Breaker(threshold, 30.0)
    client = app.test_client()
    assert client.get("/login").status_code < 400  # a pooled connection now exists
    proxy.mode = "hang"
    before = proxy.accepted
    wall, cpu, slowest, codes = time.perf_counter(), time.process_time(), 0.0, set()
    for _ in range(requests):
        started = time.perf_counter()
        codes.add(client.get("/login").status_code)
        slowest = max(slowest, time.perf_counter() - started)
    result = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "slowest": slowest,
              "connections": proxy.accepted - before, "codes": sorted(codes)}
    proxy.close()
    with app.app_context():
        db.engine.dispose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    from tests.ops_support import scratch_postgres

    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print(f"{args.requests} x GET /login while PostgreSQL hangs (behind a TCP proxy):")
    for label, threshold in (("breaker off (opens after 10,000)", 10_000), ("breaker on (opens after 2)", 2)):
        with scratch_postgres() as url:
            r = run(url, threshold, args.requests)
        print(f"  {label:34} wall {r['wall']:6.2f} s  cpu {r['cpu']:5.2f} s  slowest {r['slowest']:5.2f} s  "
              f"connections to the database {r['connections']:3}  statuses {r['codes']}")


if __name__ == "__main__":
    main()
