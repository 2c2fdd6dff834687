"""The home page: the dashboard of every service's readiness, and its CSV/JSON export."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp import accounts, dashboard, dashboard_html
from webapp.models import utcnow

bp = Blueprint("main", __name__)

# In Python, not Jinja macros: drawn for every row, macros were the slowest part of the page.
for _name, _function in dashboard_html.TEMPLATE_GLOBALS.items():
    bp.add_app_template_global(_function, _name)


@bp.get("/")
def index():
    """Dashboard for signed-in people; sign-up for the very first visitor; else sign-in."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.signup" if not accounts.has_users() else "auth.login"))
    query = dashboard.Query.from_args(request.args)
    page = dashboard.dashboard(query, current_user.id)
    return render_template("main/index.html", page=page, query=page.query,
                           verdicts=dashboard.VERDICTS, lifecycles=dashboard.LIFECYCLE_CHOICES)


def _export_rows(*, trends: bool) -> list[dashboard.DashboardRow]:
    """Every row the dashboard's filters match, in its order (no pages)."""
    query = dashboard.Query.from_args(request.args)
    return dashboard.select_rows(query, current_user.id, trend_points=dashboard.TREND_POINTS if trends else 0,
                                 with_attention=True)


@bp.get("/dashboard.csv")
@login_required
def export_csv():
    """The dashboard's rows (same filters, search and order) as CSV."""
    stamp = utcnow().strftime("%Y%m%d-%H%M")
    return Response(dashboard.to_csv(_export_rows(trends=False)), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="preflight-dashboard-{stamp}.csv"'})


@bp.get("/dashboard.json")
@login_required
def export_json():
    """The dashboard's rows (same filters, search and order) as JSON."""
    rows = _export_rows(trends=True)
    return jsonify({"generated_at": utcnow().isoformat(), "count": len(rows),
                    "services": [row.to_json() for row in rows]})
