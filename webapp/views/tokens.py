"""API tokens in the browser: your personal tokens, a team's tokens, make one (its secret is shown
once, on the response to the POST, never stored or flashed), revoke one."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from webapp import tokens
from webapp.extensions import db
from webapp.forms import ConfirmForm, choices
from webapp.models import ApiToken, Team, utcnow
from webapp.permissions import can_manage_team, require

bp = Blueprint("tokens", __name__)

SCOPE_HELP = [("read", "read — readiness, services, assessments, reports, audit"),
              ("write", "write — register services, answer items, add evidence, waivers"),
              ("probe", "probe — trigger probe runs")]
EXPIRY_CHOICES = [("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("180", "180 days"),
                  ("366", "1 year")]


class TokenForm(FlaskForm):
    name = StringField("Name", description="What uses it, e.g. “deploy gate” or “catalogue sync”.",
                       validators=[DataRequired(), Length(max=80)],
                       filters=[lambda v: v.strip() if isinstance(v, str) else v])
    scopes = SelectMultipleField("Scopes", choices=choices(SCOPE_HELP), default=["read"],
                                 widget=ListWidget(prefix_label=False), option_widget=CheckboxInput(),
                                 validators=[DataRequired(message="Pick at least one scope.")])
    expires = SelectField("Expires after", choices=choices(EXPIRY_CHOICES), default="90")


def _respond(template: str, form: TokenForm, secret: str | None, status: int = 200, **context):
    response = render_template(template, form=form, secret=secret, confirm_form=ConfirmForm(),
                               now=utcnow(), **context)
    # The secret is on this page only: never cache it.
    return response, status, {"Cache-Control": "no-store"}


@bp.route("/account/tokens", methods=["GET", "POST"])
@login_required
def mine():
    """Your personal API tokens; they act as you, with the scopes you pick."""
    form = TokenForm()
    secret = None
    if form.validate_on_submit():
        try:
            _, secret = tokens.create_token(current_user, form.name.data, form.scopes.data,
                                            int(form.expires.data))
        except tokens.TokenError as exc:
            db.session.rollback()
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            form = TokenForm(formdata=None)
    return _respond("tokens/mine.html", form, secret, 400 if form.errors else 200,
                    token_list=tokens.personal_tokens(current_user))


@bp.route("/teams/<int:team_id>/tokens", methods=["GET", "POST"])
@login_required
def team(team_id: int):
    """A team's API tokens (maintainers): for pipelines that outlive any one person's laptop."""
    row = db.get_or_404(Team, team_id)
    require(can_manage_team(current_user, row))
    form = TokenForm()
    secret = None
    if form.validate_on_submit():
        try:
            _, secret = tokens.create_token(current_user, form.name.data, form.scopes.data,
                                            int(form.expires.data), team=row)
        except tokens.TokenError as exc:
            db.session.rollback()
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            form = TokenForm(formdata=None)
    return _respond("tokens/team.html", form, secret, 400 if form.errors else 200,
                    team=row, token_list=tokens.team_tokens(row))


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke(token_id: int):
    """Revoke a token at once (its owner, an admin, or a maintainer of its team)."""
    token = db.get_or_404(ApiToken, token_id)
    require(tokens.can_revoke(current_user, token))
    back = (url_for("tokens.team", team_id=token.team_id) if token.team_id
            else url_for("tokens.mine"))
    if not ConfirmForm().validate_on_submit():
        flash("Your form expired; try again.", "error")
        return redirect(back)
    try:
        tokens.revoke_token(token, current_user)
    except tokens.TokenError as exc:
        flash(str(exc), "error")
    else:
        db.session.commit()
        flash(f"Token “{token.name}” revoked. Requests with it now get 401.", "success")
    return redirect(back)
