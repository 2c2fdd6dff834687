"""Review and sign-off (DESIGN.md §3b): who must sign, four eyes, decisions, conditions, and
the frozen snapshot a signed-off assessment leaves behind. Flush, never commit."""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import Integer, Select, and_, bindparam, false, func, or_, select
from sqlalchemy.orm import joinedload

from webapp import assessments, audit, catalog
from webapp.extensions import db
from webapp.models import (
    Assessment,
    ChecklistVersion,
    Condition,
    Membership,
    ProbeResult,
    Report,
    Service,
    SignOff,
    User,
    utcnow,
)

SNAPSHOT_FORMAT = "preflight.signoff/1"
DECISIONS = {
    "approve": "Approve",
    "approve_with_conditions": "Approve with conditions",
    "reject": "Reject",
}
MAX_CONDITIONS = 20
MAX_CONDITION_DAYS = 731  # two years
MAX_COMMENT_CHARS = 10_000


class ReviewError(assessments.AssessmentError):
    """A sign-off rule was broken; the message is fit to show the user."""


class CommentError(ReviewError):
    """The decision's comment is missing or too long: the form shows it under the comment."""


@dataclass(frozen=True)
class ConditionInput:
    text: str
    owner: User
    due_on: date


# Roles ---------------------------------------------------------------------------------

def required_roles(assessment: Assessment) -> tuple[str, ...]:
    """The roles that must approve, from the checklist's `signoff:` section and the tier."""
    return assessments.checklist_for(assessment).signoff.roles_for(assessment.service.tier)


def is_owner_of(user: User, service: Service, maintained: set[int] | None = None) -> bool:
    """The "owner" role: the service's owner or backup owner, or a maintainer of its team.
    `maintained` (the user's maintained team ids) saves a query per service in lists."""
    if user.id in (service.owner_id, service.backup_owner_id):
        return True
    if maintained is not None:
        return service.team_id in maintained
    return db.session.scalar(select(Membership.id).where(
        Membership.team_id == service.team_id, Membership.user_id == user.id,
        Membership.role == "maintainer")) is not None


def holds_role(user: User, role: str, service: Service, maintained: set[int] | None = None) -> bool:
    if role == "owner":
        return is_owner_of(user, service, maintained)
    granted = set(user.reviewer_roles or ())
    if role == "reviewer":
        return user.is_reviewer or bool(granted)
    return role in granted


def round_signoffs(assessment: Assessment) -> list[SignOff]:
    """The decisions taken in the current review round."""
    return [s for s in assessment.signoffs if s.review_round == assessment.review_round]


def approvals_by_role(assessment: Assessment) -> dict[str, SignOff | None]:
    given = {s.role: s for s in round_signoffs(assessment) if s.decision != "reject"}
    return {role: given.get(role) for role in required_roles(assessment)}


def why_not(user: User, role: str, assessment: Assessment,
            maintained: set[int] | None = None) -> str | None:
    """Why `user` may not decide for `role` now, or None if they may."""
    if assessment.state != "in_review":
        return "Only an assessment in review can be signed off."
    if assessment.service.lifecycle == "retired":
        return "This service is retired: nothing of it is signed off any more."
    if role not in required_roles(assessment):
        return f"“{role}” is not a sign-off role for tier {assessment.service.tier} services."
    if not holds_role(user, role, assessment.service, maintained):
        return (f"You do not hold the “{role}” role"
                + (" (the service's owner, backup owner or a team maintainer)." if role == "owner"
                   else "; an admin grants reviewer roles on the Users page."))
    if approvals_by_role(assessment).get(role) is not None:
        return f"The “{role}” role has already approved in this round."
    mine = [s for s in round_signoffs(assessment) if s.signer_id == user.id]
    if mine:
        return f"You already decided as “{mine[0].role}”; one person fills one role (four eyes)."
    if role != "owner" and assessment.submitted_by_id == user.id:
        return "You submitted this assessment; someone else must sign the reviewer roles (four eyes)."
    return None


def roles_open_to(user: User, assessment: Assessment, maintained: set[int] | None = None) -> list[str]:
    return [r for r in required_roles(assessment) if why_not(user, r, assessment, maintained) is None]


# Deciding ------------------------------------------------------------------------------

