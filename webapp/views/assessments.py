"""Assessments: start, answer items (htmx or plain posts), evidence, waivers, history, compare."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.exc import StaleDataError

from webapp import assessments, catalog, probe_messages
from webapp.checklists import diff_checklists
from webapp.extensions import db
from webapp.forms import (
    AnswerForm,
    ConfirmForm,
    EvidenceForm,
    StartAssessmentForm,
    UpgradeForm,
    WaiverDecisionForm,
    WaiverForm,
    choices,
)
from webapp.models import (
    Answer,
    AnswerChange,
    Assessment,
    ChecklistVersion,
    Evidence,
    Service,
    User,
    Waiver,
)
from webapp.permissions import can_edit_services, can_manage_team, can_review, require
from webapp.probes.runs import ANSWER_FOR_OUTCOME
from webapp.scoring import STATUSES
from webapp.views.reviews import panel_context

bp = Blueprint("assessments", __name__)

HISTORY_PAGE_SIZE = 25

FILTERS = {
    "all": "All items",
    "unanswered": "Unanswered",
    "not_met": "Not met",
    "critical": "Critical",
    "probe": "Probe-backed",
}


def _is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _people():
    return db.session.scalars(select(User).where(User.disabled_at.is_(None)).order_by(User.name)).all()


@bp.route("/services/<int:service_id>/assessments/new", methods=["GET", "POST"])
@login_required
def start(service_id: int):
    """Start an assessment against the latest version of a checklist, or re-assess: copying
    answers from a signed-off or in-review assessment is the default."""
    service = db.get_or_404(Service, service_id)
    require(can_edit_services(current_user, service.team))
    versions = catalog.latest_versions()  # loaded by `flask checklists sync` and the worker, never here
    sources = assessments.copy_sources(service)
    form = StartAssessmentForm()
    form.checklist.choices = choices((v.id, f"{v.title} (v{v.version})") for v in versions)
    form.copy_from.choices = choices([(a.id, _assessment_label(a)) for a in sources]
                                     + [(0, "Nothing: start with every item unanswered")])
    previous = next(iter(service.assessments), None)
    if request.method == "GET":
        # Default to what the service used last, else the main production readiness checklist.
        preferred = previous.checklist_version.slug if previous else "production-readiness"
        form.checklist.data = next((v.id for v in versions if v.slug == preferred), None)
        form.copy_from.data = sources[0].id if sources else 0
    drafts = {v.id: assessments.open_draft(service, v.slug) for v in versions}
    if form.validate_on_submit():
        version = db.session.get(ChecklistVersion, form.checklist.data)
        copy_from = next((a for a in sources if a.id == form.copy_from.data), None)
        if copy_from is not None and copy_from.checklist_version.slug != version.slug:
            form.copy_from.errors.append(f"That assessment used another checklist ({copy_from.checklist_version.title}); "
                                         "pick one of the same checklist, or nothing.")
        else:
            try:
                assessment = assessments.start_assessment(service, version, current_user, copy_from)
            except assessments.OpenDraftExists as exc:
                db.session.rollback()
                flash(str(exc), "info")
                return redirect(url_for("assessments.show", assessment_id=exc.draft.id))
            except assessments.AssessmentError as exc:
                db.session.rollback()
                flash(str(exc), "error")
                return redirect(url_for("services.show", service_id=service.id))
            db.session.commit()
            flash("Assessment started." + (" Answers copied from the assessment of "
                                           f"{copy_from.created_at:%Y-%m-%d}." if copy_from else ""), "success")
            return redirect(url_for("assessments.show", assessment_id=assessment.id))
    return render_template("assessments/start.html", service=service, form=form, sources=sources,
                           drafts={k: v for k, v in drafts.items() if v is not None}), 400 if form.errors else 200


def _assessment_label(a: Assessment) -> str:
    """Tell assessments apart: when, which checklist, state, who started it."""
    who = a.created_by.name if a.created_by else "someone"
    when = (a.decided_at or a.submitted_at or a.created_at)
    return (f"{a.checklist_version.title} v{a.checklist_version.version} · {a.state.replace('_', ' ')} "
            f"{when:%Y-%m-%d %H:%M} · started by {who} · score {a.score:g}")


def _load_page(assessment_id: int) -> Assessment:
    """The assessment with everything the page shows, in a constant number of queries."""
    assessment = db.session.scalar(
        select(Assessment).where(Assessment.id == assessment_id)
        .options(selectinload(Assessment.answers).selectinload(Answer.evidence),
                 selectinload(Assessment.answers).selectinload(Answer.waivers),
                 selectinload(Assessment.archived_answers).selectinload(Answer.evidence),
                 joinedload(Assessment.service).joinedload(Service.team),
                 joinedload(Assessment.checklist_version)))
    if assessment is None:
        abort(404)
    return assessment


def _probe_views(assessment: Assessment, checklist, answers: dict) -> dict[str, dict]:
    """For each probe-backed item: the probe's latest result in words, whether it can run at
    all, and whether it disagrees with the answer (one query for the whole page)."""
    service = assessment.service
    items = [item for item in checklist.items if item.probe]
    if not items:
        return {}
    latest = assessments.latest_checks(service)
    statuses = ANSWER_FOR_OUTCOME
    views = {}
    for item in items:
        check, result = latest.get(item.probe, (None, None))
        answer = answers.get(item.key)
        says = statuses.get(check.outcome) if check else None
        status = answer.status if answer else None
        views[item.key] = dict(
            kind=item.probe, label=probe_messages.KIND_LABELS.get(item.probe, item.probe),
            outcome=check.outcome if check else None, checked_at=check.checked_at if check else None,
            result_id=check.result_id if check else None, message=probe_messages.describe(result, check and check.outcome),
            missing=probe_messages.cannot_run(service, item.probe), says=says,
            differs=says is not None and status is not None and status != says,
        )
    return views


def _page_context(assessment: Assessment) -> dict:
    checklist = assessments.checklist_for(assessment)
    card = assessments.scorecard(assessment)
    answers = assessments.answers_by_key(assessment)
    team = assessment.service.team
    can_edit = assessment.is_editable and can_edit_services(current_user, team)
    return dict(
        assessment=assessment, service=assessment.service, checklist=checklist, card=card,
        answers=answers, probes=_probe_views(assessment, checklist, answers),
        archived=_archived_titles(assessment), retired_read_only=assessments.RETIRED_READ_ONLY,
        can_edit=can_edit,
        can_waive=assessment.is_editable and can_manage_team(current_user, team),
        can_review=can_review(current_user), now=datetime.now(UTC), confirm_form=ConfirmForm(),
        **panel_context(assessment),
    )


def _archived_titles(assessment: Assessment) -> list[tuple[Answer, str]]:
    """The answers a checklist upgrade archived, each with its item's title from the newest
    version of the checklist that still had the item (its key if none did)."""
    if not assessment.archived_answers:
        return []
    titles: dict[str, str] = {}
    versions = catalog.checklists_by_version()
    for version_id in sorted(versions):  # ids grow with each stored version: newer titles win
        checklist = versions[version_id]
        if checklist.slug == assessment.checklist_version.slug:
            titles.update((item.key, item.title) for item in checklist.items)
    return [(answer, titles.get(answer.item_key, answer.item_key)) for answer in assessment.archived_answers]


def _changed_back(latest: ChecklistVersion, assessment: Assessment) -> bool:
    """Whether the checklist's current version is content stored before this assessment's:
    versions are numbered in the order their content was first stored, so that is a file
    changed back, not a newer checklist."""
    return latest.id < assessment.checklist_version_id


def _visible(item, answer, tier: int, which: str) -> bool:
    status = answer.status if answer else None
    return {
        "all": True,
        "unanswered": status is None and item.applies_to(tier),
        "not_met": status in ("not_met", "partial"),
        "critical": item.critical,
        "probe": item.probe is not None,
    }[which]


@bp.get("/assessments/<int:assessment_id>")
@login_required
def show(assessment_id: int):
    """The assessment page: score bar, categories, one compact row per item; a row's editors
    load on demand (`open=<key>` renders one expanded, for browsers without script)."""
    assessment = _load_page(assessment_id)
    which = request.args.get("filter", "all")
    if which not in FILTERS:
        which = "all"
    context = _page_context(assessment)
    latest = catalog.latest_version(assessment.checklist_version.slug)
    context["newer_version"] = (latest if latest and latest.id != assessment.checklist_version_id
                                and latest.loaded_at > assessment.checklist_version.loaded_at else None)
    context["checklist_reverted"] = bool(latest and _changed_back(latest, assessment))
    context["visible"] = {
        item.key: _visible(item, context["answers"].get(item.key), assessment.service.tier, which)
        for item in context["checklist"].items}
    open_key = request.args.get("open")
    if open_key and context["checklist"].item(open_key) is not None:
        context.update(_panel_context(assessment, open_key))
        # After a refused save without script: offer to save the status that was refused.
        pending = request.args.get("pending")
        context["pending_status"] = pending if pending in STATUSES else None
    return render_template("assessments/show.html", filter=which, filters=FILTERS, open_key=open_key,
                           **context)


def _panel_context(assessment: Assessment, item_key: str) -> dict:
    """What an expanded item adds: who answered, the history, the people for waivers."""
    answer = assessments.answer_for(assessment, item_key)
    return dict(changes=answer.changes if answer else [],
                answered_by=answer.answered_by if answer else None)


@bp.get("/assessments/<int:assessment_id>/items/<item_key>")
@login_required
def panel(assessment_id: int, item_key: str):
    """One item's note, evidence, waivers, guidance and history (htmx: the panel alone)."""
    if not _is_htmx():
        assessment = db.get_or_404(Assessment, assessment_id)
        if assessments.checklist_for(assessment).item(item_key) is None:
            abort(404, description=f"“{item_key}” is not an item of this checklist.")
        return redirect(url_for("assessments.show", assessment_id=assessment_id, open=item_key,
                                _anchor=f"item-{item_key}"))
    assessment = _load_page(assessment_id)
    context = _page_context(assessment)
    item = context["checklist"].item(item_key)
    if item is None:
        abort(404, description=f"“{item_key}” is not an item of this checklist.")
    context.update(_panel_context(assessment, item_key))
    return render_template("assessments/_panel.html", item=item, **context)


