"""Retries with backoff (webapp/retry.py): only transient failures, bounded in attempts and
time, jittered, logged and counted; real database conflicts on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from webapp import retry
from webapp.extensions import db
from webapp.models import FeatureFlag


class FlakyTask:
    """Stands in for a Huey task object: fails with `errors` first, then queues."""

    name = "flaky"

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self, *args):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return args


def _retries(operation: str) -> float:
    return retry.RETRIES.labels(operation)._value.get()


def test_enqueue_retries_connection_failures_with_growing_jittered_waits(caplog):
    before = _retries("enqueue flaky")
    task = FlakyTask(RedisConnectionError("refused"), RedisConnectionError("reset"))
    assert retry.enqueue(task, 7) == (7,)
    assert task.calls == 3 and _retries("enqueue flaky") == before + 2
    lines = [r.getMessage() for r in caplog.records if r.name == "webapp.retry"]
    assert len(lines) == 2 and "attempt 1" in lines[0] and "attempt 2" in lines[1]
    waits = [float(line.rsplit("retrying in ", 1)[1].split()[0]) for line in lines]
    assert 0 <= waits[0] <= 0.05 and 0 <= waits[1] <= 0.1  # full jitter under 0.05 * 2**n


def test_enqueue_gives_up_after_three_attempts_within_a_second():
    task = FlakyTask(*[RedisConnectionError("refused")] * 10)
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        retry.enqueue(task)
    assert task.calls == 3 and time.monotonic() - started < 1.0


def test_enqueue_never_retries_a_timeout_whose_push_may_have_landed():
    task = FlakyTask(RedisTimeoutError("timed out"))
    with pytest.raises(RedisTimeoutError):
        retry.enqueue(task)
    assert task.calls == 1


def test_sqlite_database_is_locked_is_retried_after_a_rollback(tmp_path):
    """A real "database is locked" from SQLite: a second connection holds the write lock."""
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    attempts, cleaned = [], []

    def work():
        attempts.append(1)
        conn = sqlite3.connect(path, timeout=0)
        try:
            conn.execute("INSERT INTO t VALUES (1)")
            conn.commit()
        finally:
            conn.close()
        return len(attempts)

    threading.Timer(0.15, holder.execute, ("ROLLBACK",)).start()
    result = retry.call("sqlite write", work, retry_on=retry.transient_database_error, attempts=6,
                        within_seconds=5, base=0.1, cap=0.5, cleanup=lambda: cleaned.append(1))
    assert result >= 2 and len(cleaned) == result - 1
    holder.close()


@pytest.mark.postgres
def test_job_transaction_retries_a_postgres_lock_timeout_then_commits(app):
    """A real lock_timeout (55P03) while another connection holds a table lock; the job's
    transaction is rolled back and run again once the lock is gone."""
    if not db.engine.url.drivername.startswith("postgresql"):
        pytest.skip("PostgreSQL lock timeouts")
    other = db.engine.connect()
    held = other.begin()
    other.execute(text("LOCK TABLE feature_flag IN ACCESS EXCLUSIVE MODE"))
    attempts = []

    def work() -> int:
        attempts.append(1)
        db.session.execute(text("SET LOCAL lock_timeout = '100ms'"))
        db.session.add(FeatureFlag(key="probe_now", enabled=False, note="retried"))
        db.session.commit()
        return len(attempts)

    threading.Timer(0.3, held.rollback).start()
    try:
        assert retry.transaction("test job", work) >= 2
    finally:
        other.close()
    assert db.session.scalar(select(FeatureFlag.note)) == "retried"


def test_a_real_error_is_not_retried(app):
    attempts = []

    def work():
        attempts.append(1)
        db.session.add_all([FeatureFlag(key="same"), FeatureFlag(key="same")])
        db.session.commit()

    with pytest.raises(IntegrityError):
        retry.transaction("test job", work)
    db.session.rollback()
    assert attempts == [1]
