"""Assessments: start, answer, evidence, waivers, upgrade, compare. Flush, never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from webapp import audit, catalog, scoring
from webapp.checklists import Checklist, Item, carry_over_keys, diff_checklists
from webapp.extensions import db
from webapp.models import (
    Answer,
    AnswerChange,
    Assessment,
    ChecklistVersion,
    Evidence,
    ProbeResult,
    ScoreSnapshot,
    Service,
    ServiceCheck,
    User,
    Waiver,
    utcnow,
)
from webapp.presentation import render_note

MAX_NOTE_CHARS = 20_000
MAX_WAIVER_DAYS = 366
RETIRED_READ_ONLY = ("This service is retired: its assessments are read-only and are not reviewed. "
                     "Change its lifecycle back to assess it again.")


class AssessmentError(ValueError):
    """A rule about assessments was broken; the message is fit to show the user."""


class SubmitBlocked(AssessmentError):
    """Submit refused because applicable items are unanswered; ``items`` lists them."""

    def __init__(self, items: list[Item]):
        self.items = items
        super().__init__(f"{len(items)} applicable item{'' if len(items) == 1 else 's'} "
                         "still unanswered; answer every one before submitting.")


class WaiverExpiryRefused(AssessmentError):
    """A waiver's expiry date is refused (past, or more than a year out)."""


class AnswerConflict(AssessmentError):
    """Someone else saved this item since the form was loaded."""

    def __init__(self, answer: Answer, actor: User | None = None):
        if actor is not None and answer.answered_by_id == actor.id:
            message = ("You changed this item in another window or tab since this one loaded. "
                       "That answer is shown; this one was not saved.")
        else:
            who = answer.answered_by.name if answer.answered_by else "Someone"
            message = f"{who} changed this item while you were editing it. Their answer is shown; yours was not saved."
        super().__init__(message)
        self.answer = answer


def checklist_for(assessment: Assessment) -> Checklist:
    return catalog.checklist_of(assessment.checklist_version)


def answers_by_key(assessment: Assessment) -> dict[str, Answer]:
    return {answer.item_key: answer for answer in assessment.answers}


# Reading --------------------------------------------------------------------------------

def _answer_state(answer: Answer | None) -> scoring.AnswerState:
    if answer is None:
        return scoring.UNANSWERED
    approved = [w for w in answer.waivers if w.state == "approved"]
    expires = max((w.expires_at for w in approved), default=None)
    return scoring.AnswerState(status=answer.status, waiver_expires_at=expires)


def scorecard(assessment: Assessment, now: datetime | None = None) -> scoring.ScoreCard:
    checklist = checklist_for(assessment)
    states = {key: _answer_state(answer) for key, answer in answers_by_key(assessment).items()}
    return scoring.score_assessment(
        checklist.items, states, tier=assessment.service.tier,
        ready_threshold=checklist.thresholds.ready,
        conditions_threshold=checklist.thresholds.conditions, now=now)


# Starting ------------------------------------------------------------------------------

class OpenDraftExists(AssessmentError):
    """The service already has an open draft of this checklist; continue it instead."""

    def __init__(self, draft: Assessment):
        super().__init__(f"{draft.service.name} already has an open draft of this checklist "
                         f"(started {draft.created_at:%Y-%m-%d}). Continue it instead of starting another.")
        self.draft = draft


COPY_SOURCE_STATES = ("signed_off", "in_review")


def open_draft(service: Service, slug: str) -> Assessment | None:
    """The service's open draft of a checklist (any version of it), if there is one."""
    return db.session.scalar(
        select(Assessment).join(ChecklistVersion)
        .where(Assessment.service_id == service.id, Assessment.state == "draft", ChecklistVersion.slug == slug)
        .order_by(Assessment.created_at.desc(), Assessment.id.desc()).limit(1))


def copy_sources(service: Service) -> list[Assessment]:
    """Assessments a re-assessment may copy from: signed off or in review, newest first.
    An empty draft is never offered: it has nothing worth carrying over."""
    return list(db.session.scalars(
        select(Assessment).where(Assessment.service_id == service.id,
                                 Assessment.state.in_(COPY_SOURCE_STATES))
        .order_by(Assessment.created_at.desc(), Assessment.id.desc())))


