"""Preflight's own health, readiness and metrics endpoints (no sign-in: load balancers use them)."""

from __future__ import annotations

import os
import sys
import time

from flask import Blueprint, Response, current_app, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.pool import NullPool

from webapp import catalog
from webapp.extensions import db, huey

bp = Blueprint("ops", __name__)

REQUESTS = Counter("preflight_http_requests", "HTTP requests served", ["method", "endpoint", "status"])
DURATION = Histogram("preflight_http_request_duration_seconds", "HTTP request duration",
                     ["method", "endpoint"])
# Summed over the live gunicorn workers: how many database connections are in use right now.
# In multiprocess mode an unlabelled gauge opens its file when created, at import: a command
# run before gunicorn made the directory (`flask db upgrade` in the same environment) needs it.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
POOL_IN_USE = Gauge("preflight_db_pool_connections_in_use", "Database connections checked out of the pool",
                    multiprocess_mode="livesum")


def count_pool_use(engine) -> None:
    """Keep POOL_IN_USE up to date from the pool's own events (no query, no lock)."""
    event.listen(engine, "checkout", lambda *args: POOL_IN_USE.inc())
    event.listen(engine, "checkin", lambda *args: POOL_IN_USE.dec())


@bp.before_app_request
def _start_timer() -> None:
    g.started = time.perf_counter()


@bp.after_app_request
def _count(response):
    endpoint = request.endpoint or "unknown"
    if "started" in g:
        DURATION.labels(request.method, endpoint).observe(time.perf_counter() - g.started)
    REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
    return response


READY_TIMEOUT_SECONDS = 2


def _readiness_engine():
    """PostgreSQL: a fresh connection per check with a 2 s connect timeout and a 1 s
    statement timeout, so readiness answers within ~2 s whatever the database does (a pooled
    connection could be stuck behind a hung network path) and recovers with it."""
    engine = current_app.extensions.get("preflight_readiness_engine")
    if engine is None:
        url = current_app.config["SQLALCHEMY_DATABASE_URI"]
        if not url.startswith("postgresql"):
            return None
        engine = create_engine(url, poolclass=NullPool, connect_args={
            "connect_timeout": READY_TIMEOUT_SECONDS,
            "options": "-c statement_timeout=1000", "application_name": "preflight-readiness"})
        current_app.extensions["preflight_readiness_engine"] = engine
    return engine


def check_database() -> dict:
    started = time.perf_counter()
    try:
        engine = _readiness_engine()
        if engine is None:
            db.session.execute(text("SELECT 1"))
        else:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", whatever the driver raised
        current_app.logger.warning("readiness: database check failed: %s", type(exc).__name__)
        return {"status": "fail", "error": type(exc).__name__}
    return {"status": "pass", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


def _draining() -> bool:
    """True once gunicorn got SIGTERM: the load balancer should stop sending us traffic."""
    conf = sys.modules.get("webapp.gunicorn_conf")
    return bool(conf and conf.draining())


def _check_queue() -> dict:
    try:
        pending = huey.pending_count()
    except Exception as exc:  # noqa: BLE001 - Redis down, SQLite locked: report, never crash the probe
        return {"status": "fail", "error": type(exc).__name__}
    return {"status": "pass", "pending": pending}


def _check_checklists() -> dict:
    """From the database, so every worker and host answers alike: `warn` when a file was
    refused (its last good version serves) or when nothing is loaded yet."""
    try:
        refused = catalog.refused_count()
        loaded = len(catalog.latest_versions())
    except Exception as exc:  # noqa: BLE001 - the database check reports the cause; don't crash the probe
        return {"status": "fail", "error": type(exc).__name__}
    return {"status": "warn" if refused or not loaded else "pass", "checklists": loaded, "refused_files": refused,
            "problems": len(catalog.current_problems()) if refused else 0}


@bp.get("/healthz")
def health():
    """Shallow liveness: the process answers."""
    return jsonify(status="pass")


@bp.get("/readyz")
def ready():
    """Readiness: the database answers and the server is not shutting down."""
    if _draining():
        return jsonify(status="fail", checks={"shutdown": {"status": "fail", "draining": True}}), 503
    database = check_database()
    code = 200 if database["status"] == "pass" else 503
    return jsonify(status=database["status"], checks={"database": database}), code


@bp.get("/healthz/deep")
def deep_health():
    """Deep health: database, job queue and checklists, each reported."""
    checks = {"database": check_database(), "queue": _check_queue(), "checklists": _check_checklists()}
    worst = "fail" if any(c["status"] == "fail" for c in checks.values()) else (
        "warn" if any(c["status"] == "warn" for c in checks.values()) else "pass")
    return jsonify(status=worst, checks=checks), 503 if worst == "fail" else 200


class _DependencyCollector:
    """Gauges computed at scrape time: can this instance reach its database and job queue,
    and how many jobs wait (docs/deploy/prometheus-alerts.yml alerts on them)."""

    def collect(self):
        database = check_database()
        queue = _check_queue()
        yield GaugeMetricFamily("preflight_database_up", "1 if the database answered the last scrape",
                                value=1 if database["status"] == "pass" else 0)
        yield GaugeMetricFamily("preflight_job_queue_up", "1 if the job queue answered the last scrape",
                                value=1 if queue["status"] == "pass" else 0)
        if queue["status"] == "pass":
            yield GaugeMetricFamily("preflight_job_queue_pending", "Jobs waiting in the queue",
                                    value=queue["pending"])
        running = _sweep_running_seconds()
        if running is not None:
            yield GaugeMetricFamily(
                "preflight_probe_sweep_running_seconds",
                "How long the current probe sweep has been running (0: none running); its peaks "
                "are the sweep durations", value=running)


def _sweep_running_seconds() -> float | None:
    """From the sweep's lock row (one primary-key read): every instance reports alike."""
    from webapp.models import JobLock, utcnow
    from webapp.probes.tasks import SWEEP_LOCK

    try:
        acquired = db.session.scalar(select(JobLock.acquired_at).where(JobLock.name == SWEEP_LOCK))
    except Exception:  # noqa: BLE001 - database down: preflight_database_up says so already
        db.session.rollback()
        return None
    return max(0.0, (utcnow() - acquired).total_seconds()) if acquired else 0.0


@bp.get("/metrics")
def metrics():
    """Prometheus metrics: of every gunicorn worker together when PROMETHEUS_MULTIPROC_DIR is
    set (webapp/gunicorn_conf.py sets it), else of this process; plus dependency gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        # process_* of the worker answering this scrape (multiprocess mode has none otherwise).
        ProcessCollector(registry=registry)
        body = generate_latest(registry)
    else:
        body = generate_latest()
    dependencies = CollectorRegistry()
    dependencies.register(_DependencyCollector())
    return Response(body + generate_latest(dependencies), mimetype=CONTENT_TYPE_LATEST)
