"""A service's probes: latest result per check, history, and "Probe now" with live results."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from webapp import flags, queue_health
from webapp.charts import FULL_CARD_CHART_WIDTH, Series, time_chart, uptime_bar
from webapp.extensions import db, limiter
from webapp.forms import ConfirmForm
from webapp.models import ProbeResult, ProbeRun, Service, utcnow
from webapp.permissions import can_edit_services, require
from webapp.probes import history, runs

bp = Blueprint("probes", __name__)
QUEUE_DOWN = ("Probe now could not start: the job queue is not reachable. Try again when the notice "
              "above is gone.")


@bp.get("/services/<int:service_id>/probes")
@login_required
def show(service_id: int):
    """Latest result per check, uptime and latency over 7 days, recent runs."""
    service = db.get_or_404(Service, service_id)
    since = utcnow() - timedelta(days=7)
    recent_runs = db.session.scalars(select(ProbeRun).where(ProbeRun.service_id == service.id)
                                     .order_by(ProbeRun.started_at.desc()).limit(10)).all()
    return render_template(
        "probes/show.html", service=service, latest=runs.latest_results(service),
        uptime=runs.uptime(service, "health", since), targets=runs.network_targets(service),
        latency_chart=time_chart([Series("Health check latency", history.latency(service.id, "health", since))],
                                 title="Health check latency over 7 days, in milliseconds", unit=" ms",
                                 width=FULL_CARD_CHART_WIDTH),
        uptime_chart=uptime_bar(history.daily(service.id, "health", days=30),
                                title="Health checks, day by day over 30 days", width=FULL_CARD_CHART_WIDTH),
        recent_runs=recent_runs, can_edit=can_edit_services(current_user, service.team),
        probe_now_off=None if flags.enabled("probe_now") else flags.FLAGS["probe_now"].when_off,
        confirm_form=ConfirmForm())


@bp.post("/services/<int:service_id>/probes/run")
@login_required
@limiter.limit("6/minute")
def run_now(service_id: int):
    """Start a probe run now; the page then polls for its results."""
    from webapp.probes.tasks import complete_run_task

    service = db.get_or_404(Service, service_id)
    require(can_edit_services(current_user, service.team))
    if not ConfirmForm().validate_on_submit():
        flash("Your form expired; try again.", "error")
        return redirect(url_for("probes.show", service_id=service.id))
    if service.lifecycle == "retired":
        flash("A retired service is not probed.", "error")
        return redirect(url_for("probes.show", service_id=service.id))
    if not flags.enabled("probe_now"):
        flash(flags.FLAGS["probe_now"].when_off, "warning")
        return redirect(url_for("probes.show", service_id=service.id))
    if queue_health.jobs_delayed():
        flash(QUEUE_DOWN, "warning")
        return redirect(url_for("probes.show", service_id=service.id))
    run = runs.start_run(service, "manual")
    db.session.commit()  # before queueing: the worker must find the run
    if not queue_health.enqueue(complete_run_task, run.id):
        # Queueing failed after all: close the run so it never shows as running forever.
        runs.finish_run(run)
        db.session.commit()
        flash(QUEUE_DOWN, "warning")
        return redirect(url_for("probes.show", service_id=service.id))
    return redirect(url_for("probes.run", service_id=service.id, run_id=run.id))


@bp.get("/services/<int:service_id>/probes/runs/<int:run_id>")
@login_required
def run(service_id: int, run_id: int):
    """One run's results; while it is running, the fragment polls itself (htmx)."""
    service = db.get_or_404(Service, service_id)
    probe_run = db.get_or_404(ProbeRun, run_id)
    if probe_run.service_id != service.id:
        abort(404)
    template = "probes/_run.html" if request.headers.get("HX-Request") == "true" else "probes/run.html"
    return render_template(template, service=service, run=probe_run,
                           expected=len(runs.network_targets(service)) + len(runs.RECORD_CHECKS))


@bp.get("/probe-results/<int:result_id>")
@login_required
def result(result_id: int):
    """One result in full: explanation, details and the (escaped) response excerpt."""
    row = db.get_or_404(ProbeResult, result_id)
    return render_template("probes/result.html", result=row, service=db.session.get(Service, row.service_id))
