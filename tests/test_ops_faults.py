"""Faults between the app and what it depends on, through a real TCP proxy: PostgreSQL that
hangs, cuts connections or refuses them; Redis that refuses or hangs. The app answers with
a clear page (never a traceback or a stall), readiness says 503 while the database is away
and 200 when it is back, without a restart, and sign-in keeps working without Redis."""

from __future__ import annotations

import re
import threading
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, select

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from tests.ops_support import TcpProxy, scratch_postgres
from webapp import create_app, db_breaker
from webapp.extensions import db, huey, limiter
from webapp.models import ProbeRun

GUARD_SECONDS = 20  # a request that takes longer than this is the stall we are testing against


def _get(client, path, **kwargs):
    """A request that must come back: run it in a thread and fail instead of hanging."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(r=client.get(path, **kwargs)), daemon=True)
    thread.start()
    thread.join(GUARD_SECONDS)
    assert not thread.is_alive(), f"GET {path} still waiting after {GUARD_SECONDS} s"
    return box["r"]


@pytest.fixture
def proxied_postgres(tmp_path):
    with scratch_postgres() as url:
        direct = create_engine(url)
        with direct.begin() as connection:
            db.metadata.create_all(connection)
        direct.dispose()
        parts = urlsplit(url)
        proxy = TcpProxy(parts.hostname, parts.port or 5432)
        proxied_url = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
        app = create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "WTF_CSRF_ENABLED": False,
                          "SQLALCHEMY_DATABASE_URI": proxied_url, "RATELIMIT_ENABLED": False,
                          "DB_STATEMENT_TIMEOUT_MS": 1000, "DB_CONNECT_TIMEOUT": 2})
        app.instance_path = str(tmp_path)
        try:
            yield app, proxy
        finally:
            proxy.close()
            with app.app_context():
                db.engine.dispose()
                app.extensions["preflight_readiness_engine"].dispose()


def _assert_clear_database_page(response):
    body = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "The database is not answering" in body
    assert "Traceback" not in body and "psycopg" not in body


@pytest.mark.postgres
def test_database_hang_gives_503_then_recovers_without_restart(proxied_postgres):
    app, proxy = proxied_postgres
    client = app.test_client()
    with app.app_context():
        UserFactory(email="someone@example.test")
        db.session.commit()
        db.session.remove()
    assert _get(client, "/readyz").status_code == 200
    assert _get(client, "/login").status_code == 200  # a pooled connection now exists

    proxy.mode = "hang"
    ready = _get(client, "/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"]["status"] == "fail"
    _assert_clear_database_page(_get(client, "/login"))  # pooled connection stuck: cut, 503
    assert _get(client, "/healthz").status_code == 200  # liveness never depends on the database

    proxy.mode = "pass"
    assert _get(client, "/readyz").status_code == 200
    assert _get(client, "/login").status_code == 200


@pytest.mark.postgres
def test_cut_connections_are_replaced_not_served_as_errors(proxied_postgres):
    app, proxy = proxied_postgres
    client = app.test_client()
    with app.app_context():
        UserFactory(email="someone@example.test")
        db.session.commit()
        db.session.remove()
    assert _get(client, "/login").status_code == 200
    proxy.cut()  # every pooled connection reset, as when PostgreSQL restarts
    assert _get(client, "/login").status_code == 200  # pool_pre_ping swapped the dead one
    assert _get(client, "/readyz").status_code == 200

    proxy.mode = "refuse"
    proxy.cut()
    assert _get(client, "/readyz").status_code == 503
    _assert_clear_database_page(_get(client, "/login"))
    proxy.mode = "pass"
    assert _get(client, "/login").status_code == 200


@pytest.mark.postgres
def test_breaker_fails_fast_while_the_database_hangs_and_closes_by_itself(proxied_postgres):
    """Two failures open it: then pages, the API and readiness answer 503 at once without a
    single connection to the database; after the cool-down one request probes (still hung:
    open again), and once the database is back the next probe closes it."""
    app, proxy = proxied_postgres
    breaker = app.extensions["preflight_db_breaker"] = db_breaker.Breaker(2, 2.0)
    client = app.test_client()
    with app.app_context():
        UserFactory(email="someone@example.test")
        db.session.commit()
        db.session.remove()
    assert _get(client, "/login").status_code == 200

    proxy.mode = "hang"
    for _ in range(2):  # each waits for a deadline (the watchdog, the connect timeout)
        _assert_clear_database_page(_get(client, "/login"))
    assert breaker.state == "open"
    touched = proxy.accepted
    started = time.monotonic()
    for _ in range(20):
        response = _get(client, "/login")
        _assert_clear_database_page(response)
        assert 1 <= int(response.headers["Retry-After"]) <= 2
    api = _get(client, "/api/v1/teams", headers={"Authorization": "Bearer pft_x"})
    assert api.status_code == 503 and api.get_json()["type"].endswith("#problem-database-unavailable")
    ready = _get(client, "/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"]["breaker"] == "open"
    assert time.monotonic() - started < 2.0  # 22 requests answered without waiting on the database
    assert proxy.accepted == touched, "the breaker let a request reach the database"
    assert _get(client, "/healthz").status_code == 200
    assert b"preflight_database_breaker_open 1.0" in _get(client, "/metrics").data
    touched = proxy.accepted

    time.sleep(2.1)  # cool-down over, database still hung: one probe, then open again
    _assert_clear_database_page(_get(client, "/login"))
    assert breaker.state == "open" and proxy.accepted == touched + 1
    _assert_clear_database_page(_get(client, "/login"))
    assert proxy.accepted == touched + 1

    proxy.mode = "pass"
    time.sleep(2.1)
    assert _get(client, "/login").status_code == 200  # the probe passed: closed, served
    assert breaker.state == "closed"
    assert _get(client, "/readyz").status_code == 200
    assert b"preflight_database_breaker_open 0.0" in _get(client, "/metrics").data


def test_breaker_counts_failures_in_a_window_and_probes_once_at_a_time():
    now = [100.0]
    breaker = db_breaker.Breaker(3, 10.0, clock=lambda: now[0])
    breaker.failure()
    breaker.failure()
    now[0] += 31  # older failures leave the 30 s window
    breaker.failure()
    assert breaker.admit() == db_breaker.GO
    breaker.failure()
    breaker.failure()
    assert breaker.state == "open" and breaker.admit() == db_breaker.REFUSE
    assert breaker.retry_after() == 10
    now[0] += 10
    assert breaker.admit() == db_breaker.PROBE
    assert breaker.admit() == db_breaker.REFUSE  # one probe at a time; the rest fail fast
    breaker.success()
    assert breaker.admit() == db_breaker.GO
    for _ in range(3):
        breaker.failure()
    now[0] += 10
    assert breaker.admit() == db_breaker.PROBE
    breaker.failure()  # the probe failed: a whole new cool-down
    now[0] += 9
    assert breaker.admit() == db_breaker.REFUSE


@pytest.fixture
def proxied_redis(tmp_path, app, monkeypatch):
    import os

    from tests.conftest import need
    from webapp import queue_health
    from webapp.extensions import make_huey

    redis_url = os.environ.get("TEST_REDIS_URL", "")
    need("redis", bool(redis_url), "TEST_REDIS_URL is not set")
    parts = urlsplit(redis_url)
    proxy = TcpProxy(parts.hostname, parts.port or 6379)
    proxied_url = f"redis://127.0.0.1:{proxy.port}{parts.path or '/0'}"
    redis_app = create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "WTF_CSRF_ENABLED": False,
                            "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                            "REDIS_URL": proxied_url, "RATELIMIT_ENABLED": True,
                            "RATELIMIT_STORAGE_URI": proxied_url,
                            "RATELIMIT_STORAGE_OPTIONS": {"socket_timeout": 0.3,
                                                          "socket_connect_timeout": 0.3}})
    redis_app.instance_path = str(tmp_path)
    limiter._storage_dead = False  # global too: a previous test may have left it "dead"
    queue = make_huey({"REDIS_URL": proxied_url, "REDIS_TIMEOUT_MS": "300"})
    monkeypatch.setattr(huey, "immediate", False)  # first: its setter replaces the storage
    monkeypatch.setattr(huey, "storage", queue.storage)
    monkeypatch.setattr(queue_health, "RECHECK_SECONDS", 0.0)
    queue_health._state.update(failed_at=None, checked_at=0.0)
    try:
        yield redis_app, proxy
    finally:
        limiter.enabled = False  # Flask-Limiter's state is global (see test_auth)
        proxy.mode = "pass"
        queue.storage.flush_queue()
        proxy.close()
        queue_health._state.update(failed_at=None, checked_at=0.0)
        with redis_app.app_context():
            db.engine.dispose()


@pytest.mark.redis
@pytest.mark.parametrize("fault", ["refuse", "hang"])
def test_without_redis_people_still_sign_in_and_probe_now_says_jobs_are_delayed(
        proxied_redis, fault, caplog):
    redis_app, proxy = proxied_redis
    member = MembershipFactory(role="maintainer", user=UserFactory(email="ops@example.test"))
    service = ServiceFactory(team=member.team, base_url="http://127.0.0.1:9/",
                             health_url="http://127.0.0.1:9/healthz")
    db.session.commit()
    client = redis_app.test_client()

    proxy.mode = fault
    proxy.cut()
    response = client.post("/login", data={"email": "ops@example.test",
                                           "password": "correct horse battery"})
    assert response.status_code == 302  # rate limits fail open
    assert any("storage" in r.getMessage().lower() for r in caplog.records
               if r.name == "flask-limiter"), "the limiter's fallback is logged"

    response = client.post(f"/services/{service.id}/probes/run", follow_redirects=True)
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Background jobs are delayed" in body and 'id="jobs-delayed"' in body
    assert "Probe now could not start" in body
    assert any("job queue unavailable" in r.getMessage() for r in caplog.records)
    unfinished = db.session.scalars(select(ProbeRun).where(ProbeRun.finished_at.is_(None))).all()
    assert unfinished == []  # a run that could not be queued is closed, not left "running"

    proxy.mode = "pass"  # Redis is back: the banner goes by itself
    body = client.get(f"/services/{service.id}/probes").get_data(as_text=True)
    assert 'id="jobs-delayed"' not in body
    response = client.post(f"/services/{service.id}/probes/run")
    assert response.status_code == 302 and re.search(r"/probes/runs/\d+$", response.headers["Location"])
    assert huey.pending_count() == 1


@pytest.mark.redis
def test_queueing_retries_a_refused_redis_briefly_then_reports_jobs_delayed(proxied_redis, caplog):
    """Three connection attempts with jittered backoff, within a second; then "jobs delayed"."""
    from webapp import queue_health
    from webapp.probes.tasks import complete_run_task

    _, proxy = proxied_redis
    proxy.mode = "refuse"
    proxy.cut()
    before, started = proxy.accepted, time.monotonic()
    assert queue_health.enqueue(complete_run_task, 1) is False
    assert time.monotonic() - started < 1.5
    assert proxy.accepted - before == 3  # one connection attempt per try, three tries
    assert sum("retrying in" in r.getMessage() for r in caplog.records if r.name == "webapp.retry") == 2
    proxy.mode = "pass"
    assert queue_health.enqueue(complete_run_task, 1) is True
    assert huey.pending_count() == 1