def start_assessment(service: Service, version: ChecklistVersion, actor: User,
                     copy_from: Assessment | None = None) -> Assessment:
    """A new draft against `version`; with `copy_from`, its answers carry over by item key,
    with their evidence and their approved waivers that have not expired.

    Probe-backed items then start from what the probes already know (the latest result of
    each check kind), except where a copied answer is a person's own. At most one draft of a
    checklist is open per service: OpenDraftExists carries the one to continue.
    """
    if service.lifecycle == "retired":
        raise AssessmentError("A retired service cannot be assessed.")
    draft = open_draft(service, version.slug)
    if draft is not None:
        raise OpenDraftExists(draft)
    if copy_from is not None and copy_from.service_id != service.id:
        raise AssessmentError("Answers can only be copied from an assessment of the same service.")
    assessment = Assessment(service=service, checklist_version=version, created_by_id=actor.id,
                            copied_from_id=copy_from.id if copy_from else None)
    db.session.add(assessment)
    db.session.flush()
    if copy_from is not None:
        _copy_answers(copy_from, assessment, carry_over_keys(checklist_for(copy_from),
                                                             catalog.checklist_of(version)), actor)
    _answer_from_probes(assessment)
    audit.record(actor, "assessment.start", assessment,
                 after={"checklist": version.slug, "version": version.version,
                        "copied_from": copy_from.id if copy_from else None},
                 service_id=service.id, team_id=service.team_id)
    refresh_score(assessment)
    return assessment


def _copy_answers(source: Assessment, target: Assessment, keys: dict[str, str], actor: User) -> None:
    old = answers_by_key(source)
    now = utcnow()
    for new_key, old_key in keys.items():
        previous = old.get(old_key)
        if previous is None or previous.status is None:
            continue
        # Older probe answers carry the probe's explanation as their note: not worth copying.
        note = previous.note if previous.source == "manual" else ""
        answer = Answer(assessment_id=target.id, item_key=new_key, status=previous.status,
                        note=note, source=previous.source,
                        answered_by_id=previous.answered_by_id, answered_at=previous.answered_at)
        db.session.add(answer)
        for item in previous.evidence:
            answer.evidence.append(Evidence(url=item.url, title=item.title, added_by_id=item.added_by_id,
                                            checked_at=item.checked_at, check_ok=item.check_ok,
                                            check_error=item.check_error))
        # An approved waiver is a risk accepted until its expiry, not for one assessment:
        # re-assessing must not turn a waived gap back into a blocker.
        for waiver in previous.waivers:
            if waiver.state == "approved" and waiver.is_live(now):
                answer.waivers.append(Waiver(
                    reason=waiver.reason, compensating_control=waiver.compensating_control,
                    risk_owner_id=waiver.risk_owner_id, expires_on=waiver.expires_on, state="approved",
                    requested_by_id=waiver.requested_by_id, requested_at=waiver.requested_at,
                    approved_by_id=waiver.approved_by_id, decided_at=waiver.decided_at))
        answer.changes.append(AnswerChange(from_status=None, to_status=previous.status, note=note,
                                           source="manual", changed_by_id=actor.id))
    db.session.flush()
    db.session.expire(target, ["answers"])


def latest_checks(service: Service) -> dict[str, tuple[ServiceCheck, ProbeResult | None]]:
    """The latest probe outcome of each check kind of a service, with its result row: one query."""
    rows = db.session.execute(
        select(ServiceCheck, ProbeResult).outerjoin(ProbeResult, ServiceCheck.result_id == ProbeResult.id)
        .where(ServiceCheck.service_id == service.id))
    return {check.kind: (check, result) for check, result in rows}


def _probe_answer_statuses() -> dict[str, str]:
    from webapp.probes.runs import ANSWER_FOR_OUTCOME  # probes.runs imports this module

    return ANSWER_FOR_OUTCOME