def _load_for_edit(assessment_id: int, item_key: str):
    assessment = _load_page(assessment_id)
    require(can_edit_services(current_user, assessment.service.team))
    if assessments.checklist_for(assessment).item(item_key) is None:
        abort(404, description=f"“{item_key}” is not an item of this checklist.")
    return assessment


def _respond_item(assessment: Assessment, item_key: str, *, error: str | None = None,
                  conflict=None, status: int = 200, pending_status: str | None = None):
    """htmx: the item row, and out of band every figure that depends on it (score bar,
    category headers, sidebar with blockers); else back to the page."""
    if _is_htmx():
        db.session.expire_all()
        assessment = _load_page(assessment.id)
        context = _page_context(assessment)
        item = context["checklist"].item(item_key)
        expanded = bool(error or conflict or request.form.get("expanded"))
        if expanded:
            context.update(_panel_context(assessment, item_key))
        return render_template("assessments/_item_response.html", item=item, error=error,
                               conflict=conflict, saved=error is None, expanded=expanded,
                               pending_status=pending_status, **context), status
    if error:
        flash(error, "error")
    reopen = {"open": item_key, "pending": pending_status or ""} if error else {}
    return redirect(url_for("assessments.show", assessment_id=assessment.id, **reopen, _anchor=f"item-{item_key}"))


