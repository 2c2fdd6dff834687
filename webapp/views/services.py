"""Register, edit and retire services; a service's page and its audit log."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import func, select
from sqlalchemy.orm import defer, joinedload

from webapp import catalog, charts, dashboard, registry, timeline
from webapp.extensions import db
from webapp.forms import ConfirmForm, ServiceForm
from webapp.models import (
    Assessment,
    AuditEvent,
    Membership,
    OwnershipChange,
    Report,
    ScoreSnapshot,
    Service,
    Team,
    User,
)
from webapp.permissions import can_edit_services, can_edit_services_as, require
from webapp.probes import history as history_of_probes

bp = Blueprint("services", __name__)
SERVICE_TREND_POINTS = 60
UPTIME_DAYS = 30


def _service_form(obj: Service | None = None) -> ServiceForm:
    form = ServiceForm(obj=obj)
    form.set_people(db.session.scalars(select(User).where(User.disabled_at.is_(None)).order_by(User.name)))
    return form


@bp.get("/services")
@login_required
def index():
    """Every service, by team."""
    show_retired = request.args.get("retired") == "1"
    query = select(Service).join(Team).order_by(Team.name, Service.name)
    if not show_retired:
        query = query.where(Service.lifecycle != "retired")
    return render_template("services/index.html", services=db.session.scalars(query).all(),
                           show_retired=show_retired)


@bp.route("/teams/<int:team_id>/services/new", methods=["GET", "POST"])
@login_required
def create(team_id: int):
    """Register a service for a team (its maintainers and members)."""
    team = db.get_or_404(Team, team_id)
    require(can_edit_services(current_user, team))
    form = _service_form()
    if request.method == "GET":
        form.probe_interval_minutes.data = current_app.config["PROBE_INTERVAL_MINUTES"]
        form.owner_id.data = current_user.id  # who registers a service usually owns it; changeable
    if form.validate_on_submit():
        try:
            service = registry.register_service(team, form.values(), current_user)
        except registry.RegistryError as exc:
            db.session.rollback()
            form.slug.errors.append(str(exc))
        else:
            db.session.commit()
            flash(f"Service “{service.name}” registered.", "success")
            return redirect(url_for("services.show", service_id=service.id))
    return render_template("services/form.html", form=form, team=team, service=None), 400 if form.errors else 200


@bp.get("/services/<int:service_id>")
@login_required
def show(service_id: int):
    """A service: its facts, verdict and trend, assessments, and ownership history. Scores
    come from the read model, so the page costs the same queries however long the history."""
    viewer_role = (select(Membership.role).where(Membership.team_id == Service.team_id,
                                                 Membership.user_id == current_user.id)
                   .correlate(Service).scalar_subquery())
    found = db.session.execute(
        select(Service, _HEADLINED_CATEGORIES, viewer_role).where(Service.id == service_id)
        .options(joinedload(Service.team), joinedload(Service.owner), joinedload(Service.backup_owner))).first()
    if found is None:
        abort(404)
    service, categories, role = found
    history, reports = _assessments_and_reports(service.id)
    ownership = db.session.scalars(
        select(OwnershipChange).where(OwnershipChange.service_id == service.id)
        .options(joinedload(OwnershipChange.from_user), joinedload(OwnershipChange.to_user),
                 joinedload(OwnershipChange.changed_by))
        .order_by(OwnershipChange.changed_at.desc()).limit(20)
    ).all()
    row = dashboard.service_row(service.id, current_user.id, trend_points=0)
    series, trend = timeline.score_series_and_trend(service.id, trend_points=SERVICE_TREND_POINTS)
    return render_template(
        "services/show.html", service=service, history=history, ownership=ownership, row=row,
        service_reports_read=reports, trend=trend,
        score_chart=charts.time_chart(series, title="Score over time, across assessments",
                                      y_max=100, thresholds=charts.VERDICT_THRESHOLDS),
        category_chart=_category_chart(row, history, categories),
        uptime_chart=charts.uptime_bar(history_of_probes.daily(service.id, "health", days=UPTIME_DAYS),
                                       title=f"Health checks, day by day over {UPTIME_DAYS} days"),
        can_edit=can_edit_services_as(current_user, role), confirm_form=ConfirmForm(),
    )


def _assessments_and_reports(service_id: int) -> tuple[list[Assessment], list[Report]]:
    """Every assessment of the service, newest first, and its signed reports, newest first:
    one query (an assessment has a report or two at most). A report's PDF and snapshot are
    not read: the page lists reports and links to the download."""
    history: dict[int, Assessment] = {}
    reports: list[Report] = []
    for assessment, report in db.session.execute(
        select(Assessment, Report).outerjoin(Report, Report.assessment_id == Assessment.id)
        .where(Assessment.service_id == service_id)
        .options(joinedload(Assessment.checklist_version), joinedload(Assessment.created_by),
                 defer(Report.pdf), defer(Report.snapshot))
        .order_by(Assessment.created_at.desc(), Assessment.id.desc())
    ):
        history.setdefault(assessment.id, assessment)
        if report is not None:
            reports.append(report)
    reports.sort(key=lambda r: r.created_at, reverse=True)
    return list(history.values()), reports


# The latest snapshot's category scores of the assessment the page headlines (working, else
# signed off: the pointers the dashboard row joins by), read with the service itself.
_HEADLINED_CATEGORIES = (
    select(ScoreSnapshot.categories)
    .where(ScoreSnapshot.assessment_id == func.coalesce(Service.working_assessment_id,
                                                        Service.signed_assessment_id))
    .order_by(ScoreSnapshot.at.desc(), ScoreSnapshot.id.desc()).limit(1)
    .correlate(Service).scalar_subquery())


def _category_chart(row: dashboard.DashboardRow | None, history: list[Assessment], categories: dict | None):
    """Category scores of the assessment the page headlines (working, else signed off), from
    its latest snapshot: stored, not recomputed."""
    shown = row and row.shown
    assessment = next((a for a in history if shown and a.id == shown.id), None)
    if assessment is None:
        return None
    scores = categories or {}
    checklist = catalog.checklist_of(assessment.checklist_version)
    return charts.category_bars([(c.title, scores.get(c.key)) for c in checklist.categories],
                                title="Score by category")


@bp.route("/services/<int:service_id>/edit", methods=["GET", "POST"])
@login_required
def edit(service_id: int):
    """Edit a service's facts (its team's maintainers and members)."""
    service = db.get_or_404(Service, service_id)
    require(can_edit_services(current_user, service.team))
    form = _service_form(service)
    if form.validate_on_submit():
        try:
            registry.update_service(service, form.values(), current_user)
        except registry.RegistryError as exc:
            db.session.rollback()
            form.slug.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Service saved.", "success")
            return redirect(url_for("services.show", service_id=service.id))
    return render_template("services/form.html", form=form, team=service.team,
                           service=service), 400 if form.errors else 200


@bp.post("/services/<int:service_id>/retire")
@login_required
def retire(service_id: int):
    """Retire a service: it stays, with its history, but is no longer probed."""
    service = db.get_or_404(Service, service_id)
    require(can_edit_services(current_user, service.team))
    if not ConfirmForm().validate_on_submit():
        flash("Your form expired; try again.", "error")
    else:
        try:
            registry.retire_service(service, current_user)
        except registry.RegistryError as exc:
            flash(str(exc), "error")
        else:
            db.session.commit()
            flash(f"“{service.name}” is retired.", "success")
    return redirect(url_for("services.show", service_id=service.id))


@bp.get("/services/<int:service_id>/audit")
@login_required
def audit_log(service_id: int):
    """Everything that changed about a service, newest first."""
    service = db.get_or_404(Service, service_id)
    page = db.paginate(
        select(AuditEvent).where(AuditEvent.service_id == service.id).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()),
        per_page=50, error_out=False,
    )
    return render_template("services/audit.html", service=service, page=page)
