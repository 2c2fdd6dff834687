"""The API's request and response shapes. The same pydantic models validate requests, build
responses and generate the OpenAPI document (webapp/api/spec.py), so the three cannot drift.

Input rules that already exist elsewhere are reused, not restated: URLs go through the web
forms' `http_url` check, and domain rules (unique slugs, owners, waiver limits) stay in
webapp/registry.py and webapp/assessments.py, which the views call.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from wtforms.validators import ValidationError as FormValidationError

from webapp.forms import http_url, printable_name, probe_target

MAX_INT = 2**31 - 1  # PostgreSQL integer columns


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail at the database.
    if "\x00" in value:
        raise ValueError("Text cannot contain NUL characters.")
    return value


def _form_rule(rule):
    """A web form's field check (WTForms validator) as a pydantic one, reused as is."""
    def check(value: str | None) -> str | None:
        if value is None:
            return None

        class _Field:
            data = value

        try:
            rule(None, _Field)
        except FormValidationError as exc:
            raise ValueError(str(exc)) from None
        return _Field.data or None

    return check


_http_url = _form_rule(http_url)  # absolute http/https with a host, no spaces, no credentials
_probe_target = _form_rule(probe_target)  # never a link-local or cloud metadata address


def _utc(value: datetime) -> datetime:
    """Naive means UTC; anything outside 1970-9998 is refused rather than overflowing later."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not 1970 <= value.year <= 9998:
        raise ValueError("Give a time between 1970 and 9998.")
    return value.astimezone(UTC)


def text(**constraints):
    """Text with length constraints and no NUL. The constraints come first: after a validator
    pydantic words them as for a list ("at most 5000 items after validation")."""
    return Annotated[str, StringConstraints(**constraints), AfterValidator(_no_nul)]


Moment = Annotated[datetime, AfterValidator(_utc)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80),
                 AfterValidator(_no_nul), AfterValidator(_form_rule(printable_name))]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=80)]
# The pattern documents the shape for clients (and fuzzers); `http_url` stays the rule.
Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2048),
                Field(json_schema_extra={"pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+[^\s]*$",
                                         "format": "uri"}),
                AfterValidator(_no_nul), AfterValidator(_http_url)]
ProbeUrl = Annotated[Url, AfterValidator(_probe_target)]  # a URL the probes fetch
Email = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=254,
                                         pattern=r"^[^@\s]+@[^@\s]+$"), AfterValidator(_no_nul)]
Lifecycle = Literal["planned", "launching", "live", "retired"]
Status = Literal["met", "partial", "not_met", "n_a"]
Verdict = Literal["ready", "ready_with_conditions", "not_ready"]
Outcome = Literal["pass", "warn", "fail", "error"]


class Input(BaseModel):
    """Request bodies: unknown fields are refused, so a typo never passes silently; values are
    taken strictly as JSON types (`"tier": true` is not tier 1, a timestamp is not a date)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, strict=True)


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# Errors ---------------------------------------------------------------------------------

class FieldError(Output):
    field: str = Field(description="The invalid field, dotted for nested ones.")
    pointer: str | None = Field(None, description="JSON pointer into the request body.")
    detail: str


class Problem(Output):
    """RFC 9457 problem details."""

    type: str = Field(description="A link to this kind of problem's explanation, or about:blank.")
    title: str
    status: int
    detail: str
    request_id: str | None = None
    errors: list[FieldError] | None = Field(None, description="Each invalid field (validation problems).")


# Pagination -----------------------------------------------------------------------------

T = TypeVar("T")


