"""The job queue: SQLite by default, Redis when REDIS_URL is set — the Redis one run for
real (enqueue → a consumer thread → the probe job → results in the database)."""

from __future__ import annotations

import os

import pytest
from huey import RedisHuey, SqliteHuey

from tests.conftest import need
from tests.factories import ServiceFactory
from tests.probe_targets import hostile_server
from webapp.extensions import db, make_huey
from webapp.models import ProbeRun
from webapp.probes import runs
from webapp.probes.tasks import complete_runs


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


def test_redis_queue_runs_a_probe_job_for_real(app):
    url = redis_url()
    queue = make_huey({"REDIS_URL": url})
    assert isinstance(queue, RedisHuey)
    queue.flush()

    @queue.task()
    def probe_run(run_id: int) -> list[int]:
        with app.app_context():
            try:
                return complete_runs([run_id])
            finally:
                db.session.remove()

    with hostile_server() as targets:
        service = ServiceFactory(health_url=targets.url("/health"), base_url=None)
        run = runs.start_run(service, "manual")
        db.session.commit()
        pending = probe_run(run.id)
        assert queue.pending_count() == 1
        consumer = queue.create_consumer(workers=1, periodic=False, initial_delay=0.05, max_delay=0.2)
        consumer.start()
        try:
            assert pending.get(blocking=True, timeout=20) == [run.id]
        finally:
            consumer.stop(graceful=True)
    db.session.expire_all()
    finished = db.session.get(ProbeRun, run.id)
    assert finished.finished_at is not None
    assert runs.latest_results(service)["health"].outcome == "pass"
    queue.flush()


@pytest.mark.parametrize("env", [{"REDIS_URL": "redis://127.0.0.1:6379/15"}, {}])
def test_queue_choice_follows_the_environment(env, tmp_path):
    queue = make_huey({**env, "PREFLIGHT_INSTANCE_PATH": str(tmp_path)})
    assert isinstance(queue, RedisHuey if env else SqliteHuey)
