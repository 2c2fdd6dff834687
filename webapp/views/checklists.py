"""The checklist browser: every checklist, its categories, items and guidance; and the
admin's "Reload checklist files" button."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp import catalog
from webapp.extensions import db
from webapp.forms import ConfirmForm
from webapp.permissions import require

bp = Blueprint("checklists", __name__, url_prefix="/checklists")


@bp.get("/")
@login_required
def index():
    """Every checklist offered for new assessments, and any file that failed to load. Reads
    what the last sync stored; loading files is a write, done by `reload` and the worker."""
    versions = catalog.latest_versions()
    problems = catalog.current_problems() if current_user.is_admin else []
    return render_template("checklists/index.html", versions=versions,
                           checklists={v.id: catalog.checklist_of(v) for v in versions},
                           problems=problems, refused_count=catalog.refused_count(),
                           reload_form=ConfirmForm())


@bp.post("/reload")
@login_required
def reload():
    """Load changed checklist files now instead of waiting for the worker (admins)."""
    require(current_user.is_admin)
    if not ConfirmForm().validate_on_submit():
        flash("Your form expired; try again.", "error")
        return redirect(url_for("checklists.index"))
    before = {v.slug: v.content_hash for v in catalog.latest_versions()}
    problems = catalog.sync(force=True)
    db.session.commit()
    changed = [v for v in catalog.latest_versions() if before.get(v.slug) != v.content_hash]
    if problems:
        flash(f"{len(problems)} problem{'' if len(problems) == 1 else 's'} in checklist files; "
              "the last good versions keep serving.", "warning")
    elif changed:
        flash("Loaded " + ", ".join(f"{v.title} v{v.version}" for v in changed) + ".", "success")
    else:
        flash("Checklist files reloaded: nothing changed.", "success")
    return redirect(url_for("checklists.index"))


@bp.get("/<slug>")
@login_required
def show(slug: str):
    """One checklist in full: categories, items, guidance, evidence examples, probes."""
    version = catalog.latest_version(slug)
    if version is None:
        abort(404, description=f"No checklist called “{slug}”.")
    return render_template("checklists/show.html", version=version, checklist=catalog.checklist_of(version))