class Page(Output, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last.")


class PageQuery(Query):
    limit: int = Field(50, ge=1, le=100, description="Items per page.")
    cursor: Annotated[str, StringConstraints(max_length=200, pattern=r"^[A-Za-z0-9_-]*$")] | None = Field(
        None, description="The `next_cursor` of the previous page.")


# Teams ----------------------------------------------------------------------------------

class TeamIn(Input):
    name: Name
    description: text(max_length=2000) = ""


class TeamPatch(Input):
    name: Name | None = None
    description: text(max_length=2000) | None = None


class TeamOut(Output):
    slug: str
    name: str
    description: str
    created_at: datetime


class TeamPage(Page[TeamOut]):
    pass


# Services -------------------------------------------------------------------------------

class _ServiceFields(Input):
    description: text(max_length=5000) | None = None
    tier: int | None = Field(None, ge=1, le=3, description="1 = most critical.")
    lifecycle: Lifecycle | None = None
    owner: Email | None = Field(None, description="The owner's account email.")
    backup_owner: Email | None = Field(None, description="The backup owner's account email.")
    oncall_url: Url | None = None
    repository_url: Url | None = None
    dashboard_url: Url | None = None
    base_url: ProbeUrl | None = None
    health_url: ProbeUrl | None = None
    readiness_url: ProbeUrl | None = None
    deep_health_url: ProbeUrl | None = None
    metrics_url: ProbeUrl | None = None
    probe_interval_minutes: int | None = Field(None, ge=1, le=1440)


class ServiceIn(_ServiceFields):
    name: Name
    slug: Slug | None = Field(None, description="Made from the name when left out.")


class ServicePatch(_ServiceFields):
    """Only the fields sent change; send null to clear an optional field."""

    name: Name | None = None
    slug: Slug | None = None


class ServiceOut(Output):
    team: str
    slug: str
    name: str
    description: str
    tier: int
    lifecycle: Lifecycle
    owner: str | None
    backup_owner: str | None
    oncall_url: str | None
    repository_url: str | None
    dashboard_url: str | None
    base_url: str | None
    health_url: str | None
    readiness_url: str | None
    deep_health_url: str | None
    metrics_url: str | None
    probe_interval_minutes: int
    created_at: datetime
    updated_at: datetime
    retired_at: datetime | None


class ServicePage(Page[ServiceOut]):
    pass


class ServiceQuery(PageQuery):
    team: Annotated[str, StringConstraints(max_length=80)] | None = Field(None, description="A team slug.")
    lifecycle: Lifecycle | None = None
    include_retired: bool = Field(False, description="Retired services are left out unless true.")


# Assessments ----------------------------------------------------------------------------

class AssessmentStart(Input):
    checklist: text(max_length=80) = Field(
        "production-readiness", description="A checklist slug; its newest version is used.")
    copy_previous: bool = Field(False, description="Re-assess: carry the latest assessment's answers over.")


class AssessmentSummary(Output):
    id: int
    team: str
    service: str
    checklist: str
    checklist_version: str
    state: Literal["draft", "in_review", "signed_off", "rejected", "superseded"]
    score: float
    verdict: Verdict
    answered_pct: float
    unanswered_count: int
    blocker_count: int
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime | None
    scored_at: datetime | None


class AssessmentPage(Page[AssessmentSummary]):
    pass


class EvidenceOut(Output):
    id: int
    url: str
    title: str
    added_by: str | None
    added_at: datetime
    checked_at: datetime | None
    check_ok: bool | None


class WaiverOut(Output):
    id: int
    item_key: str
    state: Literal["requested", "approved", "declined"]
    reason: str
    compensating_control: str
    risk_owner: str
    expires_on: date
    requested_by: str
    requested_at: datetime
    approved_by: str | None
    decided_at: datetime | None


class ItemOut(Output):
    key: str
    title: str
    category: str
    critical: bool
    weight: int
    applies: bool = Field(description="False when the item does not apply to the service's tier.")
    probe: str | None = Field(description="The probe check that answers this item, if any.")
    status: Status | None
    note: str
    source: Literal["manual", "probe"]
    answered_by: str | None
    answered_at: datetime | None
    etag: str = Field(description="Send as If-Match when setting this item's answer.")
    evidence: list[EvidenceOut]
    waivers: list[WaiverOut]


class CategoryOut(Output):
    key: str
    score: float | None
    answered: int
    applicable: int


class AssessmentOut(AssessmentSummary):
    categories: list[CategoryOut]
    items: list[ItemOut]


class AnswerIn(Input):
    status: Status | None = Field(description="null clears the answer.")
    note: text(max_length=20_000) = Field(
        "", description="Markdown. Required for n_a and to override a probe's answer.")


class AnswerOut(Output):
    assessment: AssessmentSummary
    item: ItemOut


class EvidenceIn(Input):
    url: ProbeUrl  # the link check fetches it
    title: text(max_length=200) = ""


class EvidenceCreated(Output):
    evidence: EvidenceOut
    item_key: str
    assessment_id: int


class WaiverIn(Input):
    reason: text(min_length=1, max_length=5000)
    compensating_control: text(min_length=1, max_length=5000)
    risk_owner: Email = Field(description="The risk owner's account email.")
    expires_on: date


class WaiverDecisionIn(Input):
    decision: Literal["approve", "decline"]


# Probes ---------------------------------------------------------------------------------

class ProbeResultOut(Output):
    id: int
    kind: str
    url: str
    outcome: Outcome
    status_code: int | None
    latency_ms: float | None
    error_code: str | None
    explanation: str
    started_at: datetime
    finished_at: datetime | None


class ProbeRunOut(Output):
    id: int
    team: str
    service: str
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    results: list[ProbeResultOut]


class CheckOut(Output):
    kind: str
    outcome: Outcome
    checked_at: datetime
    changed_at: datetime = Field(description="When the outcome last changed.")
    result_id: int | None


class CheckList(Output):
    team: str
    service: str
    checks: list[CheckOut]


# Readiness and reports ------------------------------------------------------------------

class ReportOut(Output):
    id: int
    assessment_id: int
    team: str
    service: str
    sha256: str
    size_bytes: int
    created_at: datetime
    download_url: str


class ReportPage(Page[ReportOut]):
    pass


class ReportQuery(PageQuery):
    team: Annotated[str, StringConstraints(max_length=80)] | None = None
    service: Annotated[str, StringConstraints(max_length=80)] | None = Field(
        None, description="A service slug (with `team`).")


class FailingCritical(Output):
    key: str
    title: str
    status: Status | None


class Readiness(Output):
    team: str
    service: str
    tier: int
    lifecycle: Lifecycle
    verdict: Literal["ready", "ready_with_conditions", "not_ready", "not_assessed"]
    ready: bool = Field(description="True only when the verdict is ready: gate deploys on this.")
    score: float | None
    answered_pct: float | None
    unanswered_count: int | None
    blocker_count: int | None
    scored_at: datetime | None
    assessment: AssessmentSummary | None
    failing_criticals: list[FailingCritical]
    signed_off_report: ReportOut | None = Field(
        description="The latest report of the latest signed-off assessment, with its SHA-256.")
    checks: list[CheckOut]


class VerifyIn(Input):
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]