def _answer_from_probes(assessment: Assessment) -> None:
    """Answer probe-backed items from the latest result of their check kind (status only,
    source "probe"); a person's own copied answer stays."""
    items = [item for item in checklist_for(assessment).items
             if item.probe and item.applies_to(assessment.service.tier)]
    if not items:
        return
    checks = {kind: check for kind, (check, _) in latest_checks(assessment.service).items()}
    statuses = _probe_answer_statuses()
    existing = answers_by_key(assessment)
    for item in items:
        check = checks.get(item.probe)
        answer = existing.get(item.key)
        if check is None or (answer is not None and answer.source == "manual" and answer.status is not None):
            continue
        status = statuses[check.outcome]
        if answer is None:
            answer = Answer(item_key=item.key, status=None, note="", source="probe")
            assessment.answers.append(answer)
        if answer.status != status:
            answer.changes.append(AnswerChange(from_status=answer.status, to_status=status, note="",
                                               source="probe"))
        answer.status, answer.note, answer.source = status, "", "probe"
        answer.probe_result_id, answer.answered_at, answer.answered_by_id = check.result_id, utcnow(), None
    db.session.flush()


def probe_status(assessment: Assessment, item: Item, answer: Answer | None = None) -> str | None:
    """The status the probe's latest result gives a probe-backed item (None: no result yet)."""
    if not item.probe:
        return None
    outcome = db.session.scalar(select(ServiceCheck.outcome).where(
        ServiceCheck.service_id == assessment.service_id, ServiceCheck.kind == item.probe))
    if outcome is not None:
        return _probe_answer_statuses()[outcome]
    if answer is not None and answer.source == "probe":
        return answer.status
    return None


# Answering -----------------------------------------------------------------------------

def _require_open(assessment: Assessment) -> None:
    """Answers, evidence and waiver requests change only in a draft (see is_editable)."""
    if assessment.state == "in_review":
        raise AssessmentError("This assessment is in review: answers are read-only until the "
                              "reviewers decide (a reject returns it to draft).")
    if assessment.state == "draft" and assessment.service.lifecycle == "retired":
        raise AssessmentError(RETIRED_READ_ONLY)
    if not assessment.is_editable:
        raise AssessmentError(f"This assessment is {assessment.state.replace('_', ' ')}; "
                              "it can no longer be changed. Start a re-assessment instead.")


def _item(assessment: Assessment, item_key: str) -> Item:
    item = checklist_for(assessment).item(item_key)
    if item is None:
        raise AssessmentError(f"“{item_key}” is not an item of this checklist.")
    if not item.applies_to(assessment.service.tier):
        raise AssessmentError(f"“{item.title}” does not apply to tier {assessment.service.tier} services.")
    return item


def answer_for(assessment: Assessment, item_key: str) -> Answer | None:
    """The live answer to an item (archived answers of removed items are not live)."""
    return db.session.scalar(select(Answer).where(Answer.assessment_id == assessment.id,
                                                  Answer.item_key == item_key, Answer.archived_at.is_(None)))


def _get_or_create_answer(assessment: Assessment, item_key: str) -> Answer:
    """The item's answer row, made if missing. Two requests may make it at the same moment:
    the insert is an upsert (ON CONFLICT DO NOTHING, which on PostgreSQL waits for the other
    transaction), then the row is read back, whoever inserted it."""
    answer = answer_for(assessment, item_key)
    if answer is None:
        dialect = db.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        db.session.execute(insert(Answer).values(
            assessment_id=assessment.id, item_key=item_key, status=None, note="", note_html="",
            source="manual", version=1,
        ).on_conflict_do_nothing(index_elements=["assessment_id", "item_key"],
                                 index_where=Answer.archived_at.is_(None)))  # the live-answer index
        # Scoring reads assessment.answers: have it reload with the new row.
        db.session.expire(assessment, ["answers"])
        answer = db.session.scalar(select(Answer).where(
            Answer.assessment_id == assessment.id, Answer.item_key == item_key, Answer.archived_at.is_(None)
        ).execution_options(populate_existing=True))
    return answer


