"""A service's runbook: read, edit (every revision kept), compare revisions, mark reviewed."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp import runbooks
from webapp.extensions import db
from webapp.forms import ConfirmForm, RunbookForm, RunbookLinkForm
from webapp.models import RunbookRevision, Service, ServiceCheck
from webapp.permissions import can_edit_services, require

bp = Blueprint("runbooks", __name__)


def _revision_of(service: Service, revision_id: int) -> RunbookRevision:
    revision = db.session.get(RunbookRevision, revision_id)
    if revision is None or revision.service_id != service.id:
        abort(404)
    return revision


@bp.get("/services/<int:service_id>/runbook")
@login_required
def show(service_id: int):
    """The current runbook, its review state, the external link and the revision history."""
    service = db.get_or_404(Service, service_id)
    history = runbooks.revisions(service)
    latest = history[0] if history else None
    link_check = db.session.scalar(select(ServiceCheck).where(
        ServiceCheck.service_id == service.id, ServiceCheck.kind == "runbook_link"))
    return render_template("runbooks/show.html", service=service, revision=latest, history=history,
                           review_due=runbooks.review_due(latest), link_check=link_check,
                           can_edit=can_edit_services(current_user, service.team),
                           confirm_form=ConfirmForm(), review_every=runbooks.REVIEW_EVERY_DAYS)


@bp.route("/services/<int:service_id>/runbook/edit", methods=["GET", "POST"])
@login_required
def edit(service_id: int):
    """Edit the runbook; saving keeps a new revision. A newer save meanwhile is a conflict."""
    service = db.get_or_404(Service, service_id)
    require(can_edit_services(current_user, service.team))
    latest = runbooks.current(service)
    form = RunbookForm()
    link_form = RunbookLinkForm(prefix="link", runbook_url=service.runbook_url)
    conflict = None
    if request.method == "GET":
        form.body.data = latest.body if latest else ""
        form.based_on.data = latest.id if latest else None
    elif form.validate_on_submit():
        try:
            revision = runbooks.save_revision(service, form.body.data, current_user,
                                              based_on_id=form.based_on.data)
        except runbooks.RunbookConflict as exc:
            db.session.rollback()
            conflict = exc.current
            form.body.errors.append(str(exc))
            form.based_on.data = conflict.id  # saving again means "mine replaces theirs"
        except runbooks.RunbookError as exc:
            db.session.rollback()
            form.body.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Runbook saved as a new revision." if revision else "No changes to save.",
                  "success" if revision else "info")
            return redirect(url_for("runbooks.show", service_id=service.id))
    return render_template("runbooks/edit.html", service=service, form=form, link_form=link_form,
                           revision=latest, conflict=conflict), 400 if form.errors else 200


@bp.post("/services/<int:service_id>/runbook/link")
@login_required
def link(service_id: int):
    """Set or clear the link to an external runbook."""
    service = db.get_or_404(Service, service_id)
    require(can_edit_services(current_user, service.team))
    link_form = RunbookLinkForm(prefix="link")
    if not link_form.validate_on_submit():
        form = RunbookForm()
        latest = runbooks.current(service)
        form.body.data, form.based_on.data = (latest.body, latest.id) if latest else ("", None)
        return render_template("runbooks/edit.html", service=service, form=form, link_form=link_form,
                               revision=latest, conflict=None), 400
    runbooks.set_link(service, link_form.runbook_url.data, current_user)
    db.session.commit()
    flash("External runbook link saved." if service.runbook_url else "External runbook link removed.",
          "success")
    return redirect(url_for("runbooks.show", service_id=service.id))


@bp.post("/services/<int:service_id>/runbook/review")
@login_required
def review(service_id: int):
    """Stamp the current revision as reviewed today."""
    service = db.get_or_404(Service, service_id)
    require(can_edit_services(current_user, service.team))
    if not ConfirmForm().validate_on_submit():
        abort(400)
    try:
        runbooks.mark_reviewed(service, current_user)
    except runbooks.RunbookError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        db.session.commit()
        flash("Runbook marked as reviewed today.", "success")
    return redirect(url_for("runbooks.show", service_id=service.id))


@bp.get("/services/<int:service_id>/runbook/revisions/<int:revision_id>")
@login_required
def revision(service_id: int, revision_id: int):
    """One past revision, as it read then."""
    service = db.get_or_404(Service, service_id)
    return render_template("runbooks/revision.html", service=service,
                           revision=_revision_of(service, revision_id),
                           latest=runbooks.current(service))


@bp.get("/services/<int:service_id>/runbook/diff")
@login_required
def diff(service_id: int):
    """What changed between two revisions (`from` older, `to` newer; defaults: the last two)."""
    service = db.get_or_404(Service, service_id)
    history = runbooks.revisions(service)
    if len(history) < 2:
        flash("There is only one revision: nothing to compare yet.", "info")
        return redirect(url_for("runbooks.show", service_id=service.id))
    new_id = request.args.get("to", type=int) or history[0].id
    old_id = request.args.get("from", type=int) or next(
        (r.id for r in history if r.id != new_id and r.created_at <= _revision_of(service, new_id).created_at),
        history[-1].id)
    old, new = _revision_of(service, old_id), _revision_of(service, new_id)
    if (old.created_at, old.id) > (new.created_at, new.id):
        old, new = new, old
    return render_template("runbooks/diff.html", service=service, old=old, new=new, history=history,
                           lines=runbooks.diff(old, new))
