"""A client-side deadline for PostgreSQL calls: a watchdog that cuts a connection whose
command has been waiting longer than the server's statement timeout allows.

The server's `statement_timeout` stops slow queries, but not a database host that stopped
answering (a hung server, a black-holed network path, a stuck proxy): then the socket never
gets an answer, psycopg waits forever and the gunicorn worker is lost until its timeout
kills it. pool_pre_ping has the same problem, since its `SELECT 1` waits the same way. The
watchdog looks at each connection of this process a few times a second; one that has been
busy past its deadline has its socket shut down, so the waiting call fails at once with a
disconnect error, SQLAlchemy discards the connection and the request gets the "database
unavailable" page.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine

log = logging.getLogger("webapp.database")
POLL_SECONDS = 0.25

_watched: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # pgconn -> [deadline s, busy since]
_lock = threading.Lock()
_thread: threading.Thread | None = None
_thread_pid: int | None = None


def watch(engine: Engine, deadline_seconds: float) -> None:
    """Give every new PostgreSQL connection of `engine` a client-side deadline."""

    @event.listens_for(engine, "connect")
    def _register(dbapi_connection, connection_record) -> None:
        pgconn = getattr(dbapi_connection, "pgconn", None)
        if pgconn is None:  # not psycopg 3 (SQLite): nothing to watch
            return
        with _lock:
            _watched[pgconn] = [deadline_seconds, None]
        _ensure_thread()


def _ensure_thread() -> None:
    """One daemon thread per process (started again in a forked gunicorn worker)."""
    global _thread, _thread_pid
    if _thread is not None and _thread_pid == os.getpid() and _thread.is_alive():
        return
    _thread_pid = os.getpid()
    _thread = threading.Thread(target=_run, name="db-deadline-watchdog", daemon=True)
    _thread.start()


def _run() -> None:
    from psycopg.pq import ConnStatus, TransactionStatus

    while True:
        time.sleep(POLL_SECONDS)
        now = time.monotonic()
        with _lock:
            items = list(_watched.items())
        for pgconn, state in items:
            try:
                if pgconn.status != ConnStatus.OK:
                    continue
                busy = pgconn.transaction_status == TransactionStatus.ACTIVE
            except Exception:  # noqa: BLE001 - a connection closed under us is simply skipped
                continue
            if not busy:
                state[1] = None
            elif state[1] is None:
                state[1] = now
            elif now - state[1] > state[0]:
                state[1] = None
                _cut(pgconn, now)


def _cut(pgconn, now: float) -> None:
    try:
        fd = pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError as exc:
        log.warning("database: could not cut a stuck connection: %s", exc)
        return
    log.error("database: a call waited past its deadline; connection cut (database hung?)")


@contextmanager
def longer(session, seconds: float) -> Iterator[None]:
    """Let a background job's statements in the session's current transaction run up to
    `seconds` (PostgreSQL: `SET LOCAL statement_timeout`, which ends with the transaction,
    and this connection's watchdog deadline until the block ends). Requests keep the short
    deadline; a roll-up deleting 50,000 rows on a busy server may need more than 5 s."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(seconds * 1000)}")
    with _lock:
        state = _watched.get(getattr(connection.connection.driver_connection, "pgconn", None))
    if state is None:
        yield
        return
    before, state[0] = state[0], seconds + 2
    try:
        yield
    finally:
        state[0] = before
