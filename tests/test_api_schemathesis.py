"""schemathesis against /api/v1/openapi.json: a real HTTP server on the test database, seeded,
with a token of every scope. No 5xx, and every response matches the document."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp import assessments, catalog, tokens
from webapp.extensions import db
from webapp.models import Report, utcnow

pytestmark = pytest.mark.slow

class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:  # thousands of requests: keep the output readable
        pass


CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def seed() -> str:
    """A team with a service, an assessment with an answer, evidence, a waiver and a report."""
    admin = UserFactory(email="admin@example.test", is_admin=True, is_reviewer=True)
    member = MembershipFactory(user=admin, role="maintainer", team__slug="platform", team__name="Platform")
    service = ServiceFactory(team=member.team, slug="checkout", name="Checkout", tier=1)
    ServiceFactory(team=member.team, slug="search", name="Search")
    catalog.sync(force=True)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"), admin)
    key = assessments.checklist_for(assessment).items[0].key
    assessments.record_answer(assessment, key, "not_met", "Not yet", admin)
    assessments.add_evidence(assessment, key, "https://ci.example.test/run/1", "Load test", admin)
    assessments.request_waiver(assessment, key, "Launch first", "Manual failover", admin,
                               (utcnow() + timedelta(days=30)).date(), admin)
    db.session.add(Report(assessment_id=assessment.id, pdf=b"%PDF-1.7 test", sha256="ab" * 32,
                          created_by_id=admin.id))
    _, secret = tokens.create_token(admin, "schemathesis", ["read", "write", "probe"], 1)
    db.session.commit()
    return secret


def test_schemathesis_finds_no_server_errors_or_schema_violations(app, tmp_path):
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary, "schemathesis is in the dev extra: pip install -e '.[dev]'"
    secret = seed()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        completed = subprocess.run(
            [binary, "run", f"http://127.0.0.1:{server.server_port}/api/v1/openapi.json",
             "-H", f"Authorization: Bearer {secret}", "--checks", CHECKS,
             "--phases", "examples,coverage,fuzzing", "--max-examples", "25",
             "--max-time", os.environ.get("SCHEMATHESIS_MAX_TIME", "60"),
             "--seed", "20261201", "--workers", "1", "--request-timeout", "10"],
            capture_output=True, text=True, timeout=400, check=False,
            cwd=tmp_path)  # it keeps a cache folder in its working directory
    finally:
        server.shutdown()
        thread.join(5)
    output = completed.stdout
    assert completed.returncode == 0, output[-8000:] + completed.stderr[-2000:]
    spec = app.test_client().get("/api/v1/openapi.json").get_json()
    operations = sum(len(methods) for methods in spec["paths"].values())
    found = int(re.search(r"Selected:\s+\d+/(\d+)", output).group(1))
    tested = int(re.search(r"Tested:\s+(\d+)", output).group(1))
    cases = re.search(r"(\d+) generated", output).group(1)
    print(f"schemathesis: {tested} operations tested ({operations} in the document), {cases} cases, "
          "no failures")
    # Every operation it can call was exercised (it does not call the document's own URL).
    assert tested == found >= operations - 1
