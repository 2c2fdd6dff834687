"""/api/v1: the JSON API for pipelines. Each view reads load → authorise → validate → call the
same logic as the web views (registry, assessments, probes.runs) → commit → respond."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time

from flask import Blueprint, Flask, Response, current_app, g, render_template, request, url_for
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload
from sqlalchemy.orm.exc import StaleDataError

from webapp import assessments, catalog, flags, registry
from webapp.accounts import user_by_email
from webapp.api import schemas as s
from webapp.api.auth import authenticate_request, rate_limit_key, rate_limit_value
from webapp.api.problems import (
    ApiProblem,
    from_api_problem,
    problem_response,
)
from webapp.api.spec import Api, Reply
from webapp.extensions import csrf, db, limiter
from webapp.models import (
    Answer,
    ApiToken,
    Assessment,
    AuditEvent,
    Evidence,
    ProbeRun,
    Report,
    Service,
    ServiceCheck,
    Team,
    User,
    Waiver,
)
from webapp.permissions import can_edit_services, can_manage_team, can_review
from webapp.probes import runs

bp = Blueprint("api", __name__, url_prefix="/api/v1")
api = Api(bp, "Preflight API", "1.0.0",
          "Gate deploys on readiness, push evidence from CI and sync your service catalogue. "
          "Authenticate with `Authorization: Bearer pft_…`. Errors are RFC 9457 problem details; "
          "lists page with `cursor`; updates need `If-Match`.")
bp.before_request(authenticate_request)


@bp.before_request
def writes_switched_on() -> None:
    """The `api_writes` kill switch (webapp/flags.py): reads go on, changes answer 503.
    Verifying a report is a POST (it sends the file) but changes nothing: it goes on too."""
    if (request.method not in ("GET", "HEAD", "OPTIONS") and request.endpoint != "api.verify_report"
            and not flags.enabled("api_writes")):
        raise ApiProblem(503, flags.FLAGS["api_writes"].when_off, kind="switched-off",
                         title="Switched off", headers={"Retry-After": "60"})


bp.register_error_handler(ApiProblem, from_api_problem)
# Every operation, per token (429 + Retry-After when exceeded).
limiter.limit(rate_limit_value, key_func=rate_limit_key)(bp)


def register(app: Flask) -> None:
    """Defaults, CSRF exemption (bearer tokens only: see webapp/api/auth.py) and the blueprint."""
    app.config.setdefault("API_RATE_LIMIT", os.environ.get("API_RATE_LIMIT") or "300/minute")
    app.config.setdefault("API_MAX_BODY_BYTES", 256 * 1024)
    app.config.setdefault("API_MAX_UPLOAD_BYTES", 32 * 1024 * 1024)
    csrf.exempt(bp)
    app.register_blueprint(bp)


# Helpers --------------------------------------------------------------------------------

def principal():
    return g.api_principal


def _deny(detail: str = "Your account may not do that.") -> None:
    raise ApiProblem(403, detail, kind="forbidden")


def allow_edit(team: Team) -> None:
    p = principal()
    if not p.covers(team):
        _deny(f"This is a team token of another team; it may only change “{p.token.team.slug}”.")
    if not can_edit_services(p.user, team):
        _deny(f"Only maintainers and members of “{team.slug}” (or admins) may change this.")


def allow_manage(team: Team) -> None:
    p = principal()
    if not p.covers(team):
        _deny(f"This is a team token of another team; it may only change “{p.token.team.slug}”.")
    if not can_manage_team(p.user, team):
        _deny(f"Only maintainers of “{team.slug}” (or admins) may do this.")


def commit(conflict_status: int = 409) -> None:
    """The request's one commit. A unique constraint lost to a concurrent request is a conflict."""
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise ApiProblem(conflict_status, "Someone else changed this at the same moment; read it "
                         "again and retry.", kind="conflict") from None


def rule_broken(exc: Exception) -> ApiProblem:
    db.session.rollback()
    return ApiProblem(409, str(exc), kind="rule", title="Refused by a rule")


def load_team(slug: str, *, for_update: bool = False) -> Team:
    query = select(Team).where(Team.slug == slug)
    if for_update:  # as for services: If-Match is checked on a locked row
        query = query.with_for_update().execution_options(populate_existing=True)
    team = db.session.scalar(query)
    if team is None:
        raise ApiProblem(404, f"There is no team “{slug}”.")
    return team


def load_service(team_slug: str, service_slug: str, *, for_update: bool = False) -> Service:
    query = select(Service).join(Team).where(Team.slug == team_slug, Service.slug == service_slug)
    if for_update:  # PostgreSQL: the row stays locked until commit, so If-Match cannot race
        query = query.with_for_update(of=Service).execution_options(populate_existing=True)
    service = db.session.scalar(query)
    if service is None:
        raise ApiProblem(404, f"There is no service “{team_slug}/{service_slug}”.")
    return service


def load(model, object_id: int, what: str):
    row = db.session.get(model, object_id)
    if row is None:
        raise ApiProblem(404, f"There is no {what} {object_id}.")
    return row


