"""Runbooks: a markdown runbook per service with every revision kept, readable diffs, review
stamps, or a link to an external runbook. Flush, never commit."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from webapp import audit
from webapp.extensions import db
from webapp.models import RunbookRevision, Service, User, utcnow
from webapp.presentation import render_markdown

MAX_RUNBOOK_CHARS = 50_000  # rendering is linear, ~25 µs a character at worst: ~1 s
REVIEW_EVERY_DAYS = 180  # a runbook not reviewed for this long needs attention


class RunbookError(ValueError):
    """A rule about runbooks was broken; the message is fit to show the user."""


class RunbookConflict(RunbookError):
    """Someone saved a newer revision since the editor was opened."""

    def __init__(self, current: RunbookRevision):
        super().__init__(f"{current.author.name} saved a newer revision at "
                         f"{current.created_at:%Y-%m-%d %H:%M} UTC while you were editing. "
                         "Your text is kept below; compare it with theirs and save again.")
        self.current = current


def current(service: Service) -> RunbookRevision | None:
    """The newest revision of the service's runbook, if any was written."""
    return db.session.scalar(select(RunbookRevision).where(RunbookRevision.service_id == service.id)
                             .order_by(RunbookRevision.created_at.desc(), RunbookRevision.id.desc())
                             .limit(1))


def revisions(service: Service) -> list[RunbookRevision]:
    """Every revision, newest first."""
    return list(db.session.scalars(
        select(RunbookRevision).where(RunbookRevision.service_id == service.id)
        .order_by(RunbookRevision.created_at.desc(), RunbookRevision.id.desc())))


def save_revision(service: Service, body: str, author: User, *,
                  based_on_id: int | None) -> RunbookRevision | None:
    """Keep `body` as a new revision. `based_on_id` is the revision the editor was opened on
    (None for a first runbook); a newer one saved meanwhile raises RunbookConflict.
    Returns None when the text did not change (no empty revisions in the history)."""
    body = (body or "").replace("\r\n", "\n").strip()
    if len(body) > MAX_RUNBOOK_CHARS:
        raise RunbookError(f"The runbook is too long ({len(body):,} characters; "
                           f"at most {MAX_RUNBOOK_CHARS:,}).")
    latest = current(service)
    if latest is not None and latest.id != based_on_id:
        raise RunbookConflict(latest)
    if latest is None and based_on_id is not None:
        raise RunbookError("The revision you edited no longer exists.")
    if not body and latest is None:
        raise RunbookError("Write something first: the runbook is empty.")
    if latest is not None and latest.body == body:
        return None
    # Rendered once here, not on every view: pathological markdown costs its author, not readers.
    revision = RunbookRevision(service_id=service.id, body=body, body_html=str(render_markdown(body)),
                               author_id=author.id)
    db.session.add(revision)
    _recheck_soon(service)
    db.session.flush()
    audit.record(author, "runbook.edit", revision,
                 after={"revision": revision.id, "chars": len(body)},
                 service_id=service.id, team_id=service.team_id)
    return revision


def mark_reviewed(service: Service, reviewer: User, now: datetime | None = None) -> RunbookRevision:
    """Stamp the current revision as reviewed: someone read it and it is still true."""
    latest = current(service)
    if latest is None:
        raise RunbookError("There is no runbook to review yet: write one first.")
    latest.reviewed_at, latest.reviewed_by_id = now or utcnow(), reviewer.id
    _recheck_soon(service, now)
    db.session.flush()
    audit.record(reviewer, "runbook.review", latest, after={"revision": latest.id},
                 service_id=service.id, team_id=service.team_id)
    return latest


def set_link(service: Service, url: str | None, actor: User) -> None:
    """Point at an external runbook (a wiki page), or clear the link."""
    url = (url or "").strip() or None
    if url == service.runbook_url:
        return
    before = {"runbook_url": service.runbook_url}
    service.runbook_url = url
    _recheck_soon(service)
    db.session.flush()
    audit.record(actor, "runbook.link", service, before=before, after={"runbook_url": url},
                 service_id=service.id, team_id=service.team_id)


def _recheck_soon(service: Service, now: datetime | None = None) -> None:
    """The runbook check is probe-backed: make the service due, so the next minute's sweep
    re-checks it rather than the one a whole probe interval away."""
    now = now or utcnow()
    if service.next_probe_at is None or service.next_probe_at > now:
        service.next_probe_at = now


def review_due(revision: RunbookRevision | None, now: datetime | None = None) -> bool:
    """True when the runbook was never reviewed, or not within REVIEW_EVERY_DAYS."""
    if revision is None:
        return False
    stamp = revision.reviewed_at
    return stamp is None or stamp < (now or utcnow()) - timedelta(days=REVIEW_EVERY_DAYS)


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "add" | "remove" | "same" | "hunk"
    text: str
    old_no: int | None = None
    new_no: int | None = None


def diff(old: RunbookRevision, new: RunbookRevision, context: int = 3) -> list[DiffLine]:
    """A line diff of two revisions, as hunks with line numbers (unified-diff style)."""
    a, b = old.body.splitlines(), new.body.splitlines()
    lines: list[DiffLine] = []
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for group in matcher.get_grouped_opcodes(context):
        first, last = group[0], group[-1]
        lines.append(DiffLine("hunk", f"@@ lines {first[1] + 1}–{last[2]} → {first[3] + 1}–{last[4]} @@"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines.extend(DiffLine("same", a[i], i + 1, j1 + (i - i1) + 1) for i in range(i1, i2))
                continue
            if tag in ("replace", "delete"):
                lines.extend(DiffLine("remove", a[i], i + 1, None) for i in range(i1, i2))
            if tag in ("replace", "insert"):
                lines.extend(DiffLine("add", b[j], None, j + 1) for j in range(j1, j2))
    return lines


def presence(service: Service, revision: RunbookRevision | None, link_outcome: str | None,
             now: datetime | None = None) -> tuple[str, str]:
    """The `runbook_present` check: (outcome, explanation) from Preflight's own records.

    A written runbook reviewed within REVIEW_EVERY_DAYS passes; written but never (or long
    ago) reviewed warns; an external link passes when the probe fetcher last reached it.
    """
    if revision is not None and revision.body.strip():
        if not review_due(revision, now):
            return "pass", (f"The runbook was reviewed on {revision.reviewed_at:%Y-%m-%d}.")
        if revision.reviewed_at is None:
            return "warn", "A runbook is written in Preflight but nobody has marked it reviewed yet."
        return "warn", (f"The runbook was last reviewed on {revision.reviewed_at:%Y-%m-%d}, more "
                        f"than {REVIEW_EVERY_DAYS} days ago: review it.")
    if service.runbook_url:
        if link_outcome == "pass":
            return "pass", "The external runbook link answers."
        if link_outcome is None:
            return "warn", "An external runbook is linked; it has not been checked yet."
        return "fail", "The external runbook link does not answer: fix the link or the page."
    return "fail", "No runbook: write one in Preflight or link the team's runbook."
