"""The checklist browser: every checklist, its categories, items and guidance."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from flask_login import current_user, login_required

from webapp import catalog
from webapp.extensions import db

bp = Blueprint("checklists", __name__, url_prefix="/checklists")


@bp.get("/")
@login_required
def index():
    """Every checklist offered for new assessments, and any file that failed to load."""
    problems = catalog.sync()
    db.session.commit()
    versions = catalog.latest_versions()
    return render_template("checklists/index.html", versions=versions,
                           checklists={v.id: catalog.checklist_of(v) for v in versions},
                           problems=problems if current_user.is_admin else problems[:0],
                           problem_count=len(problems))


@bp.get("/<slug>")
@login_required
def show(slug: str):
    """One checklist in full: categories, items, guidance, evidence examples, probes."""
    catalog.sync()
    db.session.commit()
    version = catalog.latest_version(slug)
    if version is None:
        abort(404, description=f"No checklist called “{slug}”.")
    return render_template("checklists/show.html", version=version, checklist=catalog.checklist_of(version))
