"""Teams and their members."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy import select
from sqlalchemy.orm import contains_eager

from webapp import accounts, charts, dashboard, registry, timeline
from webapp.extensions import db
from webapp.forms import ConfirmForm, MemberForm, TeamForm
from webapp.models import Membership, Team, User
from webapp.permissions import can_edit_services, can_manage_team, require, role_in

bp = Blueprint("teams", __name__, url_prefix="/teams")


@bp.get("/")
@login_required
def index():
    """Every team, with its services and people counts."""
    teams = db.session.scalars(select(Team).order_by(Team.name)).all()
    return render_template("teams/index.html", teams=teams)


@bp.route("/new", methods=["GET", "POST"])
@login_required
def create():
    """Create a team; the creator becomes its maintainer."""
    form = TeamForm()
    if form.validate_on_submit():
        try:
            team = registry.create_team(form.name.data, form.description.data or "", current_user)
        except registry.RegistryError as exc:
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Team “{team.name}” created. You are its maintainer.", "success")
            return redirect(url_for("teams.show", team_id=team.id))
    return render_template("teams/form.html", form=form, team=None), 400 if form.errors else 200


@bp.get("/<int:team_id>")
@login_required
def show(team_id: int):
    """A team: its services with their verdicts and trends (from the read model), and members."""
    return _team_page(db.get_or_404(Team, team_id), MemberForm())


def _team_page(team: Team, member_form: MemberForm, status: int = 200):
    """The team page; a refused member form is shown again with its errors and what was typed."""
    memberships = db.session.scalars(
        select(Membership).join(User).where(Membership.team_id == team.id)
        .options(contains_eager(Membership.user)).order_by(User.name)
    ).all()
    query = dashboard.Query(team=team.id, lifecycle="all")
    return render_template(
        "teams/show.html", team=team, memberships=memberships, member_form=member_form,
        rows=dashboard.select_rows(query, current_user.id),
        summary=dashboard.summary(dashboard.Query(team=team.id), current_user.id),
        score_chart=charts.time_chart(timeline.team_series(team.id), title="Average score of the team's services, per day",
                                      y_max=100, thresholds=charts.VERDICT_THRESHOLDS, width=charts.FULL_CARD_CHART_WIDTH),
        confirm_form=ConfirmForm(), my_role=role_in(current_user, team),
        can_manage=can_manage_team(current_user, team),
        can_edit=can_edit_services(current_user, team),
    ), status


@bp.route("/<int:team_id>/edit", methods=["GET", "POST"])
@login_required
def edit(team_id: int):
    """Rename a team (maintainers)."""
    team = db.get_or_404(Team, team_id)
    require(can_manage_team(current_user, team))
    form = TeamForm(obj=team)
    if form.validate_on_submit():
        try:
            registry.rename_team(team, form.name.data, form.description.data or "", current_user)
        except registry.RegistryError as exc:
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Team saved.", "success")
            return redirect(url_for("teams.show", team_id=team.id))
    return render_template("teams/form.html", form=form, team=team), 400 if form.errors else 200


@bp.post("/<int:team_id>/members")
@login_required
def add_member(team_id: int):
    """Add a person to the team, or change their role (maintainers)."""
    team = db.get_or_404(Team, team_id)
    require(can_manage_team(current_user, team))
    form = MemberForm()
    if not form.validate_on_submit():
        return _team_page(team, form, 400)
    user = accounts.user_by_email(form.email.data)
    if user is None:
        form.email.errors.append(f"No account uses {form.email.data}. An admin can invite them first.")
        return _team_page(team, form, 400)
    try:
        registry.set_membership(team, user, form.role.data, current_user)
    except registry.RegistryError as exc:
        db.session.rollback()
        form.role.errors.append(str(exc))
        return _team_page(team, form, 400)
    db.session.commit()
    flash(f"{user.name} is now {form.role.data} of {team.name}.", "success")
    return redirect(url_for("teams.show", team_id=team.id))


@bp.post("/<int:team_id>/members/<int:user_id>/remove")
@login_required
def remove_member(team_id: int, user_id: int):
    """Remove a person from the team (maintainers)."""
    team = db.get_or_404(Team, team_id)
    require(can_manage_team(current_user, team))
    user = db.get_or_404(User, user_id)
    if not ConfirmForm().validate_on_submit():
        flash("Your form expired; try again.", "error")
        return redirect(url_for("teams.show", team_id=team.id))
    try:
        registry.remove_membership(team, user, current_user)
    except registry.RegistryError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        db.session.commit()
        flash(f"{user.name} removed from {team.name}.", "success")
    return redirect(url_for("teams.show", team_id=team.id))