class VerifyOut(Output):
    match: bool
    sha256: str
    report: ReportOut | None
    signature_checked: bool = Field(
        description="True when a PDF was sent: its PAdES signature was validated against this "
                    "instance's certificate (and `match` requires it valid). False when only a "
                    "SHA-256 was sent: the match is then by the stored file's hash alone.")
    detail: str


# Audit ----------------------------------------------------------------------------------

class AuditQuery(PageQuery):
    since: Moment | None = Field(None, description="Events at or after this time (ISO 8601).")
    until: Moment | None = Field(None, description="Events before this time (ISO 8601).")
    object_type: Annotated[str, StringConstraints(max_length=40)] | None = Field(
        None, description="e.g. service, answer, waiver, evidence, token.")
    object_id: int | None = Field(None, ge=1, le=MAX_INT)
    action: Annotated[str, StringConstraints(max_length=60)] | None = None
    team: Annotated[str, StringConstraints(max_length=80)] | None = None
    service: Annotated[str, StringConstraints(max_length=80)] | None = Field(
        None, description="A service slug (with `team`).")


class AuditEventOut(Output):
    id: int
    at: datetime
    actor: str | None
    action: str
    object_type: str
    object_id: int | None
    team: str | None
    service: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    request_id: str | None


class AuditPage(Page[AuditEventOut]):
    pass


# Who am I -------------------------------------------------------------------------------

class TokenOut(Output):
    name: str
    prefix: str
    scopes: list[Literal["read", "write", "probe"]]
    team: str | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class Me(Output):
    email: str
    name: str
    is_admin: bool
    is_reviewer: bool
    token: TokenOut
