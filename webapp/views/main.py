"""The home page: the dashboard of every service's readiness."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select

from webapp import accounts, assessments
from webapp.extensions import db
from webapp.models import Membership, Service, Team

bp = Blueprint("main", __name__)


@bp.get("/")
def index():
    """Dashboard for signed-in people; sign-up for the very first visitor; else sign-in."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.signup" if not accounts.has_users() else "auth.login"))
    services = db.session.scalars(
        select(Service).join(Team).where(Service.lifecycle != "retired").order_by(Team.name, Service.name)
    ).all()
    my_team_ids = set(db.session.scalars(
        select(Membership.team_id).where(Membership.user_id == current_user.id)))
    rows = [assessments.dashboard_row(service) for service in services]
    return render_template("main/index.html", rows=rows, my_team_ids=my_team_ids,
                           has_teams=bool(db.session.scalar(select(Team.id).limit(1))))
