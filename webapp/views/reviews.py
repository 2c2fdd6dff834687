"""Review and sign-off: the review queue, the decision form (also in meeting mode),
conditions, and the reviewer roles admins grant."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp import assessments, catalog, reviews
from webapp.extensions import db
from webapp.forms import ConfirmForm, ReviewerRolesForm, SignOffForm, choices
from webapp.models import Assessment, Condition, User
from webapp.permissions import can_edit_services, require

bp = Blueprint("reviews", __name__)

BASE_ROLES = ("sre", "security")


def _people():
    return db.session.scalars(select(User).where(User.disabled_at.is_(None)).order_by(User.name)).all()


def grantable_roles() -> list[str]:
    """Roles admins can grant: sre and security, plus any role a checklist's signoff names."""
    roles = list(BASE_ROLES)
    for version in catalog.latest_versions():
        roles += catalog.checklist_of(version).signoff.granted_roles
    return list(dict.fromkeys(roles))


def signoff_form(assessment: Assessment, *, posted: bool = False) -> SignOffForm:
    """The form offers the roles the user can sign; a post may name any required role, so
    that a refused one gets the four-eyes reason from reviews.decide, not "not a choice"."""
    form = SignOffForm()
    checklist = assessments.checklist_for(assessment)
    items = [i for i in checklist.items if i.applies_to(assessment.service.tier)]
    roles = (reviews.required_roles(assessment) if posted
             else reviews.roles_open_to(current_user, assessment))
    form.set_choices(roles, _people(), items)
    return form


def review_context(assessment: Assessment, form: SignOffForm | None = None) -> dict:
    """What the review panel, the review page and the meeting's last slide show."""
    checklist = assessments.checklist_for(assessment)
    return dict(
        assessment=assessment, service=assessment.service, checklist=checklist,
        # Waiver requests still undecided: a reviewer should decide them before signing off.
        pending_waivers=[(item.title if (item := checklist.item(answer.item_key)) else answer.item_key,
                          answer.item_key)
                         for answer in assessment.answers for waiver in answer.waivers if waiver.state == "requested"],
        required=reviews.required_roles(assessment),
        approvals=reviews.approvals_by_role(assessment),
        round_signoffs=reviews.round_signoffs(assessment),
        open_roles=reviews.roles_open_to(current_user, assessment),
        form=form or signoff_form(assessment),
        today=datetime.now(UTC).date(),
    )


@bp.get("/reviews")
@login_required
def queue():
    """Assessments in review that wait for the current user (a role they can sign, or a
    service they own), and every other one in review below."""
    mine = reviews.queue_for(current_user)
    others = [a for a in db.session.scalars(select(Assessment).where(Assessment.state == "in_review")
                                            .order_by(Assessment.submitted_at)) if a not in mine]
    return render_template("reviews/queue.html", mine=mine, others=others,
                           open_roles={a.id: reviews.roles_open_to(current_user, a) for a in mine},
                           approvals={a.id: reviews.approvals_by_role(a) for a in mine + others})


@bp.get("/assessments/<int:assessment_id>/review")
@login_required
def show(assessment_id: int):
    """The review page: required roles, decisions so far, and the sign-off form."""
    assessment = db.get_or_404(Assessment, assessment_id)
    return render_template("reviews/show.html", card=assessments.scorecard(assessment),
                           **review_context(assessment))


def _conditions(form: SignOffForm) -> tuple[list[reviews.ConditionInput], list[str]]:
    found, errors = [], []
    for number, entry in enumerate(form.conditions, start=1):
        sub = entry.form
        if not (sub.text.data or sub.owner_id.data or sub.due_on.data):
            continue
        if not (sub.text.data and sub.owner_id.data and sub.due_on.data):
            errors.append(f"Condition {number} needs a description, an owner and a due date.")
            continue
        owner = db.session.get(User, sub.owner_id.data)
        if owner is None:
            errors.append(f"Condition {number}: pick an owner from the list.")
            continue
        found.append(reviews.ConditionInput(sub.text.data, owner, sub.due_on.data))
    return found, errors


