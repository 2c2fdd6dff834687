"""Needs attention across services, and "My work": what is waiting for the signed-in person."""

from __future__ import annotations

from math import ceil

from flask import Blueprint, abort, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import func, or_, select

from webapp import attention, catalog
from webapp.extensions import db
from webapp.models import Answer, Assessment, Membership, Service, Team, Waiver
from webapp.permissions import can_review

bp = Blueprint("attention", __name__)

PER_PAGE = 50


@bp.get("/attention")
@login_required
def index():
    """Everything that needs attention, most urgent first; filter by kind, team, service or "mine"."""
    kind = request.args.get("kind", "")
    kind = kind if kind in attention.KINDS else ""
    team_id = request.args.get("team", type=int)
    service_id = request.args.get("service", type=int)
    mine = request.args.get("mine") == "1"
    if service_id is not None and db.session.get(Service, service_id) is None:
        abort(404, description=f"There is no service with id {service_id}.")
    if team_id is not None and db.session.get(Team, team_id) is None:
        abort(404, description=f"There is no team with id {team_id}.")
    scope = attention.scope_for(current_user if mine else None, team_id,
                                [service_id] if service_id is not None else None)
    found = attention.collect(scope)
    tally = attention.counts(found)
    if kind:
        found = [item for item in found if item.kind == kind]
    pages = max(1, ceil(len(found) / PER_PAGE))
    page = min(max(request.args.get("page", 1, type=int), 1), pages)
    teams = db.session.execute(select(Team.id, Team.name).order_by(Team.name)).all()
    service = db.session.get(Service, service_id) if service_id is not None else None
    state = {k: v for k, v in (("kind", kind), ("team", team_id), ("service", service_id),
                               ("mine", "1" if mine else None)) if v}
    return render_template("attention/index.html", items=found[(page - 1) * PER_PAGE: page * PER_PAGE],
                           total=len(found), tally=tally, kinds=attention.KINDS, kind=kind, team_id=team_id,
                           mine=mine, teams=teams, service=service, page=page, pages=pages, state=state)


def _with_titles(rows) -> list[tuple]:
    """(waiver, item key, item title, assessment id, service name): people know items by title."""
    checklists = catalog.checklists_by_version()
    titled = []
    for waiver, item_key, assessment_id, version_id, service_name in rows:
        item = checklists[version_id].item(item_key) if version_id in checklists else None
        titled.append((waiver, item_key, item.title if item else item_key.replace("_", " "), assessment_id,
                       service_name))
    return titled


@bp.get("/my-work")
@login_required
def mine():
    """The services I own or back up, my teams, the waivers and reviews waiting for me."""
    me = current_user
    current = attention.current_assessments(attention.scope_for())
    my_services = db.session.execute(
        select(Service, Team.name, Assessment)
        .join(Team, Team.id == Service.team_id)
        .outerjoin(current, current.c.service_id == Service.id)
        .outerjoin(Assessment, Assessment.id == current.c.id)
        .where(Service.lifecycle != "retired", or_(Service.owner_id == me.id, Service.backup_owner_id == me.id))
        .order_by(Team.name, Service.name)).all()
    service_counts = (select(Service.team_id, func.count(Service.id).label("n"))
                      .where(Service.lifecycle != "retired").group_by(Service.team_id).subquery())
    my_teams = db.session.execute(
        select(Team, Membership.role, func.coalesce(service_counts.c.n, 0))
        .join(Membership, Membership.team_id == Team.id)
        .outerjoin(service_counts, service_counts.c.team_id == Team.id)
        .where(Membership.user_id == me.id).order_by(Team.name)).all()
    waiver_query = (select(Waiver, Answer.item_key, Assessment.id, Assessment.checklist_version_id, Service.name)
                    .join(Answer, Waiver.answer_id == Answer.id)
                    .join(Assessment, Assessment.id == Answer.assessment_id)
                    .join(Service, Service.id == Assessment.service_id)
                    .where(Waiver.state == "requested", Assessment.state.in_(("draft", "in_review")))
                    .order_by(Waiver.requested_at))
    if can_review(me):  # four eyes: never your own request
        waivers_to_decide = _with_titles(db.session.execute(waiver_query.where(Waiver.requested_by_id != me.id)))
    else:
        waivers_to_decide = []
    my_requests = _with_titles(db.session.execute(waiver_query.where(Waiver.requested_by_id == me.id)))
    review_query = (select(Assessment, Service.name).join(Service, Service.id == Assessment.service_id)
                    .where(Assessment.state == "in_review").order_by(Assessment.submitted_at))
    if not can_review(me):
        review_query = review_query.where(or_(Service.owner_id == me.id, Service.backup_owner_id == me.id))
    reviews = db.session.execute(review_query.limit(100)).all()
    items = attention.collect(attention.scope_for(me))
    return render_template("attention/mine.html", my_services=my_services, my_teams=my_teams,
                           waivers_to_decide=waivers_to_decide, my_requests=my_requests, reviews=reviews,
                           items=items[:15], items_total=len(items), can_review=can_review(me))
