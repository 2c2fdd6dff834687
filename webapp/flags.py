"""Feature flags: run-time kill switches for the risky features, flipped by an admin (page or
`flask flags set`) without a deploy.

The switches live in the database, so every gunicorn worker, every host and the job worker
agree. Each process keeps what it read for FEATURE_FLAG_CACHE_SECONDS (default 5 s): a check
costs one small query at most once per interval and process, never one per service or per
check, and a switch takes effect everywhere within that interval. A flag has a row only once it
was changed; no row means the feature is on.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from flask import abort, current_app
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from webapp import audit
from webapp.extensions import db
from webapp.models import FeatureFlag, User, utcnow

log = logging.getLogger("webapp.flags")


@dataclass(frozen=True)
class Flag:
    key: str
    title: str
    when_off: str  # what people see while it is off


FLAGS = {flag.key: flag for flag in (
    Flag("probe_now", "“Probe now” (web and API)",
         "Starting a probe run by hand is switched off by an admin for now; scheduled probes "
         "still run. Try again later."),
    Flag("scheduled_probes", "Scheduled probes and evidence link checks (worker)",
         "Scheduled probing is switched off by an admin for now."),
    Flag("pdf_export", "Draft PDF exports",
         "Draft PDF exports are switched off by an admin for now (they are rendered on "
         "demand). Stored signed reports still download."),
    Flag("api_writes", "API writes (POST, PUT, PATCH, DELETE under /api/v1)",
         "Changes through the API are switched off by an admin for now; reading still works. "
         "Retry later."),
)}

_cache: dict = {"states": None, "read_at": 0.0}
_lock = threading.Lock()


class FlagError(ValueError):
    """An unknown flag."""


def _states() -> dict[str, bool]:
    ttl = current_app.config.get("FEATURE_FLAG_CACHE_SECONDS", 5)
    now = time.monotonic()
    with _lock:
        if _cache["states"] is not None and now - _cache["read_at"] < ttl:
            return _cache["states"]
    rows = db.session.execute(select(FeatureFlag.key, FeatureFlag.enabled)).all()
    states = dict.fromkeys(FLAGS, True) | {key: enabled for key, enabled in rows if key in FLAGS}
    with _lock:
        _cache.update(states=states, read_at=now)
    return states


def forget() -> None:
    """Drop this process's cached switches (after a change here, and between tests)."""
    with _lock:
        _cache.update(states=None, read_at=0.0)


def enabled(key: str) -> bool:
    if key not in FLAGS:
        raise FlagError(f"unknown feature flag {key!r}")
    return _states()[key]


def require(key: str) -> None:
    """In a view: answer 503 with the flag's message while the feature is off."""
    if not enabled(key):
        abort(503, description=FLAGS[key].when_off)


def listing() -> list[tuple[Flag, FeatureFlag | None]]:
    """Every flag with its row (None: never changed, on). Read fresh, not from the cache."""
    rows = {row.key: row for row in db.session.scalars(
        select(FeatureFlag).options(joinedload(FeatureFlag.changed_by)))}
    return [(flag, rows.get(key)) for key, flag in FLAGS.items()]


def set_flag(key: str, on: bool, actor: User | None, note: str = "") -> bool:
    """Switch a feature on or off; audited. Returns False (and writes nothing) if unchanged."""
    if key not in FLAGS:
        raise FlagError(f"unknown feature flag {key!r}; known: {', '.join(FLAGS)}")
    row = db.session.scalar(select(FeatureFlag).where(FeatureFlag.key == key))
    if (row.enabled if row is not None else True) == on:
        return False
    before = {"enabled": row.enabled if row is not None else True}
    if row is None:
        row = FeatureFlag(key=key)
        db.session.add(row)
    row.enabled, row.note = on, note.strip()[:200]
    row.changed_at = utcnow()
    row.changed_by_id = actor.id if actor is not None and actor.is_authenticated else None
    db.session.flush()
    audit.record(actor, "feature_flag.set", row, before=before,
                 after={"key": key, "enabled": on, "note": row.note})
    forget()
    log.warning("feature flag %s switched %s", key, "on" if on else "off",
                extra={"event": "feature_flag.set"})
    return True
