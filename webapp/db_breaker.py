"""A circuit breaker in front of the database, per process.

When the database keeps failing (DB_BREAKER_FAILURES "cannot talk to the database" errors
within 30 s), each request would still spend up to the connect or statement timeout on it
and add to the pile-up on a database that is struggling. So the breaker opens: for
DB_BREAKER_COOLDOWN_SECONDS every request that needs the database gets the clear 503 page at
once (API: a problem, readiness: 503) without touching it. Then it is half-open: the next
request probes the database once, on the bounded readiness connection (webapp/views/ops.py);
if that answers the breaker closes and traffic flows, else it stays open for another
cool-down. Requests that arrive while the probe runs still fail fast.

/healthz (liveness), /healthz/deep and /metrics bypass it: they measure the database with
their own bounded checks. State changes are logged and exported as
preflight_database_breaker_open and preflight_database_breaker_opened_total.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from prometheus_client import Counter, Gauge

log = logging.getLogger("webapp.database")
WINDOW_SECONDS = 30.0
BYPASS = frozenset({"ops.health", "ops.deep_health", "ops.metrics", "static"})

OPEN = Gauge("preflight_database_breaker_open",
             "1 while a process's database circuit breaker is open or half-open (failing fast)",
             multiprocess_mode="livemax")
OPENED = Counter("preflight_database_breaker_opened", "Times a database circuit breaker opened")

CLOSED, OPEN_, HALF_OPEN = "closed", "open", "half_open"
GO, REFUSE, PROBE = "go", "refuse", "probe"


class Breaker:
    def __init__(self, failures: int, cooldown_seconds: float, clock=time.monotonic) -> None:
        self.threshold, self.cooldown, self.clock = failures, cooldown_seconds, clock
        self.state = CLOSED
        self.opened_at = 0.0
        self.recent: deque[float] = deque()
        self.lock = threading.Lock()

    def admit(self) -> str:
        """GO: use the database. REFUSE: fail fast. PROBE: this caller checks the database
        first, then reports with success() or failure()."""
        with self.lock:
            if self.state == CLOSED:
                return GO
            if self.state == HALF_OPEN or self.clock() - self.opened_at < self.cooldown:
                return REFUSE
            self.state = HALF_OPEN
        log.info("database circuit breaker half-open: probing the database")
        return PROBE

    def retry_after(self) -> int:
        return max(1, round(self.cooldown - (self.clock() - self.opened_at)))

    def failure(self) -> None:
        with self.lock:
            now = self.clock()
            if self.state == HALF_OPEN:
                self.state, self.opened_at = OPEN_, now
                log.error("database circuit breaker stays open: the probe failed; next probe in %s s",
                          self.cooldown, extra={"event": "db_breaker.open"})
                return
            if self.state == OPEN_:
                return
            self.recent.append(now)
            while self.recent and now - self.recent[0] > WINDOW_SECONDS:
                self.recent.popleft()
            if len(self.recent) < self.threshold:
                return
            self.state, self.opened_at = OPEN_, now
            self.recent.clear()
        OPEN.set(1)
        OPENED.inc()
        log.error("database circuit breaker opened after %d failures in %.0f s: failing fast for %s s",
                  self.threshold, WINDOW_SECONDS, self.cooldown, extra={"event": "db_breaker.open"})

    def success(self) -> None:
        with self.lock:
            if self.state == CLOSED:
                return
            self.state = CLOSED
            self.recent.clear()
        OPEN.set(0)
        log.warning("database circuit breaker closed: the database answers again",
                    extra={"event": "db_breaker.closed"})


def of(app) -> Breaker:
    breaker = app.extensions.get("preflight_db_breaker")
    if breaker is None:
        breaker = app.extensions["preflight_db_breaker"] = Breaker(
            app.config.get("DB_BREAKER_FAILURES", 5), app.config.get("DB_BREAKER_COOLDOWN_SECONDS", 10))
    return breaker


class BreakerOpen(Exception):
    """Raised before a request touches the database while the breaker is open."""
