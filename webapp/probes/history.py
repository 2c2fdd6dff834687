"""Probe history for charts: day-by-day outcomes (raw results, then daily roll-ups once the
raw rows are gone) and latency over time. Read-only."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import case, func, literal, select, union_all

from webapp.charts import Day
from webapp.extensions import db
from webapp.models import ProbeDailyRollup, ProbeResult, utcnow
from webapp.probes.runs import day_of

SEVERITY = {"pass": 0, "warn": 1, "fail": 2, "error": 3}


def daily(service_id: int, kind: str, days: int = 30, now: datetime | None = None) -> list[Day]:
    """One Day per calendar day (UTC) of the last `days`, oldest first, with its worst outcome.
    One query, counted per day in SQL: the rows read do not grow with the probe interval."""
    now = now or utcnow()
    first = (now - timedelta(days=days - 1)).date()
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    day = day_of(ProbeResult.started_at)
    raw = (select(day.label("day"), func.count().label("runs"),
                  func.sum(case((ProbeResult.outcome == "pass", 1), else_=0)).label("passes"),
                  func.max(case(*((ProbeResult.outcome == o, r) for o, r in SEVERITY.items()), else_=0)).label("worst"))
           .where(ProbeResult.service_id == service_id, ProbeResult.kind == kind, ProbeResult.started_at >= since)
           .group_by(day))
    rollup = ProbeDailyRollup
    rolled = (select(rollup.day, rollup.runs, rollup.passes,
                     case((rollup.errors > 0, 3), (rollup.fails > 0, 2), (rollup.warns > 0, 1), (rollup.runs > 0, 0),
                          else_=literal(-1)))
              .where(rollup.service_id == service_id, rollup.kind == kind, rollup.day >= first))
    tally: dict[date, list[int]] = {}  # runs, passes, worst; a day may have both raw rows and a roll-up
    for on, runs, passes, worst in db.session.execute(union_all(raw, rolled)):
        totals = tally.setdefault(on if isinstance(on, date) else date.fromisoformat(on), [0, 0, -1])
        totals[0] += runs
        totals[1] += passes or 0
        totals[2] = max(totals[2], worst)
    names = {v: k for k, v in SEVERITY.items()}
    found = [(first + timedelta(days=n), tally.get(first + timedelta(days=n), (0, 0, -1))) for n in range(days)]
    return [Day(on, runs, passes, names.get(worst)) for on, (runs, passes, worst) in found]


def latency(service_id: int, kind: str, since: datetime) -> list[tuple[datetime, float | None]]:
    """(when, latency in ms) of each result since a moment; an error leaves a gap."""
    return [(started_at, None if outcome == "error" else latency_ms)
            for started_at, outcome, latency_ms in db.session.execute(
                select(ProbeResult.started_at, ProbeResult.outcome, ProbeResult.latency_ms)
                .where(ProbeResult.service_id == service_id, ProbeResult.kind == kind,
                       ProbeResult.started_at >= since).order_by(ProbeResult.started_at))]
