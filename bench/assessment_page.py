"""Time the assessment page and an htmx answer save on a full checklist.

    .venv/bin/python bench/assessment_page.py [--rounds 30]

Builds a throwaway SQLite database (or uses DATABASE_URL), a tier-1 service with all 46
items answered and two evidence links each, then prints median and p95 latency of
GET /assessments/<id>, GET of one item's panel (htmx) and POST .../answer with HX-Request,
through the Flask test client (no network), with the SQL statements each makes. Numbers
only; nothing is asserted.
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

    from webapp import accounts, assessments, catalog, create_app, registry
    from webapp.extensions import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL") or f"sqlite:///{scratch}/bench.sqlite3",
                      "WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False, "SECRET_KEY": "bench" * 8})
    with app.app_context():
        db.create_all()
        user = accounts.create_user("bench@example.test", "Bench", "a long password")
        team = registry.create_team("Bench team", "", user)
        service = registry.register_service(team, {"name": "Bench service", "tier": 1}, user)
        catalog.sync(force=True)
        assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"), user)
        for item in assessments.checklist_for(assessment).items:
            assessments.record_answer(assessment, item.key, "partial", f"**Note** for {item.key}", user)
            for n in range(2):
                assessments.add_evidence(assessment, item.key, f"https://wiki.example.test/{item.key}/{n}", f"Doc {n}", user)
        db.session.commit()
        assessment_id, key = assessment.id, "structured_logging"

    client = app.test_client()
    client.post("/login", data={"email": "bench@example.test", "password": "a long password"})

    def timed(call) -> list[float]:
        samples = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            response = call()
            samples.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.status_code
        return samples

    from sqlalchemy import event

    statements = []
    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", lambda *_: statements.append(1))

    def queries(call) -> int:
        statements.clear()
        call()
        return len(statements)

    page = timed(lambda: client.get(f"/assessments/{assessment_id}"))
    panel = timed(lambda: client.get(f"/assessments/{assessment_id}/items/{key}", headers={"HX-Request": "true"}))
    statuses = iter(["met", "partial"] * args.rounds)

    def save():
        with app.app_context():
            version = assessments.answer_for(db.session.get(assessments.Assessment, assessment_id), key).version
        return client.post(f"/assessments/{assessment_id}/items/{key}/answer",
                           data={"status": next(statuses), "note": "bench", "version": str(version)},
                           headers={"HX-Request": "true"})

    saves = timed(save)
    size = len(client.get(f"/assessments/{assessment_id}").data)
    page_queries = queries(lambda: client.get(f"/assessments/{assessment_id}"))
    panel_queries = queries(lambda: client.get(f"/assessments/{assessment_id}/items/{key}", headers={"HX-Request": "true"}))
    for name, samples in (("assessment page GET", page), ("item panel GET (htmx)", panel), ("htmx answer save", saves)):
        ordered = sorted(samples)
        p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
        print(f"{name}: median {statistics.median(samples):.1f} ms, p95 {p95:.1f} ms over {len(samples)} requests")
    print(f"assessment page size: {size / 1024:.0f} KiB (46 items, 92 evidence links)")
    print(f"SQL statements: assessment page {page_queries}, item panel {panel_queries}")


if __name__ == "__main__":
    main()