@bp.post("/assessments/<int:assessment_id>/items/<item_key>/answer")
@login_required
def answer(assessment_id: int, item_key: str):
    """Set an item's status and note (optimistic locking against concurrent edits)."""
    assessment = _load_for_edit(assessment_id, item_key)
    form = AnswerForm()
    if not form.validate_on_submit():
        message = "; ".join(e for errors in form.errors.values() for e in errors)
        return _respond_item(assessment, item_key, error=f"Not saved. {message}", status=400)
    if "note" in request.form:
        note = form.note.data or ""
    else:  # a status click from the compact row: the note stays as it is
        current = assessments.answer_for(assessment, item_key)
        note = current.note if current else ""
    try:
        assessments.record_answer(assessment, item_key, form.status.data, note,
                                  current_user, expected_version=form.version.data)
        db.session.commit()
    except assessments.AnswerConflict as exc:
        db.session.rollback()
        return _respond_item(assessment, item_key, error=str(exc), conflict=exc.answer, status=409)
    except (StaleDataError, IntegrityError):  # another save landed first: theirs stands
        db.session.rollback()
        theirs = assessments.answer_for(assessment, item_key)
        return _respond_item(assessment, item_key, error=str(assessments.AnswerConflict(theirs, current_user)),
                             conflict=theirs, status=409)
    except assessments.AssessmentError as exc:
        db.session.rollback()
        return _respond_item(assessment, item_key, error=f"Not saved. {exc}", status=400,
                             pending_status=form.status.data)
    return _respond_item(assessment, item_key)


