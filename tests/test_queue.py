"""The job queue: SQLite by default, Redis when REDIS_URL is set — both run for real
(enqueue → a consumer thread that builds its own app → the real probe job → results in
the database)."""

from __future__ import annotations

import os
import signal

import pytest
from huey import RedisHuey, SqliteHuey
from sqlalchemy import select

from tests.conftest import need
from tests.factories import ServiceFactory
from tests.probe_targets import hostile_server
from webapp.extensions import db, huey, make_huey
from webapp.models import ProbeRun, ServiceCheck
from webapp.probes import runs, tasks


def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or ""
    if url:
        import redis

        try:
            redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        except redis.RedisError as exc:
            need("redis", False, f"cannot reach {url}: {exc}")
    need("redis", bool(url), "neither TEST_REDIS_URL nor REDIS_URL is set")
    return url


def test_sqlite_queue_by_default(tmp_path):
    queue = make_huey({"PREFLIGHT_INSTANCE_PATH": str(tmp_path)})
    assert isinstance(queue, SqliteHuey)
    assert (tmp_path / "huey.sqlite3").exists()


@pytest.fixture
def worker_env(app, monkeypatch):
    """The environment a worker process starts from: it builds its own app from it (no app
    context exists in a consumer thread), pointed at the test database."""
    monkeypatch.setenv("DATABASE_URL", app.config["SQLALCHEMY_DATABASE_URI"])
    monkeypatch.setenv("PROBE_ALLOW_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("PROBE_DEADLINE_SECONDS", "2")
    monkeypatch.setenv("SECRET_KEY", "worker-secret-key-for-tests-only")
    # Building an app re-initialises the shared extensions (the limiter among them): keep the
    # test app's settings, or later tests' sign-ins hit a rate limit.
    monkeypatch.setenv("RATELIMIT_ENABLED", "false")
    monkeypatch.delenv("REDIS_URL", raising=False)
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    tasks._app = None
    yield
    if tasks._app is not None:
        with tasks._app.app_context():
            db.engine.dispose()
    tasks._app = None
    for sig, handler in saved.items():  # a Huey consumer installs its own
        signal.signal(sig, handler)


def run_through_consumer(queue, pending, timeout: float = 20):
    consumer = queue.create_consumer(workers=1, periodic=False, initial_delay=0.05, max_delay=0.2)
    consumer.start()
    try:
        return pending.get(blocking=True, timeout=timeout)
    finally:
        consumer.stop(graceful=True)


def test_probe_now_job_runs_in_a_consumer_that_builds_its_own_app(worker_env):
    """The real `complete_run_task` on the app's own queue (SQLite here), run by a consumer
    thread: the worker's start-up path (`tasks.app_context` creating the app from the
    environment) and the job itself, not a stand-in."""
    with hostile_server() as targets:
        service = ServiceFactory(health_url=targets.url("/health"), base_url=None)
        run = runs.start_run(service, "manual")
        db.session.commit()
        huey.immediate = False
        try:
            huey.flush()
            pending = tasks.complete_run_task(run.id)
            assert huey.pending_count() == 1
            assert run_through_consumer(huey, pending) == [run.id]
        finally:
            huey.flush()
            huey.immediate = True
    assert tasks._app is not None and tasks._app.config["SQLALCHEMY_DATABASE_URI"] == os.environ["DATABASE_URL"]
    db.session.expire_all()
    finished = db.session.get(ProbeRun, run.id)
    assert (finished.finished_at is not None, finished.error) == (True, None)
    assert runs.latest_results(service)["health"].outcome == "pass"
    assert db.session.scalar(select(ServiceCheck.outcome).where(ServiceCheck.service_id == service.id,
                                                                ServiceCheck.kind == "health")) == "pass"


def test_redis_queue_runs_the_probe_job_for_real(worker_env):
    url = redis_url()
    queue = make_huey({"REDIS_URL": url})
    assert isinstance(queue, RedisHuey)
    queue.flush()
    complete_run = queue.task(name="complete_run_task")(tasks.complete_run_task.func)  # the real job's code

    with hostile_server() as targets:
        service = ServiceFactory(health_url=targets.url("/health"), base_url=None)
        run = runs.start_run(service, "manual")
        db.session.commit()
        pending = complete_run(run.id)
        assert queue.pending_count() == 1
        assert run_through_consumer(queue, pending) == [run.id]
    db.session.expire_all()
    finished = db.session.get(ProbeRun, run.id)
    assert finished.finished_at is not None
    assert runs.latest_results(service)["health"].outcome == "pass"
    queue.flush()


@pytest.mark.parametrize("env", [{"REDIS_URL": "redis://127.0.0.1:6379/15"}, {}])
def test_queue_choice_follows_the_environment(env, tmp_path):
    queue = make_huey({**env, "PREFLIGHT_INSTANCE_PATH": str(tmp_path)})
    assert isinstance(queue, RedisHuey if env else SqliteHuey)
