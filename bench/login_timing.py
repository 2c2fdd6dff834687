"""Does sign-in take as long for an unknown email as for a known one? (issue 14, item 8)

    .venv/bin/python bench/login_timing.py [--rounds 30]

Builds a throwaway SQLite database with one account, then times failed sign-ins through the
Flask test client, alternating a known email with a wrong password and an unknown email.
Prints the median and p90 of each, and their ratio (close to 1 means no account oracle).
Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="preflight-bench-")
    os.environ["PREFLIGHT_INSTANCE_PATH"] = scratch

    from webapp import accounts, create_app
    from webapp.extensions import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{scratch}/bench.sqlite3",
                      "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False, "SECRET_KEY": "bench" * 8})
    with app.app_context():
        db.create_all()
        accounts.create_user("known@example.test", "Known", "a long password")
        db.session.commit()
    client = app.test_client()
    samples: dict[str, list[float]] = {"known email": [], "unknown email": []}
    for _ in range(args.rounds):
        for label, email in (("known email", "known@example.test"), ("unknown email", "nobody@example.test")):
            started = time.perf_counter()
            response = client.post("/login", data={"email": email, "password": "a wrong password"})
            samples[label].append((time.perf_counter() - started) * 1000)
            assert response.status_code == 400, response.status_code
    medians = {}
    for label, values in samples.items():
        values.sort()
        medians[label] = statistics.median(values)
        print(f"{label:<14} median {medians[label]:6.1f} ms   p90 {values[int(len(values) * 0.9) - 1]:6.1f} ms")
    print(f"unknown/known median ratio: {medians['unknown email'] / medians['known email']:.2f}")


if __name__ == "__main__":
    main()