def decide(assessment: Assessment, actor: User, role: str, decision: str, comment: str = "", *,
           conditions: list[ConditionInput] = (), item_comments: dict[str, str] | None = None,
           present: str = "", today: date | None = None) -> SignOff:
    """Record one signer's decision for one role. A reject sends the assessment back to draft;
    the last required approval signs it off (see `sign_off`)."""
    if decision not in DECISIONS:
        raise ReviewError(f"“{decision}” is not a decision.")
    reason = why_not(actor, role, assessment)
    if reason:
        raise ReviewError(reason)
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise CommentError(f"The comment is too long (at most {MAX_COMMENT_CHARS:,} characters).")
    checklist = assessments.checklist_for(assessment)
    item_comments = {k: v.strip() for k, v in (item_comments or {}).items() if v and v.strip()}
    for key in item_comments:
        if checklist.item(key) is None:
            raise ReviewError(f"“{key}” is not an item of this checklist.")
    today = today or utcnow().date()
    if decision == "reject" and not (comment or item_comments):
        raise CommentError("Say why you reject: a comment is required.")
    if decision == "approve_with_conditions":
        if not conditions:
            raise ReviewError("Approve with conditions needs at least one condition.")
        if len(conditions) > MAX_CONDITIONS:
            raise ReviewError(f"At most {MAX_CONDITIONS} conditions.")
        for condition in conditions:
            if not condition.text.strip():
                raise ReviewError("Every condition needs a description.")
            if condition.due_on <= today:
                raise ReviewError("A condition's due date must be in the future.")
            if condition.due_on > today + timedelta(days=MAX_CONDITION_DAYS):
                raise ReviewError("A condition is due within two years: an action item, not a wish.")
    elif conditions:
        raise ReviewError("Conditions go with “approve with conditions” only.")

    signoff = SignOff(assessment=assessment, signer_id=actor.id, role=role, decision=decision,
                      comment=comment, item_comments=item_comments,
                      review_round=assessment.review_round, present=(present or "").strip()[:2000])
    db.session.add(signoff)
    db.session.flush()
    for condition in conditions:
        db.session.add(Condition(signoff=signoff, assessment_id=assessment.id,
                                 service_id=assessment.service_id, text=condition.text.strip(),
                                 owner_id=condition.owner.id, due_on=condition.due_on))
    audit.record(actor, f"signoff.{decision}", signoff,
                 after={"assessment": assessment.id, "role": role, "round": assessment.review_round,
                        "comment": comment, "items": sorted(item_comments),
                        "conditions": [{"text": c.text.strip(), "owner": c.owner.email,
                                        "due_on": c.due_on.isoformat()} for c in conditions],
                        "present": signoff.present},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    if decision == "reject":
        assessment.state, assessment.decided_at = "draft", utcnow()
        audit.record(actor, "assessment.reject", assessment, before={"state": "in_review"},
                     after={"state": "draft"}, service_id=assessment.service_id,
                     team_id=assessment.service.team_id)
    db.session.flush()
    db.session.expire(assessment, ["signoffs"])
    if decision != "reject" and all(approvals_by_role(assessment).values()):
        sign_off(assessment, actor)
    return signoff


def sign_off(assessment: Assessment, actor: User) -> Report:
    """Every required role approved: freeze, snapshot, supersede the previous sign-off, and
    issue the signed report."""
    from webapp import reports

    now = utcnow()
    assessments.refresh_score(assessment, now)
    previous = db.session.scalars(select(Assessment).where(
        Assessment.service_id == assessment.service_id, Assessment.state == "signed_off",
        Assessment.id != assessment.id)).all()
    for old in previous:
        old.state = "superseded"
        audit.record(actor, "assessment.supersede", old, before={"state": "signed_off"},
                     after={"state": "superseded", "by": assessment.id},
                     service_id=old.service_id, team_id=old.service.team_id)
    assessment.state, assessment.decided_at = "signed_off", now
    db.session.flush()
    body = canonical_json(snapshot(assessment))
    report = reports.issue(assessment, body, actor)
    audit.record(actor, "assessment.sign_off", assessment, before={"state": "in_review"},
                 after={"state": "signed_off", "report": report.id, "sha256": report.sha256,
                        "snapshot_sha256": report.snapshot_sha256},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    db.session.flush()
    return report


# Conditions ----------------------------------------------------------------------------

def complete_condition(condition: Condition, actor: User) -> None:
    if condition.done_at is not None:
        raise ReviewError("This condition is already done.")
    condition.done_at, condition.done_by_id = utcnow(), actor.id
    audit.record(actor, "condition.done", condition, after={"text": condition.text},
                 service_id=condition.service_id)
    db.session.flush()


def open_conditions(service: Service) -> list[Condition]:
    """With the people the service page names, so the page's queries do not grow with them."""
    return list(db.session.scalars(select(Condition).where(
        Condition.service_id == service.id, Condition.done_at.is_(None)).order_by(Condition.due_on)
        .options(joinedload(Condition.owner), joinedload(Condition.signoff).joinedload(SignOff.signer))))


def overdue_count(today: date | None = None) -> int:
    today = today or utcnow().date()
    return db.session.scalar(select(func.count(Condition.id)).where(
        Condition.done_at.is_(None), Condition.due_on < today)) or 0


# The review queue ----------------------------------------------------------------------

def queue_for(user: User) -> list[Assessment]:
    """Assessments in review that `user` can still decide on or owns, oldest first."""
    # A fixed number of queries however many wait: it feeds the badge on every page.
    in_review = db.session.scalars(
        select(Assessment).where(Assessment.state == "in_review")
        .options(joinedload(Assessment.service), joinedload(Assessment.signoffs),
                 # The parsed checklist is cached by content hash: the large JSON is read
                 # only on a cache miss, once per version, not once per row.
                 joinedload(Assessment.checklist_version).defer(ChecklistVersion.content))
        .order_by(Assessment.submitted_at)).unique().all()
    maintained = set(db.session.scalars(select(Membership.team_id).where(
        Membership.user_id == user.id, Membership.role == "maintainer")))
    return [a for a in in_review if roles_open_to(user, a, maintained)
            or user.id in (a.service.owner_id, a.service.backup_owner_id)]


def queue_count(user: User) -> int:
    """The navigation badge, on every page: `len(queue_for(user))` counted by the database
    (two queries whatever the number in review), so no page loads the assessments in review
    to apply the four-eyes rules of `why_not` in Python."""
    # The roles each (checklist version, tier) in review needs; the parsed checklist is
    # cached by content hash, so its JSON is read only once per version and process.
    needs = tuple(sorted(
        (version_id, tier, catalog.checklist_by_hash(version_id, content_hash).signoff.roles_for(tier))
        for version_id, content_hash, tier in db.session.execute(_versions_in_review())))
    held = frozenset(role for _, _, roles in needs for role in roles
                     if role != "owner" and holds_role(user, role, None))
    return db.session.scalar(_badge_count(needs, held), {"user_id": user.id}) or 0 if needs else 0


@functools.cache
def _versions_in_review() -> Select:
    """(checklist version id, content hash, service tier) of every assessment in review, as
    columns, not loaded versions; built once per process (it runs on every page)."""
    return (select(ChecklistVersion.id, ChecklistVersion.content_hash, Service.tier)
            .join(Assessment, Assessment.checklist_version_id == ChecklistVersion.id)
            .join(Service, Service.id == Assessment.service_id)
            .where(Assessment.state == "in_review").distinct())


@functools.lru_cache(maxsize=64)
def _badge_count(needs: tuple[tuple[int, int, tuple[str, ...]], ...], held: frozenset[str]):
    """The count for `queue_count`, built once per process for each set of (version, tier,
    roles) in review and of reviewer roles the person holds; the person is a parameter."""
    user_id = bindparam("user_id", type_=Integer)
    needing: dict[str, list] = {}
    for version_id, tier, roles in needs:
        for role in roles:
            needing.setdefault(role, []).append(
                and_(Assessment.checklist_version_id == version_id, Service.tier == tier))
    owns = or_(Service.owner_id == user_id, Service.backup_owner_id == user_id)
    in_round = (SignOff.assessment_id == Assessment.id) & (SignOff.review_round == Assessment.review_round)
    open_roles = []
    for role, where in needing.items():
        if role == "owner":
            holds = or_(owns, Service.team_id.in_(select(Membership.team_id).where(
                Membership.user_id == user_id, Membership.role == "maintainer")))
        elif role in held:  # four eyes: not the person who submitted
            holds = or_(Assessment.submitted_by_id.is_(None), Assessment.submitted_by_id != user_id)
        else:
            continue
        approved = select(SignOff.id).where(in_round, SignOff.role == role, SignOff.decision != "reject")
        open_roles.append(and_(or_(*where), holds, ~approved.exists()))
    decided = select(SignOff.id).where(in_round, SignOff.signer_id == user_id)
    may_decide = and_(~decided.exists(), or_(*open_roles)) if open_roles else false()
    return (select(func.count(Assessment.id)).join(Service, Service.id == Assessment.service_id)
            .where(Assessment.state == "in_review", or_(owns, may_decide)))


# The snapshot --------------------------------------------------------------------------

def canonical_json(data: dict) -> bytes:
    """One byte sequence per meaning: sorted keys, no spaces, UTF-8 (RFC 8785 in spirit)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_json_default).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _person(user: User | None) -> dict | None:
    return {"id": user.id, "name": user.name, "email": user.email} if user else None


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value else None


def link_status(evidence) -> str:
    if evidence.checked_at is None:
        return "unchecked"
    return "ok" if evidence.check_ok else "broken"


def snapshot(assessment: Assessment) -> dict:
    """Everything the sign-off rests on, as plain JSON: answers, evidence with link status,
    probe results, scores, waivers, conditions and signers."""
    service, checklist = assessment.service, assessments.checklist_for(assessment)
    card = assessments.scorecard(assessment)
    answers = assessments.answers_by_key(assessment)
    probe_ids = [a.probe_result_id for a in answers.values() if a.probe_result_id]
    probes = {r.id: r for r in db.session.scalars(
        select(ProbeResult).where(ProbeResult.id.in_(probe_ids)))} if probe_ids else {}
    runbook = service.runbook_revisions[0] if service.runbook_revisions else None
    items = []
    for category in checklist.categories:
        for item in category.items:
            answer = answers.get(item.key)
            probe = probes.get(answer.probe_result_id) if answer and answer.probe_result_id else None
            manual_over_probe = bool(item.probe and answer and answer.source == "manual"
                                     and any(c.source == "probe" for c in answer.changes))
            items.append({
                "key": item.key, "title": item.title, "category": category.key,
                "critical": item.critical, "weight": item.weight, "probe": item.probe,
                "applies": item.applies_to(service.tier),
                "status": answer.status if answer else None,
                "note": answer.note if answer else "",
                "source": answer.source if answer else None,
                "probe_overridden": manual_over_probe,
                "answered_by": _person(answer.answered_by) if answer else None,
                "answered_at": _iso(answer.answered_at) if answer else None,
                "evidence": [{"url": e.url, "title": e.title, "added_at": _iso(e.added_at),
                              "link_status": link_status(e), "checked_at": _iso(e.checked_at),
                              "check_error": e.check_error}
                             for e in (answer.evidence if answer else [])],
                "probe_result": {"kind": probe.kind, "outcome": probe.outcome, "url": probe.url,
                                 "status_code": probe.status_code, "latency_ms": probe.latency_ms,
                                 "explanation": probe.explanation,
                                 "at": _iso(probe.finished_at or probe.started_at)} if probe else None,
                "waivers": [{"state": w.state, "reason": w.reason,
                             "compensating_control": w.compensating_control,
                             "risk_owner": _person(w.risk_owner),
                             "requested_by": _person(w.requested_by),
                             "approved_by": _person(w.approved_by),
                             "expires_on": _iso(w.expires_on), "decided_at": _iso(w.decided_at)}
                            for w in (answer.waivers if answer else [])],
            })
    signoffs = round_signoffs(assessment)
    conditions = [c for s in signoffs for c in s.conditions]
    return {
        "format": SNAPSHOT_FORMAT,
        "assessment": {"id": assessment.id, "state": assessment.state,
                       "created_at": _iso(assessment.created_at),
                       "submitted_at": _iso(assessment.submitted_at),
                       "submitted_by": _person(assessment.submitted_by),
                       "signed_off_at": _iso(assessment.decided_at),
                       "review_round": assessment.review_round},
        "service": {"id": service.id, "name": service.name, "slug": service.slug,
                    "team": service.team.name, "tier": service.tier,
                    "lifecycle": service.lifecycle, "owner": _person(service.owner),
                    "backup_owner": _person(service.backup_owner),
                    "oncall_url": service.oncall_url, "repository_url": service.repository_url,
                    "dashboard_url": service.dashboard_url, "runbook_url": service.runbook_url,
                    "runbook": {"revision": runbook.id, "updated_at": _iso(runbook.created_at)}
                    if runbook else None},
        "checklist": {"slug": checklist.slug, "version": checklist.version,
                      "title": checklist.title, "content_hash": checklist.content_hash},
        "score": {"score": card.score, "verdict": card.verdict,
                  "percent_answered": card.percent_answered,
                  "answered": card.answered, "applicable": card.applicable,
                  "blockers": list(card.blockers), "expired_waivers": list(card.expired_waivers),
                  "categories": {key: {"title": next((c.title for c in checklist.categories
                                                      if c.key == key), key),
                                       "score": c.score, "answered": c.answered,
                                       "applicable": c.applicable}
                                 for key, c in card.categories.items()}},
        "items": items,
        "conditions": [{"text": c.text, "owner": _person(c.owner), "due_on": _iso(c.due_on),
                        "role": c.signoff.role, "done_at": _iso(c.done_at)} for c in conditions],
        "signers": [{"role": s.role, "signer": _person(s.signer), "decision": s.decision,
                     "comment": s.comment, "present": s.present, "at": _iso(s.at)}
                    for s in signoffs],
        "required_roles": list(required_roles(assessment)),
    }


def rejection_comments(assessment: Assessment) -> dict[str, list[SignOff]]:
    """Item key -> the rejects of the latest rejected round that commented on that item."""
    rejects = [s for s in assessment.signoffs if s.decision == "reject"]
    if not rejects:
        return {}
    last_round = max(s.review_round for s in rejects)
    found: dict[str, list[SignOff]] = {}
    for signoff in rejects:
        if signoff.review_round == last_round:
            for key in signoff.item_comments or {}:
                found.setdefault(key, []).append(signoff)
    return found


def latest_rejection(assessment: Assessment) -> list[SignOff]:
    rejects = [s for s in assessment.signoffs if s.decision == "reject"]
    if not rejects or assessment.state != "draft":
        return []
    last_round = max(s.review_round for s in rejects)
    return [s for s in rejects if s.review_round == last_round]


# Reviewer roles ------------------------------------------------------------------------

def grant_roles(user: User, roles: list[str], actor: User) -> None:
    """Replace `user`'s sign-off roles (admins only; the view checks)."""
    before = sorted(user.reviewer_roles or [])
    user.reviewer_roles = sorted(set(roles))
    audit.record(actor, "user.reviewer_roles", user, before={"roles": before},
                 after={"roles": user.reviewer_roles})
    db.session.flush()


# Demo data -----------------------------------------------------------------------------

def seed_signoffs(services: list[Service], reviewers: dict[str, User],
                  today: date | None = None) -> list[Report]:
    """Demo data (`flask demo seed` calls this): sign off the latest assessment of each given
    service when it is a fully answered draft, with its owner and `reviewers` ({"sre": user,
    "security": user, "reviewer": user}); "Ready with conditions" ones get a condition.
    Flushes; returns the reports made. Services without an owner or a draft are skipped."""
    today = today or utcnow().date()
    made = []
    for service in services:
        draft = next((a for a in service.assessments if a.state == "draft"), None)
        if draft is None or service.owner is None or draft.unanswered_count:
            continue
        signers = {role: service.owner if role == "owner" else reviewers.get(role)
                   for role in required_roles(draft)}
        if None in signers.values() or len({u.id for u in signers.values()}) != len(signers):
            continue
        try:
            assessments.submit_for_review(draft, service.owner)
        except assessments.AssessmentError:
            continue  # answers missing after all
        last = list(signers)[-1]
        for role, user in signers.items():
            conditions = []
            if role == last and draft.verdict == "ready_with_conditions":
                conditions = [ConditionInput("Close the partial items before the next review",
                                             service.owner, today + timedelta(days=30))]
            decide(draft, user, role, "approve_with_conditions" if conditions else "approve",
                   "Reviewed in the launch meeting.", conditions=conditions, present="demo")
        made += list(db.session.scalars(select(Report).where(Report.assessment_id == draft.id)))
    return made
