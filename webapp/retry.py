"""Retries with jittered exponential backoff, only where doing the same thing again is safe.

- Queueing a job (Redis): retried on a connection failure (refused, reset, Redis still
  loading), never on a timeout, whose LPUSH may have landed; a job queued twice is harmless
  anyway (complete_run_task skips finished runs). At most 3 attempts within 1 s, so a request
  never stalls on it; then webapp/queue_health.py's "jobs delayed" takes over.
- A job's database transaction: retried after a rollback on transient conflicts only
  (PostgreSQL serialization failure 40001, deadlock 40P01, lock timeout 55P03; SQLite
  "database is locked"). At most 4 attempts within 10 s.
- Probe fetches are not retried: a failed health check is the result being measured, and a
  retry would hide a flapping service (and eat the probe's deadline).

Full jitter (a random wait up to the exponential bound) keeps many workers that failed
together from retrying together. Every retry is logged and counted in
preflight_retries_total{operation}.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import Counter
from redis.exceptions import ConnectionError as RedisConnectionError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

log = logging.getLogger("webapp.retry")
RETRIES = Counter("preflight_retries", "Retries after a transient failure, by operation", ["operation"])
T = TypeVar("T")

TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03"})


def transient_database_error(exc: BaseException) -> bool:
    """A conflict that may well not happen again: retry the whole transaction."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, sqlite3.OperationalError):
        return "database is locked" in str(orig) or "database table is locked" in str(orig)
    return getattr(orig, "sqlstate", None) in TRANSIENT_SQLSTATES


def _queue_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, RedisConnectionError)


def _logger(operation: str, cleanup: Callable[[], None] | None):
    def before_sleep(state: RetryCallState) -> None:
        if cleanup is not None:
            cleanup()
        RETRIES.labels(operation).inc()
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s failed (%s), attempt %d; retrying in %.2f s", operation, type(exc).__name__,
                    state.attempt_number, state.next_action.sleep if state.next_action else 0.0,
                    extra={"event": "retry"})
    return before_sleep


def call(operation: str, fn: Callable[[], T], *, retry_on: Callable[[BaseException], bool],
         attempts: int, within_seconds: float, base: float, cap: float,
         cleanup: Callable[[], None] | None = None) -> T:
    """fn(), retried on exceptions `retry_on` accepts: full-jitter exponential waits (up to
    base * 2**n, at most `cap`), at most `attempts` tries and `within_seconds`; the last error
    is raised as it was."""
    retrying = Retrying(
        retry=retry_if_exception(retry_on),
        wait=wait_random_exponential(multiplier=base, max=cap),
        stop=stop_after_attempt(attempts) | stop_after_delay(within_seconds),
        before_sleep=_logger(operation, cleanup),
        reraise=True,
    )
    return retrying(fn)


def enqueue(task, *args, **kwargs):
    """Queue a Huey task, retrying a Redis connection failure (see the module docstring)."""
    return call(f"enqueue {getattr(task, 'name', task)}", lambda: task(*args, **kwargs),
                retry_on=_queue_connection_error, attempts=3, within_seconds=1.0, base=0.05, cap=0.4)


def transaction(operation: str, fn: Callable[[], T]) -> T:
    """Run a job's unit of work (which commits); on a transient conflict roll back and rerun it."""
    from webapp.extensions import db

    return call(operation, fn, retry_on=transient_database_error, attempts=4, within_seconds=10.0,
                base=0.1, cap=2.0, cleanup=db.session.rollback)
