"""WTForms forms. Every form carries a CSRF token (Flask-WTF) and validates its input."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired,
    EqualTo,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from webapp.accounts import MIN_PASSWORD_LENGTH
from webapp.models import LIFECYCLES, ROLES

URL_MAX = 2048
# A shape check only: self-hosted installs use internal domains (.corp, .internal) that
# stricter validators refuse, and the invitation link proves the address anyway.
PASSWORD_LENGTH = Length(min=MIN_PASSWORD_LENGTH, max=200,
                         message=f"Password must be at least {MIN_PASSWORD_LENGTH} characters (at most 200).")
EMAIL = Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Invalid email address.")


def http_url(form, field) -> None:
    """Only absolute http(s) URLs with a host: no javascript:, data:, file: or relative links."""
    value = (field.data or "").strip()
    if not value:
        return
    field.data = value
    if any(ch.isspace() or ord(ch) < 32 for ch in value):
        raise ValidationError("A URL cannot contain spaces or control characters.")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter a full http:// or https:// URL.")


def choices(pairs) -> list[SelectChoice]:
    """(value, label) pairs as WTForms 3.3 SelectChoice objects (tuples are deprecated)."""
    return [SelectChoice(value, label) for value, label in pairs]


def url_field(label: str) -> StringField:
    return StringField(label, validators=[Optional(), Length(max=URL_MAX), http_url],
                       filters=[lambda v: v.strip() if v else None])


def _strip(value):
    return value.strip() if isinstance(value, str) else value


class SignupForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)], filters=[_strip])
    email = EmailField("Email", validators=[DataRequired(), EMAIL, Length(max=254)], filters=[_strip])
    password = PasswordField("Password", validators=[DataRequired(), PASSWORD_LENGTH])
    confirm = PasswordField("Repeat password", validators=[EqualTo("password", "Passwords do not match.")])


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=254)], filters=[_strip])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])
    remember = BooleanField("Keep me signed in")


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired()])
    password = PasswordField("New password", validators=[DataRequired(), PASSWORD_LENGTH])
    confirm = PasswordField("Repeat new password", validators=[EqualTo("password", "Passwords do not match.")])


class InviteForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), EMAIL, Length(max=254)], filters=[_strip])
    is_reviewer = BooleanField("Reviewer (may approve waivers and sign off)")


class AcceptInviteForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)], filters=[_strip])
    password = PasswordField("Password", validators=[DataRequired(), PASSWORD_LENGTH])
    confirm = PasswordField("Repeat password", validators=[EqualTo("password", "Passwords do not match.")])


class TeamForm(FlaskForm):
    name = StringField("Team name", validators=[DataRequired(), Length(max=80)], filters=[_strip])
    description = TextAreaField("Description", validators=[Length(max=2000)], filters=[_strip])


class MemberForm(FlaskForm):
    email = EmailField("Person's email", validators=[DataRequired(), Length(max=254)], filters=[_strip])
    role = SelectField("Role", choices=choices((r, r.title()) for r in ROLES), default="member")


class ServiceForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80)], filters=[_strip])
    slug = StringField(
        "Slug", description="Lower-case letters, digits and dashes; made from the name if empty.",
        validators=[Optional(), Length(max=80),
                    Regexp(r"^[a-z0-9][a-z0-9-]*$", message="Use lower-case letters, digits and dashes.")],
        filters=[_strip],
    )
    description = TextAreaField("Description", validators=[Length(max=5000)], filters=[_strip])
    tier = SelectField("Tier", coerce=int, default=2, choices=choices([
        (1, "Tier 1 — most critical"), (2, "Tier 2"), (3, "Tier 3 — least critical")]))
    lifecycle = SelectField("Lifecycle", default="planned",
                            choices=choices((v, v.title()) for v in LIFECYCLES))
    owner_id = SelectField("Owner", coerce=lambda v: int(v) if v not in (None, "", "None") else None)
    backup_owner_id = SelectField("Backup owner",
                                  coerce=lambda v: int(v) if v not in (None, "", "None") else None)
    oncall_url = url_field("On-call rotation URL")
    repository_url = url_field("Repository URL")
    dashboard_url = url_field("Dashboard URL")
    base_url = url_field("Base URL")
    health_url = url_field("Health URL")
    readiness_url = url_field("Readiness URL")
    deep_health_url = url_field("Deep health URL")
    metrics_url = url_field("Metrics URL")
    probe_interval_minutes = IntegerField("Probe interval (minutes)", default=15,
                                          validators=[InputRequired(), NumberRange(1, 1440)])

    def set_people(self, people) -> None:
        people_choices = choices([("", "— nobody —")] + [(u.id, f"{u.name} <{u.email}>") for u in people])
        self.owner_id.choices = people_choices
        self.backup_owner_id.choices = people_choices

    def values(self) -> dict:
        return {name: field.data for name, field in self._fields.items()
                if name not in ("csrf_token", "submit")}


class ConfirmForm(FlaskForm):
    """An empty form: a POST button that carries only the CSRF token."""




STATUS_CHOICES = [("met", "Met"), ("partial", "Partial"), ("not_met", "Not met"), ("n_a", "N/A")]


class StartAssessmentForm(FlaskForm):
    checklist = SelectField("Checklist", coerce=int)
    copy_previous = BooleanField("Re-assess: copy the answers of this service's latest assessment")


class AnswerForm(FlaskForm):
    status = SelectField("Status", choices=choices(STATUS_CHOICES), validators=[DataRequired()])
    note = TextAreaField("Note (markdown)", validators=[Length(max=20_000)])
    version = IntegerField("version", validators=[Optional()])


class EvidenceForm(FlaskForm):
    url = StringField("Link", validators=[DataRequired(), Length(max=URL_MAX), http_url])
    title = StringField("Title", validators=[Length(max=200)], filters=[_strip])


class WaiverForm(FlaskForm):
    reason = TextAreaField("Why the gap is acceptable for now", validators=[DataRequired(), Length(max=5000)])
    compensating_control = TextAreaField("Compensating control", validators=[DataRequired(), Length(max=5000)])
    risk_owner_id = SelectField("Risk owner", coerce=int)
    expires_on = DateField("Expires on", validators=[DataRequired(message="Pick an expiry date.")])


class WaiverDecisionForm(FlaskForm):
    decision = SelectField("Decision", choices=choices([("approve", "Approve"), ("decline", "Decline")]))


class UpgradeForm(FlaskForm):
    version = HiddenField()


class RunbookForm(FlaskForm):
    body = TextAreaField("Runbook (markdown)", validators=[Length(max=100_000)])
    based_on = IntegerField("based on", validators=[Optional()])


class RunbookLinkForm(FlaskForm):
    runbook_url = url_field("External runbook URL")


class HandOverForm(FlaskForm):
    new_owner_id = SelectField("New owner of the services they own", coerce=int)
    new_backup_id = SelectField("New backup owner of the services they back up", coerce=int)
    disable = BooleanField("Then disable the account")