def user_for(email: str | None, field: str) -> User | None:
    if email is None:
        return None
    user = user_by_email(email)
    if user is None:
        raise ApiProblem(422, f"No account uses {email}.", kind="validation",
                         errors=[{"field": field, "pointer": f"#/{field}",
                                  "detail": f"No account uses {email}."}])
    return user


def etag_of(model: s.BaseModel) -> str:
    return '"' + hashlib.sha256(model.model_dump_json().encode()).hexdigest()[:32] + '"'


def if_match_tags() -> list[str]:
    header = request.headers.get("If-Match", "").strip()
    if not header:
        raise ApiProblem(428, "Send If-Match with the ETag you last read, so a concurrent edit "
                         "is refused instead of overwritten.", kind="precondition-required")
    tags = [tag.strip() for tag in header.split(",") if tag.strip()]
    # Strong comparison: a weak tag (W/"…") or one without its quotes can never match.
    unusable = [tag for tag in tags if tag != "*" and not (len(tag) > 1 and tag[0] == tag[-1] == '"')]
    if unusable and len(unusable) == len(tags):
        raise ApiProblem(412, f"If-Match {header} holds no strong ETag: send the ETag header you read, "
                         'quotes included (e.g. "v3"), or * to overwrite deliberately.', kind="stale")
    return tags


def check_if_match(current: str) -> None:
    tags = if_match_tags()
    if "*" not in tags and current not in tags:
        raise ApiProblem(412, "This resource changed since you read it (its ETag is now "
                         f"{current}). Read it again, then retry with the new ETag.",
                         kind="stale", headers={"ETag": current})


def claim_unchanged(model, row_id: int, **seen) -> None:
    """Make the If-Match check atomic: an UPDATE that matches only while the columns still
    hold what was read takes the row's write lock (PostgreSQL row lock, SQLite write lock), so
    of two concurrent edits with the same ETag the second matches nothing and gets 412."""
    result = db.session.execute(
        update(model).where(model.id == row_id, *[getattr(model, k) == v for k, v in seen.items()])
        .values({model.id: model.id}).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        db.session.rollback()
        raise ApiProblem(412, "This resource changed while your edit was on its way. Read it again, "
                         "then retry with the new ETag.", kind="stale")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last_id}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        value = None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= s.MAX_INT:
        raise ApiProblem(400, "The cursor is not one this API gave out; start again without it.",
                         kind="bad-cursor")
    return value


def page(query, id_column, page_query: s.PageQuery, *, descending: bool = False):
    """Keyset pagination on the id: stable while rows are added, cheap at any depth."""
    after = decode_cursor(page_query.cursor)
    if after is not None:
        query = query.where(id_column < after if descending else id_column > after)
    query = query.order_by(id_column.desc() if descending else id_column).limit(page_query.limit + 1)
    rows = list(db.session.scalars(query).unique())
    more = len(rows) > page_query.limit
    rows = rows[:page_query.limit]
    return rows, encode_cursor(rows[-1].id) if more and rows else None


def paged_reply(page_model, items, next_cursor: str | None) -> Reply:
    headers = {}
    if next_cursor:
        args = {**request.args.to_dict(), "cursor": next_cursor}
        headers["Link"] = f'<{url_for(request.endpoint, **request.view_args, **args)}>; rel="next"'
    return Reply(page_model(items=items, next_cursor=next_cursor), headers=headers)


def email_of(user: User | None) -> str | None:
    return user.email if user is not None else None


# Serialisers ----------------------------------------------------------------------------

def team_out(team: Team) -> s.TeamOut:
    return s.TeamOut.model_validate(team)


def service_out(service: Service) -> s.ServiceOut:
    values = {name: getattr(service, name) for name in s.ServiceOut.model_fields
              if name not in ("team", "owner", "backup_owner")}
    return s.ServiceOut(team=service.team.slug, owner=email_of(service.owner),
                        backup_owner=email_of(service.backup_owner), **values)


def assessment_summary(assessment: Assessment) -> s.AssessmentSummary:
    return s.AssessmentSummary(
        id=assessment.id, team=assessment.service.team.slug, service=assessment.service.slug,
        checklist=assessment.checklist_version.slug, checklist_version=assessment.checklist_version.version,
        state=assessment.state, score=assessment.score, verdict=assessment.verdict,
        answered_pct=assessment.answered_pct, unanswered_count=assessment.unanswered_count,
        blocker_count=assessment.blocker_count, created_at=assessment.created_at,
        updated_at=assessment.updated_at, submitted_at=assessment.submitted_at,
        scored_at=assessment.scored_at)


def evidence_out(evidence: Evidence) -> s.EvidenceOut:
    return s.EvidenceOut(id=evidence.id, url=evidence.url, title=evidence.title,
                         added_by=email_of(evidence.added_by), added_at=evidence.added_at,
                         checked_at=evidence.checked_at, check_ok=evidence.check_ok)


def waiver_out(waiver: Waiver) -> s.WaiverOut:
    return s.WaiverOut(id=waiver.id, item_key=waiver.answer.item_key, state=waiver.state,
                       reason=waiver.reason, compensating_control=waiver.compensating_control,
                       risk_owner=waiver.risk_owner.email, expires_on=waiver.expires_on,
                       requested_by=waiver.requested_by.email, requested_at=waiver.requested_at,
                       approved_by=email_of(waiver.approved_by), decided_at=waiver.decided_at)


