"""A service's timeline: its audit events told as sentences, grouped into kinds people filter
by (answers, probes, owners, runbook, waivers, reviews, the service itself)."""

from __future__ import annotations

from sqlalchemy import DateTime, Select, or_, select, type_coerce

from webapp.extensions import db
from webapp.models import Assessment, AuditEvent, ChecklistVersion

# kind -> (label, action prefixes)
KINDS = {
    "answers": ("Answers and evidence", ("answer.", "evidence.", "assessment.start", "assessment.upgrade")),
    "probes": ("Probes", ("probe.",)),
    "owners": ("Owners", ("service.hand_over",)),
    "runbook": ("Runbook", ("runbook.",)),
    "waivers": ("Waivers", ("waiver.",)),
    "reviews": ("Reviews and sign-off", ("assessment.submit", "assessment.sign", "assessment.reject", "assessment.withdraw",
                                         "signoff.", "review.", "report.", "condition.")),
    "service": ("Service", ("service.create", "service.update", "service.retire")),
}

STATUS = {"met": "met", "partial": "partial", "not_met": "not met", "n_a": "N/A", None: "unanswered"}


def events(service_id: int, kind: str | None = None) -> Select:
    """The service's events, newest first, optionally of one kind."""
    query = select(AuditEvent).where(AuditEvent.service_id == service_id)
    if kind in KINDS:
        query = query.where(or_(*(AuditEvent.action.startswith(prefix, autoescape=True)
                                  for prefix in KINDS[kind][1])))
    return query.order_by(AuditEvent.at.desc(), AuditEvent.id.desc())


def kind_of(event: AuditEvent) -> str:
    for kind, (_label, prefixes) in KINDS.items():
        if event.action.startswith(prefixes):
            return kind
    return "service"


def item_titles(service_id: int) -> dict[str, str]:
    """Item keys to titles in the checklist versions the service was assessed against, so the
    sentences name items as the assessment page does ("Tested restore procedure")."""
    from webapp import catalog

    versions = db.session.scalars(select(ChecklistVersion).where(ChecklistVersion.id.in_(
        select(Assessment.checklist_version_id).where(Assessment.service_id == service_id))))
    return {item.key: item.title for version in versions for item in catalog.checklist_of(version).items}


def _item(data: dict, titles: dict[str, str]) -> str:
    key = str(data.get("item", "an item"))
    return titles.get(key) or key.replace("_", " ")


def describe(event: AuditEvent, titles: dict[str, str] | None = None) -> str:
    """One sentence saying what happened (who and when are shown beside it); `titles` names
    items by their titles (item_titles), else by their keys."""
    after, before = event.after or {}, event.before or {}
    action = event.action
    titles = titles or {}
    if action == "answer.set":
        return f"Answered “{_item(after, titles)}”: {STATUS.get(after.get('status'), after.get('status'))}."
    if action == "evidence.add":
        return f"Added evidence to “{_item(after, titles)}”: {after.get('url', '')}"
    if action == "evidence.remove":
        return f"Removed evidence from “{_item(before, titles)}”: {before.get('url', '')}"
    if action == "assessment.start":
        copied = " (answers copied)" if after.get("copied_from") else ""
        return f"Started an assessment against {after.get('checklist', 'a checklist')} v{after.get('version', '?')}{copied}."
    if action == "assessment.upgrade":
        return f"Moved an assessment from checklist v{before.get('version', '?')} to v{after.get('version', '?')}."
    if action == "assessment.submit":
        return "Submitted an assessment for review."
    if action.startswith("waiver."):
        verb = {"waiver.request": "Requested", "waiver.approved": "Approved", "waiver.declined": "Declined"}
        return f"{verb.get(action, action.split('.', 1)[1].capitalize())} a waiver for “{_item(after, titles)}”."
    if action == "probe.changed":
        return (f"Probe {str(after.get('kind', '?')).replace('_', ' ')} turned "
                f"{after.get('outcome', '?')} (was {before.get('outcome', 'never run')}).")
    if action == "service.hand_over" or (action == "service.update" and ("owner_id" in after or "backup_owner_id" in after)):
        return "Changed the owners."
    if action == "service.create":
        return "Registered the service."
    if action == "service.update":
        return "Edited " + ", ".join(sorted(k.replace("_", " ") for k in after)) + "."
    if action == "service.retire":
        return "Retired the service."
    if action == "runbook.edit":
        return "Edited the runbook."
    if action == "runbook.review":
        return "Marked the runbook reviewed."
    if action == "runbook.link":
        return f"Linked an external runbook: {after.get('runbook_url') or 'removed'}."
    if action.startswith("signoff."):  # webapp/reviews.py
        verb = {"signoff.approve": "Approved", "signoff.approve_with_conditions": "Approved with conditions",
                "signoff.reject": "Rejected"}.get(action, action)
        comment = f": {after['comment']}" if after.get("comment") else ""
        return f"{verb} as {after.get('role', '?')} (review round {after.get('round', '?')}){comment}."
    if action == "assessment.sign_off":
        return f"Signed off an assessment; signed report SHA-256 {str(after.get('sha256', ''))[:16]}…."
    if action == "assessment.supersede":
        return "A newer sign-off superseded an assessment."
    if action == "assessment.reject":
        return "Sent an assessment back to draft."
    if action == "assessment.withdraw":
        return "Withdrew an assessment from review: the service was retired."
    if action == "condition.done":
        return f"Completed the sign-off condition “{after.get('text', '')}”."
    return action.replace(".", ": ").replace("_", " ").capitalize() + "."


