"""Expiring locks for background jobs, in the database every process and host shares.

Huey's `lock_task` never expires: a worker killed mid-sweep kept the sweep lock forever and
probing stopped for good. A `JobLock` row instead carries `expires_at`; the holder renews it
while working and deletes it when done. A lock whose holder died is taken over once it
expires, or at once when the holder was a process on this host that no longer exists.

It works the same with the SQLite and the Redis queue, and across hosts, because it lives
in the application database. Each call runs in its own short transaction on its own
connection, never in the caller's session.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from webapp.extensions import db
from webapp.models import JobLock, utcnow

log = logging.getLogger("webapp.probes")
HOST = socket.gethostname()[:100]


class Lease:
    """A held lock: `renew()` pushes its expiry out; `lost` says someone took it over."""

    def __init__(self, name: str, holder: str, ttl: timedelta):
        self.name, self.holder, self.ttl = name, holder, ttl
        self.lost = False

    def renew(self) -> bool:
        with db.engine.begin() as connection:
            renewed = connection.execute(
                update(JobLock).where(JobLock.name == self.name, JobLock.holder == self.holder)
                .values(expires_at=utcnow() + self.ttl)).rowcount
        self.lost = renewed == 0
        return not self.lost

    def release(self) -> None:
        with db.engine.begin() as connection:
            connection.execute(delete(JobLock).where(JobLock.name == self.name, JobLock.holder == self.holder))


def _holder_is_dead(holder: str) -> bool:
    """True when the holder was a process on this host that is gone (killed worker)."""
    host, _, rest = holder.rpartition("@")
    pid = rest.split(":", 1)[0]
    if host != HOST or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire(name: str, ttl: timedelta) -> Lease | None:
    """Take the lock `name` for `ttl`, or None if a live holder has it."""
    now = utcnow()
    with db.engine.begin() as connection:
        row = connection.execute(select(JobLock.holder, JobLock.expires_at).where(JobLock.name == name)).first()
        if row is not None and (row.expires_at <= now or _holder_is_dead(row.holder)):
            log.warning("job lock %s: taking over from %s (expired or dead)", name, row.holder)
            connection.execute(delete(JobLock).where(JobLock.name == name, JobLock.holder == row.holder))
    holder = f"{HOST}@{os.getpid()}:{secrets.token_hex(4)}"
    try:
        with db.engine.begin() as connection:
            connection.execute(insert(JobLock).values(name=name, holder=holder, acquired_at=now,
                                                      expires_at=now + ttl))
    except IntegrityError:
        return None
    return Lease(name, holder, ttl)


@contextmanager
def held(name: str, ttl: timedelta) -> Iterator[Lease | None]:
    """`with held("x", ttl) as lease:` — lease is None when another live holder has it."""
    lease = acquire(name, ttl)
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()
