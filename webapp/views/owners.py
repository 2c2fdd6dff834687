"""A service's people and story: owner history, its timeline, and handing a leaver's services over."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp import accounts, registry
from webapp.extensions import db
from webapp.forms import HandOverForm, choices
from webapp.models import OwnershipChange, Service, User
from webapp.permissions import require

bp = Blueprint("owners", __name__)


@bp.get("/services/<int:service_id>/owners")
@login_required
def history(service_id: int):
    """Who owned and backed up the service, and who changed it when."""
    service = db.get_or_404(Service, service_id)
    changes = db.session.scalars(select(OwnershipChange).where(OwnershipChange.service_id == service.id)
                                 .order_by(OwnershipChange.changed_at.desc(), OwnershipChange.id.desc())).all()
    return render_template("owners/history.html", service=service, changes=changes)


@bp.route("/users/<int:user_id>/offboard", methods=["GET", "POST"])
@login_required
def offboard(user_id: int):
    """Someone leaves: list what they own or back up, hand it over, optionally disable them."""
    require(current_user.is_admin)
    leaver = db.get_or_404(User, user_id)
    people = db.session.scalars(select(User).where(User.disabled_at.is_(None), User.id != leaver.id)
                                .order_by(User.name)).all()
    form = HandOverForm()
    options = choices([(0, "— nobody (leave empty) —")] + [(p.id, f"{p.name} <{p.email}>") for p in people])
    form.new_owner_id.choices, form.new_backup_id.choices = options, list(options)
    services = registry.services_of(leaver)
    if form.validate_on_submit():
        new_owner = db.session.get(User, form.new_owner_id.data) if form.new_owner_id.data else None
        new_backup = db.session.get(User, form.new_backup_id.data) if form.new_backup_id.data else None
        orphaned = 0 if new_owner else sum(s.owner_id == leaver.id for s in services)
        try:
            changed = registry.hand_over(leaver, new_owner, new_backup, current_user)
            if form.disable.data:
                if leaver.id == current_user.id:
                    raise registry.RegistryError("You cannot disable your own account.")
                accounts.disable_user(leaver, current_user)
        except registry.RegistryError as exc:
            db.session.rollback()
            form.new_owner_id.errors.append(str(exc))
        else:
            db.session.commit()
            done = f"{changed} service{'s' if changed != 1 else ''} handed over" if changed else "Nothing to hand over"
            # "— nobody —" as new owner is allowed, but say what it did: those services lost their owner.
            left = (f"; {orphaned} now ha{'s' if orphaned == 1 else 've'} no owner" if orphaned else "")
            flash(done + left + (f"; {leaver.name}'s account is disabled." if form.disable.data else "."),
                  "warning" if orphaned else "success")
            return redirect(url_for("owners.offboard", user_id=leaver.id))
    return render_template("owners/offboard.html", leaver=leaver, services=services, form=form), \
        400 if form.errors else 200


@bp.get("/services/<int:service_id>/timeline")
@login_required
def timeline(service_id: int):
    """Everything that happened to the service, told as sentences, filterable by kind."""
    from webapp import timeline as told

    service = db.get_or_404(Service, service_id)
    kind = request.args.get("kind", "")
    kind = kind if kind in told.KINDS else ""
    page = db.paginate(told.events(service.id, kind or None), per_page=50, error_out=False)
    return render_template("owners/timeline.html", service=service, page=page, kind=kind,
                           kinds=told.KINDS, describe=told.describe, kind_of=told.kind_of,
                           titles=told.item_titles(service.id))
