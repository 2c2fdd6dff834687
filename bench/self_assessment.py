"""Preflight assesses itself: start Preflight under gunicorn over local TLS, register it as a
service in itself, answer the production readiness checklist with evidence pointing at the
files that do the work, run every probe against it, and print the score and verdict, the
items the app cannot meet by itself (and why), and Mozilla Observatory's grade.

    .venv/bin/python bench/self_assessment.py [--repo-url URL] [--no-observatory]

TLS: a throwaway CA and certificate from trustme; gunicorn serves HTTPS with them and the
probes trust that CA (SSL_CERT_FILE). Observatory: the `httpobs` package (its scanner,
analyzers and grader, unchanged); its pins are too old to share a virtualenv with Preflight,
so the script installs it with --no-deps into a cached virtualenv of its own, beside a
three-line stand-in for the one Celery exception class its retriever imports.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Item key -> (status, note, [evidence paths in the repository]). Probe-backed items are not
# here: the probes answer them. "outside" says why the app alone cannot meet an item.
ANSWERS: dict[str, tuple[str, str, list[str]]] = {
    "redundant_servers": ("partial", "Web and worker are stateless with PostgreSQL + Redis: run any number "
                          "of each (compose runs one of each).", ["docs/deploy/compose.yaml", "docs/runbook.md"]),
    "load_balancer_in_place": ("not_met", "Readiness and draining are built for one; none is deployed here.",
                               ["webapp/gunicorn_conf.py", "docs/runbook.md"]),
    "autoscaling_configured": ("not_met", "Stateless processes could scale; no autoscaler is deployed.", []),
    "firewall_rules_reviewed": ("not_met", "No network is deployed with this app.", []),
    "network_segmentation": ("not_met", "No network is deployed with this app.", []),
    "secrets_in_environment": ("met", "SECRET_KEY, DATABASE_URL, REDIS_URL from the environment; production "
                               "refuses to start without a real key.", ["webapp/config.py", "tests/test_ops_deploy.py"]),
    "config_per_environment": ("met", "PREFLIGHT_ENV switches production defaults; every setting validated at "
                               "start.", ["webapp/config.py", "tests/test_migrations.py"]),
    "no_hardcoded_endpoints": ("met", "Database, Redis and probe networks come from settings.", ["webapp/config.py"]),
    "feature_flags_for_risky_changes": ("met", "Run-time kill switches (Probe now, scheduled probes, draft PDFs, "
                                        "API writes) in the database, so every worker and host agrees within 5 s; "
                                        "admin page and `flask flags set`, audited; runbook step to turn one off.",
                                        ["webapp/flags.py", "tests/test_flags.py", "docs/runbook.md"]),
    "structured_logging": ("met", "JSON lines with request_id and user_id, gunicorn access log and job lines "
                           "included; secrets scrubbed and tested.", ["webapp/logs.py", "tests/test_ops_gunicorn.py"]),
    "log_rotation": ("met", "The app writes no log files (stdout only); compose caps the container log size.",
                     ["webapp/logs.py", "docs/deploy/compose.yaml"]),
    "error_tracking": ("partial", "Errors are logged as JSON with request ids and alerted on (5xx rate); no "
                       "error tracker (Sentry) is wired in.", ["docs/deploy/prometheus-alerts.yml"]),
    "timeouts_on_external_calls": ("met", "PostgreSQL: connect timeout, statement timeout, client-side watchdog; "
                                   "Redis: socket timeouts; probes: total deadline. Tested through a TCP proxy.",
                                   ["webapp/config.py", "webapp/db_deadlines.py", "tests/test_ops_faults.py"]),
    "circuit_breakers": ("met", "Database: a breaker per process opens after repeated failures, answers 503 at "
                         "once for a cool-down, probes once half-open, closes by itself; logged and exported, on "
                         "the dashboard; tested through a TCP proxy on PostgreSQL. Redis: 'jobs delayed' re-checked "
                         "every 5 s, rate limits fall back to memory.",
                         ["webapp/db_breaker.py", "tests/test_ops_faults.py", "webapp/queue_health.py",
                          "docs/deploy/grafana-dashboard.json"]),
    "bulkheads": ("met", "Probes run in the worker, never in web processes; bounded pools per process; bounded "
                  "probe concurrency.", ["webapp/config.py", "webapp/probes/tasks.py"]),
    "graceful_degradation": ("met", "Redis down: sign-in works, banner says jobs are delayed. Database down: a "
                             "clear 503 page, readiness 503, recovery without restart.", ["tests/test_ops_faults.py"]),
    "retry_with_backoff": ("met", "tenacity, full-jitter exponential backoff capped in attempts and time, only "
                           "where safe: queueing on a Redis connection failure, job transactions on transient "
                           "conflicts; probes deliberately not retried (a failure is the result).",
                           ["webapp/retry.py", "tests/test_retry.py"]),
    "connection_pooling": ("met", "SQLAlchemy QueuePool with pre-ping.", ["webapp/config.py"]),
    "pool_size_limits": ("met", "DB_POOL_SIZE 5 + DB_MAX_OVERFLOW 5, 5 s pool timeout.", ["webapp/config.py"]),
    "query_timeouts": ("met", "statement_timeout and lock_timeout on every connection.", ["webapp/config.py"]),
    "tcp_keepalive": ("met", "libpq keepalives 30/10/3.", ["webapp/config.py"]),
    "automated_backups": ("partial", "`flask db-backup` makes consistent backups; scheduling it and storing "
                          "copies off the host is the operator's.", ["webapp/backup.py", "docs/runbook.md"]),
    "restore_tested": ("met", "Every CI run backs up, wipes, restores and compares every table on SQLite and "
                       "PostgreSQL; drill in the runbook.", ["tests/test_ops_backup.py", "docs/runbook.md"]),
    "expand_contract_migrations": ("met", "Alembic migrations; the upgrade procedure is expand, migrate, "
                                   "contract.", ["docs/runbook.md", "migrations/"]),
    "immutable_infrastructure": ("partial", "An image with pinned dependencies; not built or run on this "
                                 "machine (no container engine).", ["docs/deploy/Dockerfile", "docs/deploy/constraints.txt"]),
    "zero_downtime_deployments": ("partial", "SIGTERM drains (readiness 503 first, no accepted request reset, "
                                  "tested) and migrations are expand-contract; needs two instances behind a "
                                  "load balancer.", ["webapp/gunicorn_conf.py", "tests/test_ops_gunicorn.py"]),
    "automated_rollback": ("not_met", "No deployment pipeline ships with the app.", []),
    "deployment_governor": ("not_met", "No deployment pipeline ships with the app.", []),
    "least_privilege_accounts": ("partial", "Container runs as a non-root user; team roles limit what people "
                                 "can do; the database account's grants are the operator's.",
                                 ["docs/deploy/Dockerfile", "webapp/permissions.py"]),
    "no_secrets_in_code": ("met", "No secret in the repository or image (checked); secrets never logged "
                           "(checked with planted values).", ["tests/test_ops_deploy.py", "tests/test_ops_gunicorn.py"]),
    "dependency_scanning": ("partial", "Runtime dependencies pinned; `make audit` runs pip-audit, which needs "
                            "a vulnerability database this machine cannot reach.", ["docs/deploy/constraints.txt", "Makefile"]),
    "vulnerability_management": ("not_met", "A process for people, not something the app does.", []),
    "alerting_configured": ("partial", "Alert rules ship and pass promtool in CI; a Prometheus and "
                            "Alertmanager must load and route them.", ["docs/deploy/prometheus-alerts.yml"]),
    "key_metrics_dashboard": ("met", "Grafana dashboard: traffic, errors, latency by route, database and breaker, "
                              "pool, queue, probe sweeps, retries, backups; every query checked against /metrics; "
                              "the runbook starts from it.",
                              ["docs/deploy/grafana-dashboard.json", "tests/test_ops_dashboard.py", "docs/runbook.md"]),
    "incident_response_plan": ("partial", "The runbook says what each alert means and what to do; an "
                               "organisation-wide plan is not the app's.", ["docs/runbook.md"]),
    "postmortem_process": ("not_met", "A process for people.", []),
}

OUTSIDE_THE_APP = {
    "redundant_servers": "needs two or more hosts, and a redundant PostgreSQL and Redis",
    "load_balancer_in_place": "a load balancer is infrastructure",
    "autoscaling_configured": "an autoscaler is infrastructure",
    "firewall_rules_reviewed": "firewalls are infrastructure",
    "network_segmentation": "networks are infrastructure",
    "automated_backups": "a schedule (cron/CronJob) and off-host storage are infrastructure",
    "immutable_infrastructure": "needs an image registry and a container platform",
    "zero_downtime_deployments": "needs two instances behind a load balancer",
    "automated_rollback": "a deployment pipeline's job",
    "deployment_governor": "a deployment pipeline's job",
    "least_privilege_accounts": "database and cloud accounts are granted by the operator",
    "dependency_scanning": "pip-audit needs PyPI's JSON API or OSV, not reachable here",
    "vulnerability_management": "an organisational process",
    "alerting_configured": "needs a running Prometheus + Alertmanager with a route to people",
    "incident_response_plan": "an organisational process",
    "postmortem_process": "an organisational process",
    "oncall_present": "a rotation is people; the URL registered here is a placeholder",
    "error_tracking": "needs an external error tracker (e.g. Sentry)",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, ca: str, timeout: float = 60) -> None:
    import ssl

    context = ssl.create_default_context(cafile=ca)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"nothing answered at {url}")


def start_server(work: Path, env: dict, port: int, cert: Path, key: Path) -> subprocess.Popen:
    subprocess.run([str(BIN / "flask"), "--app", "webapp", "db", "upgrade"], env=env, check=True,
                   cwd=REPO, capture_output=True)
    subprocess.run([str(BIN / "flask"), "--app", "webapp", "checklists", "sync"], env=env, check=True,
                   cwd=REPO, capture_output=True)
    log = (work / "gunicorn.log").open("wb")
    return subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", "python:webapp.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
         "--certfile", str(cert), "--keyfile", str(key), "webapp.wsgi:app"],
        env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def register_and_assess(base: str, repo_url: str) -> dict:
    """In this process, against the same database: Preflight registers itself, answers, probes."""
    from werkzeug.security import generate_password_hash

    from webapp import assessments, catalog, create_app, runbooks
    from webapp.extensions import db
    from webapp.models import Membership, Service, Team, User
    from webapp.probes.tasks import probe_services

    app = create_app({"RATELIMIT_ENABLED": False})
    with app.app_context():
        owner = User(email="sre@preflight.test", name="Preflight SRE", is_admin=True, is_reviewer=True,
                     password_hash=generate_password_hash(secrets.token_urlsafe(16)))
        team = Team(name="Preflight maintainers", slug="preflight-maintainers", description="")
        db.session.add_all([owner, team])
        db.session.flush()
        db.session.add(Membership(team=team, user=owner, role="maintainer"))
        service = Service(
            team=team, name="Preflight", slug="preflight", tier=2, lifecycle="live",
            description="Production readiness reviews (this app, assessing itself).",
            owner_id=owner.id, repository_url=repo_url,
            oncall_url="https://oncall.example.test/preflight",  # placeholder: see OUTSIDE_THE_APP
            base_url=f"{base}/login", health_url=f"{base}/healthz", readiness_url=f"{base}/readyz",
            deep_health_url=f"{base}/healthz/deep", metrics_url=f"{base}/metrics",
            probe_interval_minutes=15)
        db.session.add(service)
        db.session.flush()
        # The operators' runbook, written into Preflight and stamped as reviewed by its owner.
        runbooks.save_revision(service, (REPO / "docs" / "runbook.md").read_text(), owner, based_on_id=None)
        runbooks.mark_reviewed(service, owner)
        catalog.sync(force=True)
        version = catalog.latest_version("production-readiness")
        assessment = assessments.start_assessment(service, version, owner)
        checklist = catalog.checklist_of(version)
        for item in checklist.items:
            if item.key in ANSWERS:
                status, note, paths = ANSWERS[item.key]
                assessments.record_answer(assessment, item.key, status, note, owner)
                for path in paths:
                    assessments.add_evidence(assessment, item.key, f"{repo_url.rstrip('/')}/blob/main/{path}",
                                             path, owner)
        db.session.commit()

        started = time.monotonic()
        run_ids = probe_services([service], "cli")
        probe_seconds = time.monotonic() - started
        db.session.expire_all()
        from sqlalchemy import select

        from webapp.models import ProbeResult

        results = db.session.scalars(select(ProbeResult).where(ProbeResult.run_id.in_(run_ids))
                                     .order_by(ProbeResult.kind)).all()
        assessment = db.session.get(type(assessment), assessment.id)
        assessments.refresh_score(assessment)
        db.session.commit()
        card = assessments.scorecard(assessment)
        applicable = {item.key: item for item in checklist.items
                      if not item.tiers or service.tier in item.tiers}
        answers = assessments.answers_by_key(assessment)
        return {
            "probe_seconds": probe_seconds,
            "probes": [(r.kind, r.outcome, r.explanation) for r in results],
            "card": card,
            "items": [(key, item, answers.get(key)) for key, item in applicable.items()],
        }


def observatory(port: int, ca: Path) -> dict | None:
    """Mozilla HTTP Observatory's scanner and grader against https://localhost:PORT/."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "preflight-httpobs"
    python = cache / "venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(cache / "venv")], check=True)
        pip = [str(cache / "venv" / "bin" / "pip"), "install", "--quiet"]
        subprocess.run([*pip, "--no-deps", "httpobs==0.9.3"], check=True)
        subprocess.run([*pip, "beautifulsoup4", "publicsuffixlist", "requests"], check=True)
    shim = cache / "shim" / "celery"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text("")
    (shim / "exceptions.py").write_text(  # the retriever only imports these two names
        "class SoftTimeLimitExceeded(Exception):\n    pass\n\n\n"
        "class TimeLimitExceeded(Exception):\n    pass\n")
    code = ("import json, sys; from httpobs.scanner.local import scan; "
            f"print(json.dumps(scan('localhost', https_port={port}, http_port={free_port()}, "
            f"verify={str(ca)!r}, path='/login'), default=str))")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120,
                          # requests lets REQUESTS_CA_BUNDLE override the scanner's verify=
                          env={**os.environ, "PYTHONPATH": str(cache / "shim"),
                               "REQUESTS_CA_BUNDLE": str(ca), "CURL_CA_BUNDLE": str(ca)})
    if done.returncode != 0:
        print(f"observatory: scan failed: {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo-url", default="https://git.example.test/preflight",
                        help="where evidence links point (the repository's web view)")
    parser.add_argument("--no-observatory", action="store_true")
    args = parser.parse_args()

    import trustme

    work = Path(tempfile.mkdtemp(prefix="preflight-self-"))
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    ca_path, cert_path, key_path = work / "ca.pem", work / "cert.pem", work / "key.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    leaf.cert_chain_pems[0].write_to_path(str(cert_path))
    leaf.private_key_pem.write_to_path(str(key_path))

    port = free_port()
    base = f"https://localhost:{port}"
    shared = {"PREFLIGHT_INSTANCE_PATH": str(work), "DATABASE_URL": os.environ.get("DATABASE_URL")
              or f"sqlite:///{work / 'preflight.sqlite3'}", "REDIS_URL": os.environ.get("REDIS_URL", ""),
              "PROBE_ALLOW_NETWORKS": "127.0.0.0/8,::1/128", "SSL_CERT_FILE": str(ca_path)}
    os.environ.update(shared)  # for this process: its app, its probes and their TLS trust
    server_env = {**os.environ, **shared, "PREFLIGHT_ENV": "production",
                  "SECRET_KEY": secrets.token_hex(32), "WEB_CONCURRENCY": "4",
                  "SHUTDOWN_DRAIN_SECONDS": "0", "LOG_FORMAT": "json"}
    server = start_server(work, server_env, port, cert_path, key_path)
    try:
        wait_for(f"{base}/healthz", str(ca_path))
        for path in ("/login", "/healthz/deep", "/metrics", "/readyz") * 4:  # warm every worker
            wait_for(f"{base}{path}", str(ca_path))
        outcome = register_and_assess(base, args.repo_url)
        report(outcome)
        if not args.no_observatory:
            scan = observatory(port, ca_path)
            if scan:
                print(f"\nMozilla Observatory (httpobs 0.9.3) on {base}/login: grade "
                      f"{scan['scan']['grade']}, score {scan['scan']['score']}/100, "
                      f"{scan['scan']['tests_passed']}/{scan['scan']['tests_quantity']} tests passed")
                for name, test in sorted(scan["tests"].items()):
                    print(f"  {'pass' if test['pass'] else 'FAIL'} {test['score_modifier']:+3d} "
                          f"{name}: {test['result']}")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    return 0


