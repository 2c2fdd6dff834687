"""WTForms forms. Every form carries a CSRF token (Flask-WTF) and validates its input."""

from __future__ import annotations

import unicodedata
from urllib.parse import urlsplit

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from sqlalchemy import select
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    FieldList,
    FormField,
    HiddenField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    AnyOf,
    DataRequired,
    EqualTo,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)

from webapp.accounts import MIN_PASSWORD_LENGTH, normalise_email
from webapp.extensions import db
from webapp.models import LIFECYCLES, ROLES, Invitation, utcnow
from webapp.probes.fetch import AddressPolicy, hostname_blocked_reason
from webapp.registry import slugify

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
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:  # a port that is not a number from 0 to 65535, an unclosed [
        raise ValidationError("This URL's host or port is malformed (a port is a number from 1 to 65535).") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter a full http:// or https:// URL.")
    if port == 0:
        raise ValidationError("A port is a number from 1 to 65535.")
    if parts.username is not None or parts.password is not None:
        # Everyone who can see the link would see them, and probes never send them.
        raise ValidationError("A URL cannot carry a user name or password (user:password@): "
                              "everyone who can see it would see them.")


def probe_target(form, field) -> None:
    """Refuse a probe URL the probe policy always refuses, whatever PROBE_ALLOW_NETWORKS says:
    link-local and cloud metadata addresses and names. Only literal IPs and known metadata
    names are judged here (no DNS lookup in a form); the probe re-checks every address."""
    value = field.data
    if not value:
        return
    try:
        host = urlsplit(value).hostname or ""
    except ValueError:
        return  # http_url has said what is wrong
    reason = hostname_blocked_reason(host)
    if reason is None:
        ip_reason = AddressPolicy().blocked_reason(host)
        if ip_reason is not None and AddressPolicy().is_always_blocked(host):
            reason = ip_reason.removesuffix("; always blocked")
    if reason is not None:
        raise ValidationError(f"Probes never fetch this address: {reason}. They refuse it to protect "
                              "cloud credentials; use the address people reach it at.")


def choices(pairs) -> list[SelectChoice]:
    """(value, label) pairs as WTForms 3.3 SelectChoice objects (tuples are deprecated)."""
    return [SelectChoice(value, label) for value, label in pairs]


def url_field(label: str, *, probed: bool = False) -> StringField:
    checks = [Optional(), Length(max=URL_MAX), http_url] + ([probe_target] if probed else [])
    return StringField(label, validators=checks, filters=[lambda v: v.strip() if v else None])


def _makes_slug(name: str) -> bool:
    """Whether a name yields a slug of its own (emoji are spelt out), not the "item" fallback."""
    return slugify(name) != "item" or "item" in name.lower()


def _strip(value):
    return value.strip() if isinstance(value, str) else value


# Bidirectional embeddings, overrides and isolates: in a name they make the text read
# differently from what it is ("Trojan Source"). Joiners (emoji sequences) stay allowed.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def printable_name(form, field) -> None:
    """A name holds no control characters and no bidirectional overrides."""
    if field.data and any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in field.data):
        raise ValidationError("Use visible characters only (no control or text-direction characters).")


class SignupForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120), printable_name], filters=[_strip])
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

    def validate_email(self, field) -> None:
        """Say so when the address already has a working invitation, instead of a second link."""
        open_one = db.session.scalar(select(Invitation).where(
            Invitation.email == normalise_email(field.data or ""), Invitation.used_at.is_(None),
            Invitation.expires_at > utcnow()).order_by(Invitation.created_at.desc()).limit(1))
        if open_one is not None:
            raise ValidationError(f"{open_one.email} already has an open invitation (created "
                                  f"{open_one.created_at:%Y-%m-%d}, expires {open_one.expires_at:%Y-%m-%d}). "
                                  "The link sent then still works.")


class ProfileForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120), printable_name], filters=[_strip],
                       description="How others see you: on answers, sign-offs and in the audit log.")


class AcceptInviteForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120), printable_name], filters=[_strip])
    password = PasswordField("Password", validators=[DataRequired(), PASSWORD_LENGTH])
    confirm = PasswordField("Repeat password", validators=[EqualTo("password", "Passwords do not match.")])


class TeamForm(FlaskForm):
    name = StringField("Team name", validators=[DataRequired(), Length(max=80), printable_name], filters=[_strip])
    description = TextAreaField("Description", validators=[Length(max=2000)], filters=[_strip])

    def validate_name(self, field) -> None:
        if field.data and not _makes_slug(field.data):
            raise ValidationError("A team name needs a letter, a digit or an emoji: it makes the team's "
                                  "address.")


class MemberForm(FlaskForm):
    email = EmailField("Person's email", validators=[DataRequired(), EMAIL, Length(max=254)], filters=[_strip])
    role = SelectField("Role", choices=choices((r, r.title()) for r in ROLES), default="member")


class ServiceForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80), printable_name], filters=[_strip])
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
    base_url = url_field("Base URL", probed=True)
    health_url = url_field("Health URL", probed=True)
    readiness_url = url_field("Readiness URL", probed=True)
    deep_health_url = url_field("Deep health URL", probed=True)
    metrics_url = url_field("Metrics URL", probed=True)
    probe_interval_minutes = IntegerField("Probe interval (minutes)", default=15,
                                          validators=[InputRequired(), NumberRange(1, 1440)])

    def validate_name(self, field) -> None:
        """A name with nothing to spell a slug from (invisible or unnamed characters): ask for one.
        (On the name: the slug field's Optional() ends its own checks when it is empty.)"""
        if not self.slug.data and field.data and not _makes_slug(field.data):
            raise ValidationError(f"“{field.data}” has nothing to make the service's address from: "
                                  "enter a slug below, e.g. payments-api.")

    def validate_backup_owner_id(self, field) -> None:
        """Said here, under the backup owner, rather than by the registry (which the API also
        uses) beside whichever field the view would pin it to."""
        if field.data and field.data == self.owner_id.data:
            raise ValidationError("The backup owner must be someone other than the owner.")

    def set_people(self, people) -> None:
        people_choices = choices([("", "— nobody —")] + [(u.id, f"{u.name} <{u.email}>") for u in people])
        self.owner_id.choices = people_choices
        self.backup_owner_id.choices = people_choices

    def values(self) -> dict:
        return {name: field.data for name, field in self._fields.items()
                if name not in ("csrf_token", "submit")}


class ConfirmForm(FlaskForm):
    """An empty form: a POST button that carries only the CSRF token."""


class FeatureFlagForm(FlaskForm):
    """Switch one feature flag: the new state and why (kept with the flag and in the audit)."""

    enabled = StringField("State", validators=[AnyOf(["on", "off"], message="State must be on or off.")])
    note = StringField("Why", validators=[Optional(), Length(max=200)])




STATUS_CHOICES = [("met", "Met"), ("partial", "Partial"), ("not_met", "Not met"), ("n_a", "N/A")]


class StartAssessmentForm(FlaskForm):
    checklist = SelectField("Checklist", coerce=int)
    copy_from = SelectField(
        "Copy answers from", coerce=int, default=0,
        description="Statuses, notes, evidence and approved waivers that have not expired carry over by "
                    "item key. Probe-backed items start from the probes' latest results unless a person "
                    "answered them.")


class AnswerForm(FlaskForm):
    status = SelectField("Status", choices=choices(STATUS_CHOICES), validators=[DataRequired()])
    note = TextAreaField("Note (markdown)", validators=[Length(max=20_000)])
    version = IntegerField("version", validators=[Optional()])


class EvidenceForm(FlaskForm):
    url = StringField("Link", validators=[DataRequired(), Length(max=URL_MAX), http_url, probe_target])  # link checks fetch it
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
    runbook_url = url_field("External runbook URL", probed=True)  # the runbook_link check fetches it


class HandOverForm(FlaskForm):
    new_owner_id = SelectField("New owner of the services they own", coerce=int)
    new_backup_id = SelectField("New backup owner of the services they back up", coerce=int)
    disable = BooleanField("Then disable the account")

# Review and sign-off (webapp/reviews.py) ------------------------------------------------

class ConditionForm(FlaskForm):
    class Meta:
        csrf = False  # a sub-form: the outer form carries the token

    text = StringField("Condition", validators=[Optional(), Length(max=500)], filters=[_strip])
    # Rows left blank are skipped; the view checks a filled row names a real person.
    owner_id = SelectField("Owner", coerce=lambda v: int(v) if v not in (None, "", "None") else None,
                           validate_choice=False)
    due_on = DateField("Due date", validators=[Optional()])


class ItemCommentForm(FlaskForm):
    class Meta:
        csrf = False

    item_key = SelectField("Item", validate_choice=False)  # reviews.decide checks the key
    text = StringField("Comment", validators=[Optional(), Length(max=2000)], filters=[_strip])


class SignOffForm(FlaskForm):
    role = SelectField("Signing as")
    decision = SelectField("Decision", choices=choices([
        ("approve", "Approve"), ("approve_with_conditions", "Approve with conditions"),
        ("reject", "Reject (back to draft)")]))
    comment = TextAreaField("Comment", validators=[Length(max=10_000)])
    present = StringField("Present in the room", validators=[Optional(), Length(max=2000)],
                          filters=[_strip], description="Names of the people who took the decision with you.")
    conditions = FieldList(FormField(ConditionForm), min_entries=3, max_entries=20)
    item_comments = FieldList(FormField(ItemCommentForm), min_entries=3, max_entries=50)

    def set_choices(self, roles, people, items) -> None:
        self.role.choices = choices((r, r) for r in roles)
        people_choices = choices([("", "— owner —")] + [(u.id, u.name) for u in people])
        item_choices = choices([("", "— item —")] + [(i.key, i.title) for i in items])
        for entry in self.conditions:
            entry.form.owner_id.choices = people_choices
        for entry in self.item_comments:
            entry.form.item_key.choices = item_choices


class ReviewerRolesForm(FlaskForm):
    roles = SelectMultipleField("Reviewer roles")


class VerifyReportForm(FlaskForm):
    pdf = FileField("Report PDF")
    sha256 = StringField("…or its SHA-256", validators=[Optional(), Length(max=100)], filters=[_strip])
