"""Sign up, sign in, sign out, change password, invitations, and the admin's user list."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from webapp import accounts
from webapp.extensions import db, limiter
from webapp.forms import (
    AcceptInviteForm,
    ChangePasswordForm,
    InviteForm,
    LoginForm,
    ProfileForm,
    SignupForm,
)
from webapp.models import Invitation, User
from webapp.permissions import require

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """Only same-site paths: never //evil.example or https://evil.example (open redirect)."""
    if target:
        parts = urlsplit(target.replace("\\", "/"))
        if not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
            return target
    return url_for("main.index")


def signup_open() -> bool:
    return not accounts.has_users() or current_app.config["ALLOW_SIGNUP"]


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit("10/minute", methods=["POST"])
def signup():
    """Open sign-up: always for the first person (who becomes admin), else only if allowed."""
    if not signup_open():
        abort(403, description="Sign-up is closed. Ask an admin for an invitation link.")
    first = not accounts.has_users()
    form = SignupForm()
    if form.validate_on_submit():
        try:
            user = accounts.create_user(form.email.data, form.name.data, form.password.data)
        except accounts.AccountError as exc:
            form.email.errors.append(str(exc))
        else:
            db.session.commit()
            login_user(user)
            flash("Welcome to Preflight. You are the admin." if user.is_admin else "Welcome to Preflight.", "success")
            return redirect(url_for("main.index"))
    return render_template("auth/signup.html", form=form, first=first), 400 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit("20/minute", methods=["POST"])
def login():
    """Sign in with email and password; `next=` is honoured only for same-site paths."""
    if not accounts.has_users():
        return redirect(url_for("auth.signup"))
    form = LoginForm()
    if form.validate_on_submit():
        user = accounts.user_by_email(form.email.data)
        if user is None or not user.check_password(form.password.data) or not user.is_active:
            # One message for every failure, so the form does not reveal which emails exist.
            form.password.errors.append("Email or password is not right, or the account is disabled.")
        else:
            login_user(user, remember=form.remember.data)
            return redirect(safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form,
                           signup_open=signup_open()), 400 if form.errors else 200


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Sign out (POST with CSRF, so a link on another site cannot sign people out)."""
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    """Change one's own password."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            accounts.change_password(current_user, form.current.data, form.password.data)
        except accounts.AccountError as exc:
            form.current.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Password changed.", "success")
            return redirect(url_for("main.index"))
    return render_template("auth/password.html", form=form), 400 if form.errors else 200


@bp.route("/admin/users", methods=["GET", "POST"])
@login_required
def users():
    """Admins: everyone's accounts, and invitations by one-time link."""
    require(current_user.is_admin)
    form = InviteForm()
    link = None
    if form.validate_on_submit():
        try:
            _, token = accounts.create_invitation(form.email.data, current_user,
                                                  is_reviewer=form.is_reviewer.data)
        except accounts.AccountError as exc:
            form.email.errors.append(str(exc))
        else:
            db.session.commit()
            link = url_for("auth.accept_invitation", token=token, _external=True)
            flash("Invitation created. Send this link to the person; it works once, for 7 days.", "success")
            form = InviteForm(formdata=None)  # the form starts empty again for the next person
    people = db.session.scalars(select(User).order_by(User.name)).all()
    invitations = db.session.scalars(
        select(Invitation).where(Invitation.used_at.is_(None)).order_by(Invitation.created_at.desc())
    ).all()
    return render_template("auth/users.html", form=form, people=people, invitations=invitations,
                           link=link), 400 if form.errors else 200


@bp.route("/invite/<token>", methods=["GET", "POST"])
@limiter.limit("20/minute", methods=["POST"])
def accept_invitation(token: str):
    """Create an account from a one-time invitation link."""
    invitation = accounts.find_invitation(token)
    if invitation is None:
        abort(404, description="This invitation link is unknown, used or expired. Ask for a new one.")
    form = AcceptInviteForm()
    if form.validate_on_submit():
        try:
            user = accounts.accept_invitation(invitation, form.name.data, form.password.data)
        except accounts.AccountError as exc:
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            login_user(user)
            flash("Welcome to Preflight.", "success")
            return redirect(url_for("main.index"))
    return render_template("auth/accept.html", form=form, invitation=invitation), 400 if form.errors else 200


@bp.route("/account/profile", methods=["GET", "POST"])
@login_required
def profile():
    """One's own name (and where to change the password)."""
    form = ProfileForm(obj=current_user) if request.method == "GET" else ProfileForm()
    if form.validate_on_submit():
        try:
            accounts.rename_user(current_user, form.name.data, current_user)
        except accounts.AccountError as exc:
            form.name.errors.append(str(exc))
        else:
            db.session.commit()
            flash("Your name is saved.", "success")
            return redirect(url_for("auth.profile"))
    return render_template("auth/profile.html", form=form), 400 if form.errors else 200