@bp.post("/assessments/<int:assessment_id>/items/<item_key>/evidence")
@login_required
def add_evidence(assessment_id: int, item_key: str):
    """Attach an evidence link (http/https only) to an item."""
    assessment = _load_for_edit(assessment_id, item_key)
    form = EvidenceForm()
    if not form.validate_on_submit():
        message = "; ".join(e for errors in form.errors.values() for e in errors)
        return _respond_item(assessment, item_key, error=f"Link not added. {message}", status=400)
    try:
        assessments.add_evidence(assessment, item_key, form.url.data, form.title.data or "", current_user)
    except assessments.AssessmentError as exc:
        db.session.rollback()
        return _respond_item(assessment, item_key, error=f"Link not added. {exc}", status=400)
    db.session.commit()
    return _respond_item(assessment, item_key)


@bp.post("/evidence/<int:evidence_id>/remove")
@login_required
def remove_evidence(evidence_id: int):
    """Remove an evidence link."""
    evidence = db.get_or_404(Evidence, evidence_id)
    assessment = evidence.answer.assessment
    item_key = evidence.answer.item_key
    require(can_edit_services(current_user, assessment.service.team))
    if not ConfirmForm().validate_on_submit():
        return _respond_item(assessment, item_key, error="Your form expired; reload the page.", status=400)
    try:
        assessments.remove_evidence(evidence, current_user)
    except assessments.AssessmentError as exc:
        db.session.rollback()
        return _respond_item(assessment, item_key, error=str(exc), status=400)
    db.session.commit()
    return _respond_item(assessment, item_key)


@bp.route("/assessments/<int:assessment_id>/items/<item_key>/waiver", methods=["GET", "POST"])
@login_required
def request_waiver(assessment_id: int, item_key: str):
    """Request a waiver for a not-met or partial item (team maintainers)."""
    assessment = db.get_or_404(Assessment, assessment_id)
    require(can_manage_team(current_user, assessment.service.team))
    item = assessments.checklist_for(assessment).item(item_key)
    if item is None:
        abort(404, description=f"“{item_key}” is not an item of this checklist.")
    form = WaiverForm()
    form.risk_owner_id.choices = choices((u.id, f"{u.name} <{u.email}>") for u in _people())
    refused: list[str] = []
    if form.validate_on_submit():
        try:
            assessments.request_waiver(assessment, item_key, form.reason.data, form.compensating_control.data,
                                       db.session.get(User, form.risk_owner_id.data), form.expires_on.data,
                                       current_user)
        except assessments.AssessmentError as exc:
            db.session.rollback()
            # Beside the date when it is about the date; above the form otherwise.
            about_the_date = isinstance(exc, assessments.WaiverExpiryRefused)
            (form.expires_on.errors if about_the_date else refused).append(str(exc))
        else:
            db.session.commit()
            flash("Waiver requested. A reviewer will approve or decline it.", "success")
            return redirect(url_for("assessments.show", assessment_id=assessment.id, _anchor=f"item-{item_key}"))
    return render_template("assessments/waiver.html", assessment=assessment, item=item,
                           form=form, refused=refused), 400 if form.errors or refused else 200


@bp.post("/waivers/<int:waiver_id>/decide")
@login_required
def decide_waiver(waiver_id: int):
    """Approve or decline a waiver (reviewers and admins)."""
    waiver = db.get_or_404(Waiver, waiver_id)
    require(can_review(current_user))
    assessment = waiver.answer.assessment
    form = WaiverDecisionForm()
    if not form.validate_on_submit():
        flash("Pick approve or decline.", "error")
    else:
        try:
            assessments.decide_waiver(waiver, form.decision.data == "approve", current_user)
        except assessments.AssessmentError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            db.session.commit()
            flash(f"Waiver {waiver.state}.", "success")
    return redirect(url_for("assessments.show", assessment_id=assessment.id,
                            _anchor=f"item-{waiver.answer.item_key}"))


