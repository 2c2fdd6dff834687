"""Whether background jobs can be queued right now, and enqueueing that degrades instead of
failing the request when the queue (Redis) is down or hanging."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from redis.exceptions import RedisError

log = logging.getLogger("webapp.queue")
QUEUE_ERRORS = (RedisError, sqlite3.OperationalError, OSError)
RECHECK_SECONDS = 5.0

_state = {"failed_at": None, "checked_at": 0.0}
_lock = threading.Lock()


def enqueue(task, *args, **kwargs) -> bool:
    """Queue a Huey task (a connection failure is retried briefly: webapp/retry.py); on a
    queue failure log it, remember it and return False."""
    from webapp import retry

    try:
        retry.enqueue(task, *args, **kwargs)
    except QUEUE_ERRORS as exc:
        _mark_failed(exc)
        return False
    return True


def _mark_failed(exc: BaseException) -> None:
    with _lock:
        _state["failed_at"] = time.monotonic()
        _state["checked_at"] = time.monotonic()
    log.error("job queue unavailable, jobs are delayed: %s", type(exc).__name__)


def jobs_delayed() -> bool:
    """True while the queue is unreachable; re-checked at most every few seconds per process,
    so it clears by itself when the queue is back."""
    from webapp.extensions import huey

    now = time.monotonic()
    with _lock:
        fresh = now - _state["checked_at"] < RECHECK_SECONDS
        if fresh or huey.immediate:
            return _state["failed_at"] is not None
        _state["checked_at"] = now
    try:
        conn = getattr(huey.storage, "conn", None)
        if conn is not None and hasattr(conn, "ping"):
            conn.ping()
    except QUEUE_ERRORS as exc:
        _mark_failed(exc)
        return True
    with _lock:
        if _state["failed_at"] is not None:
            log.info("job queue reachable again")
        _state["failed_at"] = None
    return False