def answer_etag(answer: Answer | None) -> str:
    # The same version number record_answer checks: 0 until the item has a status.
    return f'"v{answer.version if answer is not None and answer.status is not None else 0}"'


def item_out(assessment: Assessment, item, answer: Answer | None) -> s.ItemOut:
    return s.ItemOut(
        key=item.key, title=item.title, category=item.category, critical=item.critical,
        weight=item.weight, applies=item.applies_to(assessment.service.tier), probe=item.probe,
        status=answer.status if answer else None, note=answer.note if answer else "",
        source=answer.source if answer else "manual",
        answered_by=email_of(answer.answered_by) if answer else None,
        answered_at=answer.answered_at if answer else None, etag=answer_etag(answer),
        evidence=[evidence_out(e) for e in answer.evidence] if answer else [],
        waivers=[waiver_out(w) for w in answer.waivers] if answer else [])


def report_out(report: Report, service: Service) -> s.ReportOut:
    return s.ReportOut(id=report.id, assessment_id=report.assessment_id, team=service.team.slug,
                       service=service.slug, sha256=report.sha256, size_bytes=len(report.pdf or b""),
                       created_at=report.created_at,
                       download_url=url_for("api.download_report", report_id=report.id))


def check_out(check: ServiceCheck) -> s.CheckOut:
    return s.CheckOut(kind=check.kind, outcome=check.outcome, checked_at=check.checked_at,
                      changed_at=check.changed_at, result_id=check.result_id)


def run_out(run: ProbeRun) -> s.ProbeRunOut:
    return s.ProbeRunOut(
        id=run.id, team=run.service.team.slug, service=run.service.slug, trigger=run.trigger,
        started_at=run.started_at, finished_at=run.finished_at,
        results=[s.ProbeResultOut.model_validate(r, from_attributes=True) for r in run.results])


# Documentation --------------------------------------------------------------------------

@api.operation("GET", "/openapi.json", summary="This API's OpenAPI 3.1 document", tag="Documentation",
               scope=None, media="application/json")
