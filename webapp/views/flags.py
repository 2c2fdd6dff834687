"""Admins switch risky features off and on at run time (webapp/flags.py)."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp import flags
from webapp.extensions import db
from webapp.forms import FeatureFlagForm
from webapp.permissions import require

bp = Blueprint("flags", __name__)


@bp.get("/admin/flags")
@login_required
def index():
    """Every flag, its state, who changed it last and why."""
    require(current_user.is_admin)
    return render_template("flags/index.html", rows=flags.listing(),
                           cache_seconds=current_app.config["FEATURE_FLAG_CACHE_SECONDS"])


@bp.post("/admin/flags/<key>")
@login_required
def switch(key: str):
    """Switch one flag; audited; in force everywhere within the flag cache interval."""
    require(current_user.is_admin)
    if key not in flags.FLAGS:
        abort(404, description=f"There is no feature flag {key!r}.")
    form = FeatureFlagForm()
    if not form.validate_on_submit():
        flash("The flag was not changed: " + "; ".join(e for errors in form.errors.values() for e in errors), "error")
        return redirect(url_for("flags.index"))
    on = form.enabled.data == "on"
    if flags.set_flag(key, on, current_user, form.note.data or ""):
        db.session.commit()
        flash(f"{flags.FLAGS[key].title} is now {'on' if on else 'off'}.", "success")
    else:
        flash(f"{flags.FLAGS[key].title} was already {'on' if on else 'off'}.", "info")
    return redirect(url_for("flags.index"))