def record_answer(assessment: Assessment, item_key: str, status: str | None, note: str,
                  author: User, *, expected_version: int | None = None) -> Answer:
    """Set an item's status and note, keeping the change in its history.

    `expected_version` is the answer version the person's form was made from (0 for "no
    answer yet"); if someone saved since, AnswerConflict carries their answer. The check is
    made on the row as it stands once it exists, so of two simultaneous first answers one
    is saved and the other gets the conflict: never an error, never a silent overwrite.
    """
    _require_open(assessment)
    item = _item(assessment, item_key)
    note = (note or "").strip()
    if status is not None and status not in scoring.STATUSES:
        raise AssessmentError(f"“{status}” is not a status; use met, partial, not met or n/a.")
    if len(note) > MAX_NOTE_CHARS:
        raise AssessmentError(f"The note is too long ({len(note):,} characters; at most {MAX_NOTE_CHARS:,}).")
    if status == scoring.N_A and not note:
        raise AssessmentError("Say why this item does not apply: N/A needs a reason in the note.")
    render_note(note)  # rendered (and cached) before any row is locked, stored when assigned
    answer = _get_or_create_answer(assessment, item_key)
    current_version = answer.version if answer.status is not None else 0
    if expected_version is not None and expected_version != current_version:
        raise AnswerConflict(answer, author)
    _require_override_note(assessment, item, answer, status, note)
    if answer.status == status and answer.note == note:
        return answer
    answer.changes.append(AnswerChange(from_status=answer.status, to_status=status, note=note,
                                       source="manual", changed_by_id=author.id))
    answer.status, answer.note, answer.source = status, note, "manual"
    answer.answered_by_id, answer.answered_at = author.id, utcnow()
    assessment.updated_at = utcnow()
    db.session.flush()
    audit.record(author, "answer.set", answer, after={"item": item_key, "status": status},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    refresh_score(assessment)
    return answer


def _require_override_note(assessment: Assessment, item: Item, answer: Answer | None,
                           status: str | None, note: str) -> None:
    """A status that differs from the probe's needs a note of the person's own: text the
    probe wrote into the note (older answers carry it) does not count."""
    probe_says = probe_status(assessment, item, answer)
    if probe_says is None or status is None or status == probe_says:
        return
    own_note = note if not (answer is not None and answer.source == "probe" and note == answer.note) else ""
    if not own_note:
        opening = "This answer came from a probe: the" if answer is not None and answer.source == "probe" else "The"
        raise AssessmentError(
            f"{opening} {item.probe.replace('_', ' ')} probe says “{_label(probe_says)}”. To set "
            f"“{_label(status)}” instead, write in the note why (what the probe cannot see); "
            "an override needs a note of your own.")


def _label(status: str | None) -> str:
    return {"met": "Met", "partial": "Partial", "not_met": "Not met", "n_a": "N/A"}.get(status, "Unanswered")


def record_probe_answer(assessment: Assessment, item_key: str, status: str,
                        probe_result_id: int, *, flush: bool = True) -> Answer | None:
    """Answer a probe-backed item from a probe result; returns the answer only if it changed.

    Writes nothing when the status is unchanged (the latest result of each kind is kept in
    ServiceCheck instead): an UPDATE would bump the answer's version and give a person whose
    page predates the sweep a false conflict. A person's answer (an override) wins over the
    probe, and answers are frozen once the assessment leaves draft. The probe's explanation
    stays on the result; `note` is the person's field and stays empty here.
    """
    if not assessment.is_editable:
        return None
    # The live answers are the `answers` collection: loaded once for all of a sweep's items
    # (the sweep loads it with the assessment), not a query per item.
    answer = answers_by_key(assessment).get(item_key)
    if answer is not None and answer.source == "manual" and answer.status is not None:
        return None
    if answer is not None and answer.status == status:
        return None
    if answer is None:
        answer = Answer(item_key=item_key, status=None, note="", source="probe")
        assessment.answers.append(answer)  # through the collection, so scoring sees it
    # Linked through the change's side: the answer's history is not loaded just to add to it.
    db.session.add(AnswerChange(answer=answer, from_status=answer.status, to_status=status, note="",
                                source="probe"))
    answer.status, answer.note, answer.source = status, "", "probe"
    answer.probe_result_id, answer.answered_at, answer.answered_by_id = probe_result_id, utcnow(), None
    if flush:  # a caller answering several items flushes once, after its reads
        db.session.flush()
    return answer


# Evidence ------------------------------------------------------------------------------

def add_evidence(assessment: Assessment, item_key: str, url: str, title: str, author: User) -> Evidence:
    """Attach a link; the URL must already be validated as http(s) by the caller's form."""
    _require_open(assessment)
    _item(assessment, item_key)
    answer = _get_or_create_answer(assessment, item_key)
    if len(answer.evidence) >= 20:
        raise AssessmentError("An item can have at most 20 evidence links.")
    evidence = Evidence(answer=answer, url=url, title=(title or "").strip() or url[:200],
                        added_by_id=author.id)
    db.session.add(evidence)
    db.session.flush()
    audit.record(author, "evidence.add", evidence, after={"item": item_key, "url": url},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    return evidence


def remove_evidence(evidence: Evidence, actor: User) -> None:
    assessment = evidence.answer.assessment
    _require_open(assessment)
    audit.record(actor, "evidence.remove", evidence,
                 before={"item": evidence.answer.item_key, "url": evidence.url},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    db.session.delete(evidence)
    db.session.flush()


# Waivers -------------------------------------------------------------------------------

def request_waiver(assessment: Assessment, item_key: str, reason: str, compensating_control: str,
                   risk_owner: User, expires_on: date, actor: User, today: date | None = None) -> Waiver:
    _require_open(assessment)
    _item(assessment, item_key)
    answer = answer_for(assessment, item_key)
    if answer is None or answer.status not in (scoring.NOT_MET, scoring.PARTIAL):
        raise AssessmentError("Only an item answered “not met” or “partial” can be waived.")
    today = today or utcnow().date()
    if expires_on <= today:
        raise WaiverExpiryRefused("A waiver's expiry date must be in the future.")
    if expires_on > today + timedelta(days=MAX_WAIVER_DAYS - 1):
        raise WaiverExpiryRefused("A waiver can last at most one year.")
    if not reason.strip() or not compensating_control.strip():
        raise AssessmentError("A waiver needs a reason and a compensating control.")
    if any(w.state == "requested" for w in answer.waivers):
        raise AssessmentError("A waiver for this item is already waiting for a decision.")
    waiver = Waiver(answer=answer, reason=reason.strip(), compensating_control=compensating_control.strip(),
                    risk_owner_id=risk_owner.id, expires_on=expires_on, requested_by_id=actor.id)
    db.session.add(waiver)
    db.session.flush()
    audit.record(actor, "waiver.request", waiver, after={"item": item_key, "expires_on": expires_on.isoformat()},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    return waiver


def decide_waiver(waiver: Waiver, approve: bool, actor: User) -> None:
    """Reviewers decide waivers of drafts and of assessments in review, never their own."""
    if waiver.state != "requested":
        raise AssessmentError(f"This waiver was already {waiver.state}.")
    assessment = waiver.answer.assessment
    if not assessment.is_open:
        raise AssessmentError(f"This assessment is {assessment.state.replace('_', ' ')}; "
                              "its waivers can no longer be decided.")
    if actor.id == waiver.requested_by_id:
        raise AssessmentError("You requested this waiver; someone else must decide it (four eyes).")
    waiver.state = "approved" if approve else "declined"
    waiver.approved_by_id, waiver.decided_at = actor.id, utcnow()
    db.session.flush()
    audit.record(actor, f"waiver.{waiver.state}", waiver, after={"item": waiver.answer.item_key},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    refresh_score(assessment)


# State ---------------------------------------------------------------------------------

def submit_for_review(assessment: Assessment, actor: User) -> None:
    """Send a draft to review; every applicable item must be answered (SubmitBlocked lists
    the ones that are not). Each submit opens a new review round."""
    if assessment.state != "draft":
        raise AssessmentError("Only a draft can be submitted for review.")
    _require_open(assessment)  # a retired service's draft is not reviewed
    answers, tier = answers_by_key(assessment), assessment.service.tier
    missing = [item for item in checklist_for(assessment).items if item.applies_to(tier)
               and (answers.get(item.key) is None or answers[item.key].status is None)]
    if missing:
        raise SubmitBlocked(missing)
    assessment.state, assessment.submitted_at = "in_review", utcnow()
    assessment.submitted_by_id = actor.id
    assessment.review_round = (assessment.review_round or 0) + 1
    audit.record(actor, "assessment.submit", assessment,
                 after={"state": "in_review", "round": assessment.review_round},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    db.session.flush()


def upgrade(assessment: Assessment, version: ChecklistVersion, actor: User):
    """Move an open assessment to a newer checklist version, carrying answers by key.

    Answers to items the new version removed are archived, not deleted: they keep their
    history, evidence and waivers and stay readable (`assessment.archived_answers`), but
    are no longer scored or listed."""
    _require_open(assessment)
    if version.slug != assessment.checklist_version.slug:
        raise AssessmentError("An assessment can only move to a version of the same checklist.")
    if version.id == assessment.checklist_version_id:
        raise AssessmentError("This assessment already uses that version.")
    old, new = checklist_for(assessment), catalog.checklist_of(version)
    keys = carry_over_keys(old, new)
    by_old_key = {old_key: new_key for new_key, old_key in keys.items()}
    archived_at = utcnow()
    for answer in list(assessment.answers):
        new_key = by_old_key.get(answer.item_key)
        if new_key is None:
            answer.archived_at = archived_at
        elif new_key != answer.item_key:
            answer.item_key = new_key
    diff = diff_checklists(old, new)
    before = {"version": assessment.checklist_version.version}
    assessment.checklist_version = version
    db.session.flush()
    db.session.expire(assessment, ["answers"])
    audit.record(actor, "assessment.upgrade", assessment, before=before,
                 after={"version": version.version, "added": list(diff.added),
                        "removed": list(diff.removed), "renamed": diff.renamed},
                 service_id=assessment.service_id, team_id=assessment.service.team_id)
    refresh_score(assessment)
    return diff


def refresh_score(assessment: Assessment, now: datetime | None = None) -> ScoreSnapshot | None:
    """Bring the assessment's stored score, verdict and counts up to date (the read model), and
    write a ScoreSnapshot only when the score, the verdict or a category score moved."""
    card = _store_score(assessment, now)
    # Stored before this read autoflushes them, together with whatever the caller marked
    # (`dashboard.rescore` keeps updated_at by flagging it: a second flush would move it).
    last = db.session.scalar(select(ScoreSnapshot).where(ScoreSnapshot.assessment_id == assessment.id)
                             .order_by(ScoreSnapshot.at.desc(), ScoreSnapshot.id.desc()).limit(1))
    snapshot = _snapshot_if_moved(assessment, card, last)
    db.session.flush()
    return snapshot


def refresh_scores(rescored: list[Assessment], now: datetime | None = None) -> int:
    """`refresh_score` for several assessments in two statements and one flush, whatever their
    number (a probe sweep rescoring many services at once); returns how many snapshots it wrote."""
    if not rescored:
        return 0
    cards = [_store_score(assessment, now) for assessment in rescored]
    newest = func.row_number().over(partition_by=ScoreSnapshot.assessment_id,
                                    order_by=(ScoreSnapshot.at.desc(), ScoreSnapshot.id.desc()))
    ranked = (select(ScoreSnapshot.id, newest.label("rank"))
              .where(ScoreSnapshot.assessment_id.in_([a.id for a in rescored])).subquery())
    last = {snapshot.assessment_id: snapshot for snapshot in db.session.scalars(
        select(ScoreSnapshot).join(ranked, ranked.c.id == ScoreSnapshot.id).where(ranked.c.rank == 1))}
    written = sum(_snapshot_if_moved(assessment, card, last.get(assessment.id)) is not None
                  for assessment, card in zip(rescored, cards, strict=True))
    db.session.flush()
    return written


def _store_score(assessment: Assessment, now: datetime | None) -> scoring.ScoreCard:
    card = scorecard(assessment, now)
    assessment.score, assessment.verdict = card.score, card.verdict
    assessment.answered_pct = card.percent_answered
    assessment.unanswered_count, assessment.blocker_count = len(card.unanswered), len(card.blockers)
    assessment.scored_at = now or utcnow()
    return card


def _snapshot_if_moved(assessment: Assessment, card: scoring.ScoreCard,
                       last: ScoreSnapshot | None) -> ScoreSnapshot | None:
    categories = {k: c.score for k, c in card.categories.items()}
    if last is not None and (last.score, last.verdict, last.categories) == (card.score, card.verdict, categories):
        return None
    snapshot = ScoreSnapshot(service_id=assessment.service_id, assessment_id=assessment.id,
                             score=card.score, verdict=card.verdict, categories=categories)
    db.session.add(snapshot)
    return snapshot


# Comparing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ComparedItem:
    key: str
    title: str
    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def statuses_at(assessment: Assessment, at: datetime | None) -> dict[str, str | None]:
    """Each item's status now, or as it stood at `at` (from the answer history)."""
    result = {}
    for answer in assessment.answers:
        if at is None:
            result[answer.item_key] = answer.status
            continue
        past = [c for c in answer.changes if c.changed_at <= at]
        result[answer.item_key] = max(past, key=lambda c: (c.changed_at, c.id)).to_status if past else None
    return result


def compare(old: Assessment, new: Assessment, old_at: datetime | None = None,
            new_at: datetime | None = None) -> list[ComparedItem]:
    """Item by item, the status in `old` (at `old_at`) against `new` (at `new_at`)."""
    before, after = statuses_at(old, old_at), statuses_at(new, new_at)
    old_list, new_list = checklist_for(old), checklist_for(new)
    rows, seen = [], set()
    old_key_of = carry_over_keys(old_list, new_list)  # new key -> old key
    for item in new_list.items:
        old_key = old_key_of.get(item.key, item.key)
        rows.append(ComparedItem(item.key, item.title, before.get(old_key), after.get(item.key)))
        seen.add(old_key)
    for item in old_list.items:
        if item.key not in seen:
            rows.append(ComparedItem(item.key, item.title + " (removed)", before.get(item.key), None))
    return rows


def score_at(assessment: Assessment, at: datetime | None) -> float:
    """The assessment's score as of `at` (None = now), recomputed from history."""
    if at is None:
        return scorecard(assessment).score
    checklist = checklist_for(assessment)
    states = {key: scoring.AnswerState(status=status)
              for key, status in statuses_at(assessment, at).items()}
    return scoring.score_assessment(checklist.items, states, tier=assessment.service.tier,
                                    ready_threshold=checklist.thresholds.ready,
                                    conditions_threshold=checklist.thresholds.conditions).score


def rescore_lapsed_waivers(now: datetime | None = None) -> int:
    """Refresh the stored score of open assessments whose approved waiver expired after they were
    last scored: time alone changes their verdict, and lists read the stored one. Flushes."""
    now = now or utcnow()
    rows = db.session.execute(
        select(Assessment.id, Assessment.scored_at, Waiver.expires_on)
        .join(Answer, Answer.assessment_id == Assessment.id).join(Waiver, Waiver.answer_id == Answer.id)
        .where(Assessment.state.in_(("draft", "in_review")), Waiver.state == "approved",
               Waiver.expires_on < now.date())).all()
    lapsed = {assessment_id for assessment_id, scored_at, expires_on in rows
              if scored_at is None or scored_at <= datetime(expires_on.year, expires_on.month, expires_on.day,
                                                            23, 59, 59, tzinfo=UTC)}
    for assessment in db.session.scalars(select(Assessment).where(Assessment.id.in_(lapsed))):
        refresh_score(assessment, now)
    return len(lapsed)
