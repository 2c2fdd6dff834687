"""Preflight's own health, readiness and metrics endpoints (no sign-in: load balancers use them)."""

from __future__ import annotations

import time

from flask import Blueprint, Response, current_app, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from sqlalchemy import text

from webapp import catalog
from webapp.extensions import db, huey

bp = Blueprint("ops", __name__)

REQUESTS = Counter("preflight_http_requests", "HTTP requests served", ["method", "endpoint", "status"])
DURATION = Histogram("preflight_http_request_duration_seconds", "HTTP request duration",
                     ["method", "endpoint"])


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


def _check_database() -> dict:
    started = time.perf_counter()
    try:
        db.session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", whatever the driver raised
        current_app.logger.warning("readiness: database check failed: %s", exc)
        return {"status": "fail", "error": type(exc).__name__}
    return {"status": "pass", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}


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
    """Readiness: the database answers."""
    database = _check_database()
    code = 200 if database["status"] == "pass" else 503
    return jsonify(status=database["status"], checks={"database": database}), code


@bp.get("/healthz/deep")
def deep_health():
    """Deep health: database, job queue and checklists, each reported."""
    checks = {"database": _check_database(), "queue": _check_queue(), "checklists": _check_checklists()}
    worst = "fail" if any(c["status"] == "fail" for c in checks.values()) else (
        "warn" if any(c["status"] == "warn" for c in checks.values()) else "pass")
    return jsonify(status=worst, checks=checks), 503 if worst == "fail" else 200


@bp.get("/metrics")
def metrics():
    """Prometheus metrics of this process."""
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