def report(outcome: dict) -> None:
    card = outcome["card"]
    print(f"Probes against Preflight itself ({outcome['probe_seconds']:.1f} s):")
    for kind, result, explanation in outcome["probes"]:
        print(f"  {result:5} {kind}: {explanation}")
    print(f"\nScore {card.score:.1f} / 100, verdict: {card.verdict}")
    print(f"Answered {card.answered} of {card.applicable} applicable items (tier 2)")
    for key, category in card.categories.items():
        print(f"  {key:15} {category.score:5.1f}")
    outside, gaps = [], []
    for key, item, answer in outcome["items"]:
        status = answer.status if answer else None
        if status in ("met", "n_a"):
            continue
        probe = getattr(item, "probe", None)
        reason = OUTSIDE_THE_APP.get(key) or OUTSIDE_THE_APP.get(f"{probe}" if probe else "")
        line = f"  {status or 'unanswered':10} {'critical ' if item.critical else ''}{key}"
        if reason:
            outside.append((key, f"{line}: {reason}"))
        else:
            gaps.append(f"{line}: {answer.note if answer else ''}")
    print(f"\nCannot be met by the app itself ({len(outside)} items; why):")
    print("\n".join(line for _, line in outside) or "  none")
    print("\nGaps the app itself could still close:")
    print("\n".join(gaps) or "  none: every item not met above needs infrastructure or people, not code")
    beyond = {key for key, _ in outside}
    inside = [key for key in card.blockers if key not in beyond]
    print(f"\nBlockers (critical, not met): {', '.join(card.blockers) or 'none'}"
          + (" (all outside the app)" if card.blockers and not inside else "")
          + (f"; the app could close: {', '.join(inside)}" if inside else ""))
    print("Note: oncall_rotation passes its probe on a placeholder URL: "
          f"{OUTSIDE_THE_APP['oncall_present']}.")


if __name__ == "__main__":
    sys.exit(main())