def openapi_document():
    """Generated from the pydantic models that validate requests."""
    response = Response(api.openapi_json(bp.url_prefix), mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@api.operation("GET", "/docs", summary="Browsable API documentation", tag="Documentation",
               scope=None, media="text/html")
def docs():
    """A server-rendered page listing every operation of the OpenAPI document (no scripts)."""
    return Response(render_template("api/docs.html", spec=json.loads(api.openapi_json(bp.url_prefix))), mimetype="text/html")


# Who am I -------------------------------------------------------------------------------

@api.operation("GET", "/me", summary="The token's account and scopes", tag="Tokens", response=s.Me)
def me():
    """Check a token: whose it is, its scopes, team and expiry."""
    p = principal()
    token: ApiToken = p.token
    return s.Me(email=p.user.email, name=p.user.name, is_admin=p.user.is_admin,
                is_reviewer=p.user.is_reviewer,
                token=s.TokenOut(name=token.name, prefix=token.prefix, scopes=token.scope_list,
                                 team=token.team.slug if token.team else None,
                                 created_at=token.created_at, expires_at=token.expires_at,
                                 last_used_at=token.last_used_at))


# Teams ----------------------------------------------------------------------------------

@api.operation("GET", "/teams", summary="List teams", tag="Teams", query=s.PageQuery, response=s.TeamPage)
def list_teams(query: s.PageQuery):
    rows, cursor = page(select(Team), Team.id, query)
    return paged_reply(s.TeamPage, [team_out(t) for t in rows], cursor)


@api.operation("POST", "/teams", summary="Create a team", tag="Teams", scope="write", body=s.TeamIn,
               response=s.TeamOut, status=201, errors=(409,), etag=True)
def create_team(body: s.TeamIn):
    """The token's user becomes the team's first maintainer. Team tokens cannot create teams."""
    if principal().team_id is not None:
        _deny("A team token cannot create teams; use a personal token.")
    try:
        team = registry.create_team(body.name, body.description, principal().user)
    except registry.RegistryError as exc:
        raise rule_broken(exc) from None
    commit()
    out = team_out(team)
    return Reply(out, 201, {"Location": url_for("api.get_team", team=team.slug), "ETag": etag_of(out)})


@api.operation("GET", "/teams/<team>", summary="Get a team", tag="Teams", response=s.TeamOut, etag=True)
def get_team(team: str):
    out = team_out(load_team(team))
    return Reply(out, headers={"ETag": etag_of(out)})


@api.operation("PATCH", "/teams/<team>", summary="Rename or describe a team", tag="Teams", scope="write",
               body=s.TeamPatch, response=s.TeamOut, if_match=True, errors=(409,), etag=True)
def update_team(team: str, body: s.TeamPatch):
    """Maintainers only. A new name changes the slug, so the team's URL moves (see Location)."""
    row = load_team(team, for_update=True)
    allow_manage(row)
    check_if_match(etag_of(team_out(row)))
    claim_unchanged(Team, row.id, name=row.name, description=row.description)
    try:
        registry.rename_team(row, body.name if body.name is not None else row.name,
                             body.description if body.description is not None else row.description,
                             principal().user)
    except registry.RegistryError as exc:
        raise rule_broken(exc) from None
    commit()
    out = team_out(row)
    return Reply(out, headers={"ETag": etag_of(out), "Location": url_for("api.get_team", team=row.slug)})


# Services -------------------------------------------------------------------------------

def _owner_ids(body: s._ServiceFields) -> dict:
    values = {}
    for field in ("owner", "backup_owner"):
        if field in body.model_fields_set:
            user = user_for(getattr(body, field), field)
            values[f"{field}_id"] = user.id if user else None
    return values


@api.operation("GET", "/services", summary="List services", tag="Services", query=s.ServiceQuery,
               response=s.ServicePage)
def list_services(query: s.ServiceQuery):
    """Filter by team slug and lifecycle; retired services only with include_retired=true."""
    stmt = select(Service).join(Team).options(joinedload(Service.team), joinedload(Service.owner),
                                              joinedload(Service.backup_owner))
    if query.team:
        stmt = stmt.where(Team.slug == query.team)
    if query.lifecycle:
        stmt = stmt.where(Service.lifecycle == query.lifecycle)
    elif not query.include_retired:
        stmt = stmt.where(Service.lifecycle != "retired")
    rows, cursor = page(stmt, Service.id, query)
    return paged_reply(s.ServicePage, [service_out(r) for r in rows], cursor)


@api.operation("POST", "/teams/<team>/services", summary="Register a service", tag="Services",
               scope="write", body=s.ServiceIn, response=s.ServiceOut, status=201, errors=(409,), etag=True)
def create_service(team: str, body: s.ServiceIn):
    """Maintainers and members of the team. Owners are given by account email."""
    row = load_team(team)
    allow_edit(row)
    values = body.model_dump(exclude={"owner", "backup_owner"})
    values.update(slug=body.slug or "", description=body.description or "", tier=body.tier or 2,
                  lifecycle=body.lifecycle or "planned",
                  probe_interval_minutes=body.probe_interval_minutes
                  or current_app.config["PROBE_INTERVAL_MINUTES"], **_owner_ids(body))
    try:
        service = registry.register_service(row, values, principal().user)
    except registry.RegistryError as exc:
        raise rule_broken(exc) from None
    commit()
    out = service_out(service)
    return Reply(out, 201, {"ETag": etag_of(out),
                            "Location": url_for("api.get_service", team=row.slug, service=service.slug)})


@api.operation("GET", "/services/<team>/<service>", summary="Get a service", tag="Services",
               response=s.ServiceOut, etag=True)
def get_service(team: str, service: str):
    out = service_out(load_service(team, service))
    return Reply(out, headers={"ETag": etag_of(out)})


@api.operation("PATCH", "/services/<team>/<service>", summary="Update a service", tag="Services",
               scope="write", body=s.ServicePatch, response=s.ServiceOut, if_match=True,
               errors=(409,), etag=True)
def update_service(team: str, service: str, body: s.ServicePatch):
    """Only the fields sent change. Needs If-Match: a concurrent edit gets 412, never overwritten."""
    row = load_service(team, service, for_update=True)
    allow_edit(row.team)
    current = service_out(row)
    check_if_match(etag_of(current))
    values = {name: getattr(row, name) for name in registry.SERVICE_FIELDS}
    sent = body.model_dump(include=body.model_fields_set - {"owner", "backup_owner"})
    for required in ("name", "slug", "tier", "lifecycle", "probe_interval_minutes"):
        if required in sent and sent[required] is None:
            raise ApiProblem(422, f"{required} cannot be null.", kind="validation",
                             errors=[{"field": required, "pointer": f"#/{required}", "detail": "Cannot be null."}])
    values.update(sent)
    values["description"] = values.get("description") or ""
    values.update(_owner_ids(body))
    if all(getattr(row, name) == value for name, value in values.items()):
        # Nothing changes: no write, the same ETag (a new one gave other clients a false 412).
        return Reply(current, headers={"ETag": etag_of(current),
                                       "Location": url_for("api.get_service", team=row.team.slug, service=row.slug)})
    claim_unchanged(Service, row.id, updated_at=row.updated_at)
    try:
        registry.update_service(row, values, principal().user)
    except registry.RegistryError as exc:
        raise rule_broken(exc) from None
    commit()
    out = service_out(row)
    return Reply(out, headers={"ETag": etag_of(out),
                               "Location": url_for("api.get_service", team=row.team.slug, service=row.slug)})


@api.operation("POST", "/services/<team>/<service>/retire", summary="Retire a service", tag="Services",
               scope="write", response=s.ServiceOut, errors=(409,), etag=True)
def retire_service(team: str, service: str):
    """It stays, with its history, but is no longer probed or assessed; a review in progress goes back to draft."""
    row = load_service(team, service, for_update=True)
    allow_edit(row.team)
    try:
        registry.retire_service(row, principal().user)
    except registry.RegistryError as exc:
        raise rule_broken(exc) from None
    commit()
    out = service_out(row)
    return Reply(out, headers={"ETag": etag_of(out)})


# Readiness ------------------------------------------------------------------------------

def current_assessment(service: Service) -> Assessment | None:
    """The one the dashboard shows: the newest that is not superseded."""
    return db.session.scalar(select(Assessment).where(Assessment.service_id == service.id,
                                                      Assessment.state != "superseded")
                             .options(selectinload(Assessment.answers).selectinload(Answer.waivers))
                             .order_by(Assessment.created_at.desc(), Assessment.id.desc()).limit(1))


def signed_off_report(service: Service) -> Report | None:
    return db.session.scalar(
        select(Report).join(Assessment, Report.assessment_id == Assessment.id)
        .where(Assessment.service_id == service.id, Assessment.state == "signed_off")
        .order_by(Assessment.decided_at.desc().nulls_last(), Report.created_at.desc(), Report.id.desc())
        .limit(1))


@api.operation("GET", "/services/<team>/<service>/readiness", summary="Is this service ready?",
               tag="Readiness", response=s.Readiness)
def readiness(team: str, service: str):
    """Verdict and score of the current assessment (from the stored read model), the failing
    critical items, the signed-off report's id and SHA-256 when there is one, and the latest
    probe outcome per check. Gate a deploy on `ready`."""
    row = load_service(team, service)
    assessment = current_assessment(row)
    report = signed_off_report(row)
    checks = db.session.scalars(select(ServiceCheck).where(ServiceCheck.service_id == row.id)
                                .order_by(ServiceCheck.kind)).all()
    failing: list[s.FailingCritical] = []
    if assessment is not None and assessment.blocker_count:
        checklist = assessments.checklist_for(assessment)
        answers = assessments.answers_by_key(assessment)
        for key in assessments.scorecard(assessment).blockers:
            item = checklist.item(key)
            failing.append(s.FailingCritical(key=key, title=item.title if item else key,
                                             status=answers[key].status if key in answers else None))
    return s.Readiness(
        team=row.team.slug, service=row.slug, tier=row.tier, lifecycle=row.lifecycle,
        verdict=assessment.verdict if assessment else "not_assessed",
        ready=bool(assessment and assessment.verdict == "ready"),
        score=assessment.score if assessment else None,
        answered_pct=assessment.answered_pct if assessment else None,
        unanswered_count=assessment.unanswered_count if assessment else None,
        blocker_count=assessment.blocker_count if assessment else None,
        scored_at=assessment.scored_at if assessment else None,
        assessment=assessment_summary(assessment) if assessment else None,
        failing_criticals=failing,
        signed_off_report=report_out(report, row) if report else None,
        checks=[check_out(c) for c in checks])


# Assessments ----------------------------------------------------------------------------

@api.operation("GET", "/services/<team>/<service>/assessments", summary="List a service's assessments",
               tag="Assessments", query=s.PageQuery, response=s.AssessmentPage)
def list_assessments(team: str, service: str, query: s.PageQuery):
    """Newest first, with the stored score, verdict and counts (no re-scoring per row)."""
    row = load_service(team, service)
    stmt = select(Assessment).where(Assessment.service_id == row.id).options(
        joinedload(Assessment.checklist_version))
    rows, cursor = page(stmt, Assessment.id, query, descending=True)
    return paged_reply(s.AssessmentPage, [assessment_summary(a) for a in rows], cursor)


@api.operation("POST", "/services/<team>/<service>/assessments", summary="Start an assessment",
               tag="Assessments", scope="write", body=s.AssessmentStart, response=s.AssessmentOut,
               status=201, errors=(409,))
def start_assessment(team: str, service: str, body: s.AssessmentStart):
    """Against the newest version of a checklist; copy_previous re-assesses from the latest one."""
    row = load_service(team, service)
    allow_edit(row.team)
    catalog.sync()
    version = catalog.latest_version(body.checklist)
    if version is None:
        known = ", ".join(v.slug for v in catalog.latest_versions()) or "none loaded"
        raise ApiProblem(422, f"There is no checklist “{body.checklist}” (known: {known}).",
                         kind="validation", errors=[{"field": "checklist", "pointer": "#/checklist",
                                                     "detail": f"Unknown checklist; known: {known}."}])
    previous = row.assessments[0] if row.assessments else None
    copy_from = previous if body.copy_previous else None
    if body.copy_previous and (previous is None or previous.checklist_version.slug != version.slug):
        raise rule_broken(ValueError("There is no earlier assessment on this checklist to copy."))
    try:
        assessment = assessments.start_assessment(row, version, principal().user, copy_from)
    except assessments.AssessmentError as exc:
        raise rule_broken(exc) from None
    commit()
    return Reply(assessment_detail(assessment), 201,
                 {"Location": url_for("api.get_assessment", assessment_id=assessment.id)})


def assessment_detail(assessment: Assessment) -> s.AssessmentOut:
    card = assessments.scorecard(assessment)
    answers = assessments.answers_by_key(assessment)
    checklist = assessments.checklist_for(assessment)
    return s.AssessmentOut(
        **assessment_summary(assessment).model_dump(),
        categories=[s.CategoryOut(key=c.key, score=c.score, answered=c.answered, applicable=c.applicable)
                    for c in card.categories.values()],
        items=[item_out(assessment, item, answers.get(item.key)) for item in checklist.items])


@api.operation("GET", "/assessments/<int:assessment_id>", summary="Get an assessment with its items",
               tag="Assessments", response=s.AssessmentOut)
def get_assessment(assessment_id: int):
    """Score, verdict, category scores, and every item with its answer, evidence and waivers."""
    assessment = db.session.scalar(select(Assessment).where(Assessment.id == assessment_id).options(
        selectinload(Assessment.answers).options(
            selectinload(Answer.waivers).options(joinedload(Waiver.risk_owner), joinedload(Waiver.requested_by),
                                                 joinedload(Waiver.approved_by)),
            selectinload(Answer.evidence).joinedload(Evidence.added_by),
            joinedload(Answer.answered_by)),
        joinedload(Assessment.service).joinedload(Service.team), joinedload(Assessment.checklist_version)))
    if assessment is None:
        raise ApiProblem(404, f"There is no assessment {assessment_id}.")
    return assessment_detail(assessment)


@api.operation("POST", "/assessments/<int:assessment_id>/submit", summary="Submit a draft for review",
               tag="Assessments", scope="write", response=s.AssessmentSummary, errors=(409,))
def submit_assessment(assessment_id: int):
    """Every applicable item must be answered first (a 409 lists the ones that are not).
    Signing off stays a person's act in the browser, where the reviewers see the whole
    assessment and the signed report is made."""
    assessment = load(Assessment, assessment_id, "assessment")
    allow_edit(assessment.service.team)
    try:
        assessments.submit_for_review(assessment, principal().user)
    except assessments.SubmitBlocked as exc:
        db.session.rollback()
        raise ApiProblem(409, str(exc), kind="rule", title="Refused by a rule",
                         unanswered=[item.key for item in exc.items]) from None
    except assessments.AssessmentError as exc:
        raise rule_broken(exc) from None
    commit()
    return assessment_summary(assessment)


def _item_or_404(assessment: Assessment, item_key: str):
    item = assessments.checklist_for(assessment).item(item_key)
    if item is None:
        raise ApiProblem(404, f"“{item_key}” is not an item of this assessment's checklist.")
    return item


@api.operation("PUT", "/assessments/<int:assessment_id>/items/<item_key>/answer",
               summary="Set an item's status and note", tag="Answers", scope="write", body=s.AnswerIn,
               response=s.AnswerOut, if_match=True, errors=(409,), etag=True)
def set_answer(assessment_id: int, item_key: str, body: s.AnswerIn):
    """If-Match is the item's `etag` from GET /assessments/{id} (`"v0"` for an unanswered item);
    `*` overwrites deliberately. Someone else's save in between gets 412."""
    assessment = load(Assessment, assessment_id, "assessment")
    item = _item_or_404(assessment, item_key)
    allow_edit(assessment.service.team)
    tags = if_match_tags()
    expected = None
    if "*" not in tags:
        versions = [int(t[2:-1]) for t in tags if t.startswith('"v') and t.endswith('"') and t[2:-1].isdigit()]
        expected = versions[0] if versions else -1
    try:
        assessments.record_answer(assessment, item_key, body.status, body.note, principal().user,
                                  expected_version=expected)
        db.session.commit()
    except (assessments.AnswerConflict, StaleDataError, IntegrityError):
        db.session.rollback()
        current = answer_etag(assessments.answer_for(assessment, item_key))
        raise ApiProblem(412, f"Someone else saved this item since you read it (its ETag is now {current}); "
                         "yours was not saved. Read it again, then retry.", kind="stale",
                         headers={"ETag": current}) from None
    except assessments.AssessmentError as exc:
        raise rule_broken(exc) from None
    answer = assessments.answer_for(assessment, item_key)
    out = s.AnswerOut(assessment=assessment_summary(assessment), item=item_out(assessment, item, answer))
    return Reply(out, headers={"ETag": answer_etag(answer)})


@api.operation("POST", "/assessments/<int:assessment_id>/items/<item_key>/evidence",
               summary="Attach an evidence link", tag="Answers", scope="write", body=s.EvidenceIn,
               response=s.EvidenceCreated, status=201, errors=(409,))
def add_evidence(assessment_id: int, item_key: str, body: s.EvidenceIn):
    """An http(s) link (a load-test report, a restore drill log) on an item; at most 20 per item."""
    assessment = load(Assessment, assessment_id, "assessment")
    _item_or_404(assessment, item_key)
    allow_edit(assessment.service.team)
    try:
        evidence = assessments.add_evidence(assessment, item_key, body.url, body.title, principal().user)
    except assessments.AssessmentError as exc:
        raise rule_broken(exc) from None
    commit()
    return Reply(s.EvidenceCreated(evidence=evidence_out(evidence), item_key=item_key,
                                   assessment_id=assessment.id), 201)


@api.operation("DELETE", "/evidence/<int:evidence_id>", summary="Remove an evidence link", tag="Answers",
               scope="write", status=204, errors=(409,))
def remove_evidence(evidence_id: int):
    evidence = load(Evidence, evidence_id, "evidence link")
    assessment = evidence.answer.assessment
    allow_edit(assessment.service.team)
    try:
        assessments.remove_evidence(evidence, principal().user)
    except assessments.AssessmentError as exc:
        raise rule_broken(exc) from None
    commit()
    return Response(status=204)


@api.operation("POST", "/assessments/<int:assessment_id>/items/<item_key>/waivers",
               summary="Request a waiver", tag="Waivers", scope="write", body=s.WaiverIn,
               response=s.WaiverOut, status=201, errors=(409,))
def request_waiver(assessment_id: int, item_key: str, body: s.WaiverIn):
    """For an item answered not_met or partial (team maintainers); a reviewer decides it."""
    assessment = load(Assessment, assessment_id, "assessment")
    _item_or_404(assessment, item_key)
    allow_manage(assessment.service.team)
    risk_owner = user_for(body.risk_owner, "risk_owner")
    try:
        waiver = assessments.request_waiver(assessment, item_key, body.reason, body.compensating_control,
                                            risk_owner, body.expires_on, principal().user)
    except assessments.AssessmentError as exc:
        raise rule_broken(exc) from None
    commit()
    return Reply(waiver_out(waiver), 201)


@api.operation("POST", "/waivers/<int:waiver_id>/decision", summary="Approve or decline a waiver",
               tag="Waivers", scope="write", body=s.WaiverDecisionIn, response=s.WaiverOut, errors=(409,))
def decide_waiver(waiver_id: int, body: s.WaiverDecisionIn):
    """Reviewers and admins, with a personal token (deciding is a person's act, not a team's)."""
    waiver = load(Waiver, waiver_id, "waiver")
    p = principal()
    if p.team_id is not None or not can_review(p.user):
        _deny("Only reviewers and admins decide waivers, with a personal token.")
    try:
        assessments.decide_waiver(waiver, body.decision == "approve", p.user)
    except assessments.AssessmentError as exc:
        raise rule_broken(exc) from None
    commit()
    return waiver_out(waiver)


# Probes ---------------------------------------------------------------------------------

@api.operation("POST", "/services/<team>/<service>/probe-runs", summary="Probe a service now",
               tag="Probes", scope="probe", response=s.ProbeRunOut, status=202, errors=(409,))
@limiter.limit("6/minute", key_func=rate_limit_key)  # the same budget as the web's "Probe now"
def trigger_probe_run(team: str, service: str):
    """Starts a run and queues it for the worker; poll the Location for results."""
    from webapp.probes.tasks import complete_run_task

    row = load_service(team, service)
    allow_edit(row.team)
    if row.lifecycle == "retired":
        raise ApiProblem(409, "A retired service is not probed.", kind="rule", title="Refused by a rule")
    if not flags.enabled("probe_now"):
        raise ApiProblem(503, flags.FLAGS["probe_now"].when_off, kind="switched-off", title="Switched off",
                         headers={"Retry-After": "60"})
    run = runs.start_run(row, "api")
    commit()
    complete_run_task(run.id)
    db.session.expire_all()
    run = db.session.get(ProbeRun, run.id)
    return Reply(run_out(run), 202, {"Location": url_for("api.get_probe_run", team=row.team.slug,
                                                         service=row.slug, run_id=run.id)})


@api.operation("GET", "/services/<team>/<service>/probe-runs/<int:run_id>", summary="One probe run",
               tag="Probes", response=s.ProbeRunOut)
def get_probe_run(team: str, service: str, run_id: int):
    """`finished_at` is null while it runs; results appear as they arrive."""
    row = load_service(team, service)
    run = db.session.get(ProbeRun, run_id)
    if run is None or run.service_id != row.id:
        raise ApiProblem(404, f"There is no probe run {run_id} of “{team}/{service}”.")
    return run_out(run)


@api.operation("GET", "/services/<team>/<service>/checks", summary="Latest probe outcome per check",
               tag="Probes", response=s.CheckList)
def latest_checks(team: str, service: str):
    row = load_service(team, service)
    checks = db.session.scalars(select(ServiceCheck).where(ServiceCheck.service_id == row.id)
                                .order_by(ServiceCheck.kind)).all()
    return s.CheckList(team=row.team.slug, service=row.slug, checks=[check_out(c) for c in checks])


# Reports --------------------------------------------------------------------------------

@api.operation("GET", "/reports", summary="List signed-off reports", tag="Reports", query=s.ReportQuery,
               response=s.ReportPage)
def list_reports(query: s.ReportQuery):
    """Newest first; filter by team, or by team and service."""
    stmt = (select(Report, Service).join(Assessment, Report.assessment_id == Assessment.id)
            .join(Service, Assessment.service_id == Service.id).join(Team, Service.team_id == Team.id))
    if query.team:
        stmt = stmt.where(Team.slug == query.team)
    if query.service:
        stmt = stmt.where(Service.slug == query.service)
    after = decode_cursor(query.cursor)
    if after is not None:
        stmt = stmt.where(Report.id < after)
    rows = db.session.execute(stmt.order_by(Report.id.desc()).limit(query.limit + 1)).all()
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    return paged_reply(s.ReportPage, [report_out(r, svc) for r, svc in rows],
                       encode_cursor(rows[-1][0].id) if more and rows else None)


def _report_service(report: Report) -> Service:
    return db.session.scalar(select(Service).join(Assessment, Assessment.service_id == Service.id)
                             .where(Assessment.id == report.assessment_id))


@api.operation("GET", "/reports/<int:report_id>", summary="A report's metadata", tag="Reports",
               response=s.ReportOut)
def get_report(report_id: int):
    report = load(Report, report_id, "report")
    return report_out(report, _report_service(report))


@api.operation("GET", "/reports/<int:report_id>/pdf", summary="Download a report's PDF", tag="Reports",
               media="application/pdf")
def download_report(report_id: int):
    """The stored bytes, unchanged; their SHA-256 is the ETag and the `sha256` of the report."""
    report = load(Report, report_id, "report")
    service = _report_service(report)
    response = Response(report.pdf, mimetype="application/pdf")
    response.headers["ETag"] = f'"{report.sha256}"'
    response.headers["Content-Disposition"] = (
        f'attachment; filename="preflight-{service.team.slug}-{service.slug}-report-{report.id}.pdf"')
    return response


@api.operation("POST", "/reports/verify", summary="Is this file a report Preflight issued?",
               tag="Reports", body=s.VerifyIn, raw_body="application/pdf", response=s.VerifyOut)
def verify_report(body):
    """Send the PDF itself (Content-Type: application/pdf) or its SHA-256 as JSON. A PDF must
    match a stored report byte for byte and carry a valid signature by this instance; a bare
    SHA-256 can only be matched against the stored reports (`signature_checked` says which)."""
    from webapp import reports

    if isinstance(body, bytes):
        if not body.startswith(b"%PDF-"):
            raise ApiProblem(422, "The body is not a PDF (it does not start with %PDF-): send the report file "
                                  "itself, or its SHA-256 as JSON.", kind="validation", title="Not a PDF")
        digest = hashlib.sha256(body).hexdigest()
        verdict = reports.verify_pdf(body)
        checked = True
    else:
        digest = body.sha256.lower()
        verdict = reports.verify_sha256(digest)
        checked = False
    report = verdict.report
    return s.VerifyOut(match=verdict.genuine, sha256=digest,
                       report=report_out(report, _report_service(report)) if report else None,
                       signature_checked=checked, detail=" ".join(verdict.reasons))


# Audit ----------------------------------------------------------------------------------

@api.operation("GET", "/audit-events", summary="The audit trail", tag="Audit", query=s.AuditQuery,
               response=s.AuditPage)
def list_audit_events(query: s.AuditQuery):
    """Newest first; filter by time, object, action, team or service."""
    stmt = select(AuditEvent).options(joinedload(AuditEvent.actor))
    if query.since:
        stmt = stmt.where(AuditEvent.at >= query.since)
    if query.until:
        stmt = stmt.where(AuditEvent.at < query.until)
    if query.object_type:
        stmt = stmt.where(AuditEvent.object_type == query.object_type)
    if query.object_id:
        stmt = stmt.where(AuditEvent.object_id == query.object_id)
    if query.action:
        stmt = stmt.where(AuditEvent.action == query.action)
    if query.team:
        stmt = stmt.where(AuditEvent.team_id == load_team(query.team).id)
    if query.service:
        if not query.team:
            raise ApiProblem(422, "Filter by service together with its team.", kind="validation",
                             errors=[{"field": "team", "detail": "Required with service."}])
        stmt = stmt.where(AuditEvent.service_id == load_service(query.team, query.service).id)
    rows, cursor = page(stmt, AuditEvent.id, query, descending=True)
    teams = dict(db.session.execute(select(Team.id, Team.slug)).all()) if rows else {}
    service_ids = {r.service_id for r in rows if r.service_id}
    services = dict(db.session.execute(select(Service.id, Service.slug)
                                       .where(Service.id.in_(service_ids))).all()) if service_ids else {}
    return paged_reply(s.AuditPage, [s.AuditEventOut(
        id=r.id, at=r.at, actor=email_of(r.actor), action=r.action, object_type=r.object_type,
        object_id=r.object_id, team=teams.get(r.team_id), service=services.get(r.service_id),
        before=r.before, after=r.after, request_id=r.request_id) for r in rows], cursor)


def problem_for_path(error) -> Response:
    """App-level errors (unknown URL, wrong method, body too large) under /api/ as problems."""
    from webapp.api.problems import from_http_exception

    response = from_http_exception(error)
    if response.status_code == 429:
        limit = limiter.current_limit
        wait = max(1, limit.reset_at - int(time.time())) if limit is not None else 60
        response.headers["Retry-After"] = str(wait)
        response.set_data(json.dumps({**json.loads(response.get_data()), "detail":
                                      f"Rate limit of {limit.limit if limit else 'this API'} exceeded for "
                                      f"this token; retry in {wait} s."}))
    return response


__all__ = ["api", "bp", "problem_for_path", "problem_response", "register"]