def score_series(service_id: int, limit: int = 400) -> list:
    """The service's score over time, across assessments: one series per checklist (a legend
    appears when there is more than one), from the newest `limit` snapshots."""
    return score_series_and_trend(service_id, limit)[0]


def score_series_and_trend(service_id: int, limit: int = 400, trend_points: int = 0) -> tuple[list, list[float]]:
    """`score_series`, and the scores of the newest `trend_points` (≤ `limit`) snapshots,
    oldest first (the sparkline): one query, so the service page saves one."""
    from webapp.charts import Series
    from webapp.extensions import db
    from webapp.models import Assessment, ChecklistVersion, ScoreSnapshot

    # Outer joins: a snapshot without an assessment counts in the trend, as in
    # `dashboard.score_trends`, but belongs to no checklist's series.
    rows = db.session.execute(
        select(ScoreSnapshot.at, ScoreSnapshot.score, ChecklistVersion.title)
        .outerjoin(Assessment, Assessment.id == ScoreSnapshot.assessment_id)
        .outerjoin(ChecklistVersion, ChecklistVersion.id == Assessment.checklist_version_id)
        .where(ScoreSnapshot.service_id == service_id)
        .order_by(ScoreSnapshot.at.desc(), ScoreSnapshot.id.desc()).limit(limit)).all()
    trend = [score for _at, score, _title in reversed(rows[:trend_points])]
    by_title: dict[str, list] = {}
    for at, score, title in reversed(rows):
        if title is not None:
            by_title.setdefault(title, []).append((at, score))
    return [Series(title, points) for title, points in by_title.items()], trend


def team_series(team_id: int, days: int = 180, now=None) -> list:
    """The team's average score per day over `days`: each live service counts with its latest
    score as of that day (a service not yet scored does not count)."""
    from datetime import timedelta

    from webapp.charts import Series
    from webapp.extensions import db
    from webapp.models import ScoreSnapshot, Service, utcnow

    now = now or utcnow()
    since = now - timedelta(days=days)
    services = select(Service.id).where(Service.team_id == team_id, Service.lifecycle != "retired")
    # Only the day is read: the stored value as the driver gives it (UTCDateTime would
    # wrap each of some 3,000 values in a row a second time for the same date).
    at = type_coerce(ScoreSnapshot.at, DateTime(timezone=True))
    rows = db.session.execute(
        select(ScoreSnapshot.service_id, at, ScoreSnapshot.score)
        .where(ScoreSnapshot.service_id.in_(services), ScoreSnapshot.at >= since)
        .order_by(ScoreSnapshot.at, ScoreSnapshot.id)).all()
    if not rows:
        return [Series("Team average", [])]
    latest: dict[int, float] = {}
    points, day = [], rows[0][1].date()
    for service_id, at, score in rows:
        if at.date() != day:
            points.append((day, sum(latest.values()) / len(latest)))
            day = at.date()
        latest[service_id] = score
    points.append((day, sum(latest.values()) / len(latest)))
    return [Series("Team average", points)]
