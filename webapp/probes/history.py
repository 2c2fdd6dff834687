"""Probe history for charts: day-by-day outcomes (raw results, then daily roll-ups once the
raw rows are gone) and latency over time. Read-only."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select

from webapp.charts import Day
from webapp.extensions import db
from webapp.models import ProbeDailyRollup, ProbeResult, utcnow

SEVERITY = {"pass": 0, "warn": 1, "fail": 2, "error": 3}


def daily(service_id: int, kind: str, days: int = 30, now: datetime | None = None) -> list[Day]:
    """One Day per calendar day (UTC) of the last `days`, oldest first, with its worst outcome."""
    now = now or utcnow()
    first = (now - timedelta(days=days - 1)).date()
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    tally: dict[date, list[int]] = defaultdict(lambda: [0, 0, -1])  # runs, passes, worst
    for started_at, outcome in db.session.execute(
            select(ProbeResult.started_at, ProbeResult.outcome)
            .where(ProbeResult.service_id == service_id, ProbeResult.kind == kind, ProbeResult.started_at >= since)):
        day = tally[started_at.astimezone(UTC).date()]
        day[0] += 1
        day[1] += outcome == "pass"
        day[2] = max(day[2], SEVERITY[outcome])
    for rollup in db.session.scalars(select(ProbeDailyRollup).where(
            ProbeDailyRollup.service_id == service_id, ProbeDailyRollup.kind == kind,
            ProbeDailyRollup.day >= first)):
        day = tally[rollup.day]
        day[0] += rollup.runs
        day[1] += rollup.passes
        worst = 3 if rollup.errors else 2 if rollup.fails else 1 if rollup.warns else 0
        day[2] = max(day[2], worst if rollup.runs else -1)
    names = {v: k for k, v in SEVERITY.items()}
    return [Day(first + timedelta(days=n), tally[first + timedelta(days=n)][0],
                tally[first + timedelta(days=n)][1], names.get(tally[first + timedelta(days=n)][2]))
            for n in range(days)]


def latency(service_id: int, kind: str, since: datetime) -> list[tuple[datetime, float | None]]:
    """(when, latency in ms) of each result since a moment; an error leaves a gap."""
    return [(started_at, None if outcome == "error" else latency_ms)
            for started_at, outcome, latency_ms in db.session.execute(
                select(ProbeResult.started_at, ProbeResult.outcome, ProbeResult.latency_ms)
                .where(ProbeResult.service_id == service_id, ProbeResult.kind == kind,
                       ProbeResult.started_at >= since).order_by(ProbeResult.started_at))]