@bp.get("/assessments/<int:assessment_id>/items/<item_key>/history")
@login_required
def history(assessment_id: int, item_key: str):
    """The changes of one item's answer, newest first, a page at a time."""
    assessment = db.get_or_404(Assessment, assessment_id)
    item = assessments.checklist_for(assessment).item(item_key)
    if item is None:
        abort(404, description=f"“{item_key}” is not an item of this checklist.")
    answer = assessments.answer_for(assessment, item_key)
    page = db.paginate(select(AnswerChange).where(AnswerChange.answer_id == (answer.id if answer else None))
                       .order_by(AnswerChange.changed_at.desc(), AnswerChange.id.desc()),
                       per_page=HISTORY_PAGE_SIZE, max_per_page=HISTORY_PAGE_SIZE, error_out=False)
    template = "assessments/_history.html" if _is_htmx() else "assessments/history.html"
    return render_template(template, assessment=assessment, item=item, changes=page.items, page=page)


@bp.get("/assessments/<int:assessment_id>/submit")
@login_required
def submit_page(assessment_id: int):
    """Reloading (or going back to) the page a refused submit showed: the items still to answer."""
    db.get_or_404(Assessment, assessment_id)
    return redirect(url_for("assessments.show", assessment_id=assessment_id, filter="unanswered"))


@bp.post("/assessments/<int:assessment_id>/submit")
@login_required
def submit(assessment_id: int):
    """Send a draft to review."""
    assessment = db.get_or_404(Assessment, assessment_id)
    require(can_edit_services(current_user, assessment.service.team))
    if not ConfirmForm().validate_on_submit():
        flash("Your form expired; try again.", "error")
    else:
        try:
            assessments.submit_for_review(assessment, current_user)
        except assessments.SubmitBlocked as exc:
            db.session.rollback()
            return render_template("reviews/submit_blocked.html", assessment=assessment,
                                   items=exc.items, message=str(exc)), 400
        except assessments.AssessmentError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            db.session.commit()
            flash("Submitted for review.", "success")
    return redirect(url_for("assessments.show", assessment_id=assessment.id))


@bp.route("/assessments/<int:assessment_id>/upgrade", methods=["GET", "POST"])
@login_required
def upgrade(assessment_id: int):
    """Move an open assessment to the newest version of its checklist."""
    assessment = db.get_or_404(Assessment, assessment_id)
    require(can_edit_services(current_user, assessment.service.team))
    latest = catalog.latest_version(assessment.checklist_version.slug)
    if latest is None or latest.id == assessment.checklist_version_id:
        flash("This assessment already uses the newest version of its checklist.", "info")
        return redirect(url_for("assessments.show", assessment_id=assessment.id))
    diff = diff_checklists(assessments.checklist_for(assessment), catalog.checklist_of(latest))
    form = UpgradeForm()
    if form.validate_on_submit():
        try:
            assessments.upgrade(assessment, latest, current_user)
        except assessments.AssessmentError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            db.session.commit()
            flash(f"Moved to version {latest.version}: {len(diff.added)} added, "
                  f"{len(diff.removed)} removed, {len(diff.renamed)} renamed.", "success")
        return redirect(url_for("assessments.show", assessment_id=assessment.id))
    return render_template("assessments/upgrade.html", assessment=assessment, latest=latest, diff=diff,
                           old=assessments.checklist_for(assessment), new=catalog.checklist_of(latest),
                           form=form, reverted=_changed_back(latest, assessment))


def _parse_when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        abort(400, description=f"“{value}” is not a date like 2026-11-26 or 2026-11-26T14:00.")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@bp.get("/services/<int:service_id>/compare")
@login_required
def compare(service_id: int):
    """Two assessments of a service (or one at two dates), item by item, with the score delta."""
    service = db.get_or_404(Service, service_id)
    options = list(db.session.scalars(
        select(Assessment).where(Assessment.service_id == service.id)
        .options(joinedload(Assessment.created_by), joinedload(Assessment.checklist_version))
        .order_by(Assessment.created_at.desc(), Assessment.id.desc())))
    rows = None
    old = new = None
    old_at, new_at = _parse_when(request.args.get("a_at")), _parse_when(request.args.get("b_at"))
    if request.args.get("a") and request.args.get("b"):
        ids = {a.id: a for a in options}
        try:
            old, new = ids[int(request.args["a"])], ids[int(request.args["b"])]
        except (KeyError, ValueError):
            abort(404, description="Pick two assessments of this service.")
        rows = assessments.compare(old, new, old_at, new_at)
    scores = (assessments.score_at(old, old_at), assessments.score_at(new, new_at)) if rows is not None else None
    return render_template("assessments/compare.html", service=service, options=options, rows=rows,
                           old=old, new=new, scores=scores, args=request.args.to_dict(),
                           changes_only=request.args.get("changes") == "1")