@bp.post("/assessments/<int:assessment_id>/signoff")
@login_required
def decide(assessment_id: int):
    """Record a decision for one role: approve, approve with conditions, or reject."""
    assessment = db.get_or_404(Assessment, assessment_id)
    service = assessment.service
    require(any(reviews.holds_role(current_user, role, service)
                for role in reviews.required_roles(assessment)))
    if assessment.state != "in_review":
        abort(409, description=f"This assessment is {assessment.state.replace('_', ' ')}; "
                               "there is nothing to sign.")
    back = request.form.get("back")
    target = (url_for("reports.meeting", assessment_id=assessment.id) + "#slide-decision"
              if back == "meeting" else url_for("reviews.show", assessment_id=assessment.id))
    form = signoff_form(assessment, posted=True)
    if not form.validate_on_submit():
        return _refuse(assessment, form, back)
    conditions, errors = _conditions(form)
    item_comments = {e.form.item_key.data: e.form.text.data for e in form.item_comments
                     if e.form.item_key.data and e.form.text.data}
    if errors:
        form.conditions.errors = errors
        return _refuse(assessment, form, back)
    try:
        signoff = reviews.decide(assessment, current_user, form.role.data, form.decision.data,
                                 form.comment.data or "", conditions=conditions,
                                 item_comments=item_comments, present=form.present.data or "")
    except assessments.AssessmentError as exc:
        db.session.rollback()
        assessment = db.session.get(Assessment, assessment_id)
        field = form.comment if isinstance(exc, reviews.CommentError) else form.decision
        field.errors = [str(exc)]
        return _refuse(assessment, form, back)
    db.session.commit()
    # In a meeting the room stays on the projector view, which says how it ended.
    ended = target if back == "meeting" else url_for("assessments.show", assessment_id=assessment.id)
    if assessment.state == "signed_off":
        flash("Signed off. The assessment is frozen and its signed report is ready.", "success")
        return redirect(ended)
    if signoff.decision == "reject":
        flash("Rejected: the assessment is back in draft, with your comments on its items.", "success")
        return redirect(ended)
    flash(f"Your decision as “{signoff.role}” is recorded.", "success")
    return redirect(target)


def _refuse(assessment: Assessment, form: SignOffForm, back: str | None):
    # The post accepted any required role; the form shown again offers only the user's own.
    form.role.choices = choices((r, r) for r in reviews.roles_open_to(current_user, assessment))
    # A sub-form's own errors (an impossible date) come per row as {field: [messages]}.
    if any(not isinstance(error, str) for error in form.conditions.errors):
        form.conditions.errors = [f"Condition {number}, {field.label.text.lower()}: {message}"
                                  for number, entry in enumerate(form.conditions, start=1)
                                  for field in entry.form for message in field.errors]
    if back == "meeting":
        from webapp.views.reports import meeting_context

        return render_template("meeting/show.html", **meeting_context(assessment, form)), 400
    return render_template("reviews/show.html", card=assessments.scorecard(assessment),
                           **review_context(assessment, form)), 400


@bp.post("/conditions/<int:condition_id>/done")
@login_required
def condition_done(condition_id: int):
    """Mark a sign-off condition done (its owner, the service's team, or a reviewer)."""
    condition = db.get_or_404(Condition, condition_id)
    assessment = db.get_or_404(Assessment, condition.assessment_id)
    require(current_user.id == condition.owner_id
            or can_edit_services(current_user, assessment.service.team)
            or current_user.is_admin)
    if not ConfirmForm().validate_on_submit():
        flash("Your form expired; try again.", "error")
    else:
        try:
            reviews.complete_condition(condition, current_user)
        except reviews.ReviewError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            db.session.commit()
            flash("Condition marked done.", "success")
    return redirect(url_for("services.show", service_id=assessment.service_id))


@bp.post("/admin/users/<int:user_id>/reviewer-roles")
@login_required
def set_roles(user_id: int):
    """Admins grant or withdraw sign-off roles (sre, security, ...)."""
    require(current_user.is_admin)
    person = db.get_or_404(User, user_id)
    form = ReviewerRolesForm()
    form.roles.choices = choices((r, r) for r in grantable_roles())
    if not form.validate_on_submit():
        flash("Pick roles from the list.", "error")
        return redirect(url_for("auth.users"))
    reviews.grant_roles(person, form.roles.data or [], current_user)
    db.session.commit()
    roles = person.reviewer_roles
    flash(f"{person.name} now signs off as {', '.join(roles)}." if roles else f"{person.name} has no reviewer role now.",
          "success")
    return redirect(url_for("auth.users"))


@bp.app_context_processor
def _review_queue_count():
    """`review_queue_count()` for the navigation badge; computed only when a page calls it."""
    def count() -> int:
        return reviews.queue_count(current_user) if current_user.is_authenticated else 0
    return {"review_queue_count": count}


def issued_reports(assessment: Assessment) -> list:
    """The signed reports of a signed-off (or since superseded) assessment, newest first."""
    from webapp.models import Report

    if assessment.state not in ("signed_off", "superseded"):
        return []
    return db.session.scalars(select(Report).where(Report.assessment_id == assessment.id)
                              .order_by(Report.id.desc())).all()


def panel_context(assessment: Assessment) -> dict:
    """What templates/reviews/_panel.html and the item cards need on the assessment page."""
    return {
        "review": {
            "required": reviews.required_roles(assessment),
            "approvals": reviews.approvals_by_role(assessment),
            "open_roles": reviews.roles_open_to(current_user, assessment),
            "signoffs": reviews.round_signoffs(assessment),
            "rejections": reviews.latest_rejection(assessment),
            "reports": issued_reports(assessment),
        },
        "review_comments": reviews.rejection_comments(assessment) if assessment.state == "draft" else {},
    }


@bp.app_template_global()
def service_conditions(service) -> list[Condition]:
    """Open sign-off conditions of a service, for its page (overdue ones first)."""
    return reviews.open_conditions(service)


@bp.app_template_global()
def grantable_reviewer_roles() -> list[str]:
    return grantable_roles()


@bp.app_template_global()
def utc_today():
    return datetime.now(UTC).date()
