"""Assessments: start, answer items (htmx or plain posts), evidence, waivers, history, compare."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from webapp import assessments, catalog
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
from webapp.models import Assessment, ChecklistVersion, Evidence, Service, User, Waiver
from webapp.permissions import can_edit_services, can_manage_team, can_review, require

bp = Blueprint("assessments", __name__)

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
    """Start an assessment against the latest version of a checklist, or re-assess."""
    service = db.get_or_404(Service, service_id)
    require(can_edit_services(current_user, service.team))
    versions = catalog.latest_versions()  # loaded by `flask checklists sync` and the worker, never here
    form = StartAssessmentForm()
    form.checklist.choices = choices((v.id, f"{v.title} (v{v.version})") for v in versions)
    previous = next(iter(service.assessments), None)
    if request.method == "GET":
        # Default to what the service used last, else the main production readiness checklist.
        preferred = previous.checklist_version.slug if previous else "production-readiness"
        form.checklist.data = next((v.id for v in versions if v.slug == preferred), None)
    if form.validate_on_submit():
        version = db.session.get(ChecklistVersion, form.checklist.data)
        copy_from = previous if form.copy_previous.data else None
        if copy_from is not None and copy_from.checklist_version.slug != version.slug:
            form.copy_previous.errors.append("The latest assessment used another checklist; nothing to copy.")
        else:
            try:
                assessment = assessments.start_assessment(service, version, current_user, copy_from)
            except assessments.AssessmentError as exc:
                db.session.rollback()
                flash(str(exc), "error")
                return redirect(url_for("services.show", service_id=service.id))
            db.session.commit()
            flash("Assessment started." + (" Answers copied from the previous one." if copy_from else ""), "success")
            return redirect(url_for("assessments.show", assessment_id=assessment.id))
    return render_template("assessments/start.html", service=service, form=form,
                           previous=previous), 400 if form.errors else 200


def _page_context(assessment: Assessment) -> dict:
    checklist = assessments.checklist_for(assessment)
    card = assessments.scorecard(assessment)
    latest = catalog.latest_version(assessment.checklist_version.slug)
    return dict(
        assessment=assessment, service=assessment.service, checklist=checklist, card=card,
        answers=assessments.answers_by_key(assessment),
        can_edit=assessment.is_open and can_edit_services(current_user, assessment.service.team),
        can_waive=assessment.is_open and can_manage_team(current_user, assessment.service.team),
        can_review=can_review(current_user), people=_people(), now=datetime.now(UTC),
        newer_version=latest if latest and latest.id != assessment.checklist_version_id
        and latest.loaded_at > assessment.checklist_version.loaded_at else None,
        confirm_form=ConfirmForm(), evidence_form=EvidenceForm(),
    )


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
    """The assessment page: score header, categories, one card per item."""
    assessment = db.get_or_404(Assessment, assessment_id)
    which = request.args.get("filter", "all")
    if which not in FILTERS:
        which = "all"
    context = _page_context(assessment)
    context["visible"] = {
        item.key: _visible(item, context["answers"].get(item.key), assessment.service.tier, which)
        for item in context["checklist"].items}
    return render_template("assessments/show.html", filter=which, filters=FILTERS, **context)


def _load_for_edit(assessment_id: int, item_key: str):
    assessment = db.get_or_404(Assessment, assessment_id)
    require(can_edit_services(current_user, assessment.service.team))
    if assessment.checklist_version and assessments.checklist_for(assessment).item(item_key) is None:
        abort(404, description=f"“{item_key}” is not an item of this checklist.")
    return assessment


def _respond_item(assessment: Assessment, item_key: str, *, error: str | None = None,
                  conflict=None, status: int = 200):
    """htmx: the item card plus the score header out of band; else back to the page."""
    if _is_htmx():
        context = _page_context(assessment)
        item = context["checklist"].item(item_key)
        return render_template("assessments/_item_response.html", item=item, error=error,
                               conflict=conflict, saved=error is None, **context), status
    if error:
        flash(error, "error")
    return redirect(url_for("assessments.show", assessment_id=assessment.id, _anchor=f"item-{item_key}"))


@bp.post("/assessments/<int:assessment_id>/items/<item_key>/answer")
@login_required
def answer(assessment_id: int, item_key: str):
    """Set an item's status and note (optimistic locking against concurrent edits)."""
    assessment = _load_for_edit(assessment_id, item_key)
    form = AnswerForm()
    if not form.validate_on_submit():
        message = "; ".join(e for errors in form.errors.values() for e in errors)
        return _respond_item(assessment, item_key, error=f"Not saved: {message}", status=400)
    try:
        assessments.record_answer(assessment, item_key, form.status.data, form.note.data or "",
                                  current_user, expected_version=form.version.data)
        db.session.commit()
    except assessments.AnswerConflict as exc:
        db.session.rollback()
        return _respond_item(assessment, item_key, error=str(exc), conflict=exc.answer, status=409)
    except StaleDataError:
        db.session.rollback()
        theirs = assessments.answer_for(assessment, item_key)
        return _respond_item(assessment, item_key, error=str(assessments.AnswerConflict(theirs)),
                             conflict=theirs, status=409)
    except assessments.AssessmentError as exc:
        db.session.rollback()
        return _respond_item(assessment, item_key, error=f"Not saved: {exc}", status=400)
    return _respond_item(assessment, item_key)


@bp.post("/assessments/<int:assessment_id>/items/<item_key>/evidence")
@login_required
def add_evidence(assessment_id: int, item_key: str):
    """Attach an evidence link (http/https only) to an item."""
    assessment = _load_for_edit(assessment_id, item_key)
    form = EvidenceForm()
    if not form.validate_on_submit():
        message = "; ".join(e for errors in form.errors.values() for e in errors)
        return _respond_item(assessment, item_key, error=f"Link not added: {message}", status=400)
    try:
        assessments.add_evidence(assessment, item_key, form.url.data, form.title.data or "", current_user)
    except assessments.AssessmentError as exc:
        db.session.rollback()
        return _respond_item(assessment, item_key, error=f"Link not added: {exc}", status=400)
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
    if form.validate_on_submit():
        try:
            assessments.request_waiver(assessment, item_key, form.reason.data, form.compensating_control.data,
                                       db.session.get(User, form.risk_owner_id.data), form.expires_on.data,
                                       current_user)
        except assessments.AssessmentError as exc:
            db.session.rollback()
            form.expires_on.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Waiver requested. A reviewer will approve or decline it.", "success")
            return redirect(url_for("assessments.show", assessment_id=assessment.id, _anchor=f"item-{item_key}"))
    return render_template("assessments/waiver.html", assessment=assessment, item=item,
                           form=form), 400 if form.errors else 200


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
    """Every change of one item's answer, newest first."""
    assessment = db.get_or_404(Assessment, assessment_id)
    item = assessments.checklist_for(assessment).item(item_key)
    if item is None:
        abort(404, description=f"“{item_key}” is not an item of this checklist.")
    answer = assessments.answer_for(assessment, item_key)
    template = "assessments/_history.html" if _is_htmx() else "assessments/history.html"
    return render_template(template, assessment=assessment, item=item,
                           changes=answer.changes if answer else [])


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
        except assessments.AssessmentError as exc:
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
                           form=form)


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
    options = service.assessments
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
                           old=old, new=new, scores=scores, args=request.args)
