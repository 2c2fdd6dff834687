"""The read side: dashboard rows, summaries, trends and exports, built from the read model
(scores stored on Assessment, latest probe outcomes in ServiceCheck) in a fixed number of
queries however many services and however much history there is. Nothing here writes,
except `rescore`, which fills the read model for rows that predate it, and the flush hook
that keeps each service's pointers to its working and signed-off assessment and its
score trend current."""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from sqlalchemy import (
    Integer,
    Select,
    String,
    TypeDecorator,
    any_,
    bindparam,
    case,
    cast,
    event,
    func,
    inspect,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased, selectinload
from sqlalchemy.orm.attributes import flag_modified, set_committed_value
from sqlalchemy.types import NullType

from webapp import attention
from webapp.extensions import db
from webapp.models import (
    LIFECYCLES,
    Answer,
    Assessment,
    Membership,
    ScoreSnapshot,
    Service,
    ServiceCheck,
    Team,
    User,
    utcnow,
)

PAGE_SIZE = 50
TREND_POINTS = 20
OPEN_STATES = ("draft", "in_review")
VERDICTS = ("ready", "ready_with_conditions", "not_ready")
NOT_ASSESSED = "not_assessed"  # the verdict filter's name for "no assessment to show"
VERDICT_RANK = {"ready": 3, "ready_with_conditions": 2, "not_ready": 1}
PROBE_SEVERITY = {"pass": 0, "warn": 1, "fail": 2, "error": 3}
OUTCOME_OF_SEVERITY = {rank: outcome for outcome, rank in PROBE_SEVERITY.items()}
# Lifecycle filter values beyond the lifecycles themselves: "" = all but retired, "all".
LIFECYCLE_CHOICES = ("", *LIFECYCLES, "all")


# What the page asks for -----------------------------------------------------------------

SORTS = ("name", "team", "tier", "lifecycle", "verdict", "score", "answered", "blockers",
         "probes", "owner", "assessed", "signed")
DEFAULT_DIRECTION = {"score": "desc", "assessed": "desc", "signed": "desc", "probes": "desc",
                     "blockers": "desc"}


def _int(value: str | None, choices: Iterable[int] | None = None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if choices is None or number in choices else None


@dataclass(frozen=True)
class Query:
    """The dashboard's state: filters, search, sort and page. Parsed leniently from the URL
    (a value that makes no sense is ignored, never a 500) and written back into links."""

    q: str = ""
    team: int | None = None
    tier: int | None = None
    verdict: str = ""
    lifecycle: str = ""
    owner: int | None = None
    mine: bool = False
    attention: bool = False  # only services with something on the needs-attention list
    sort: str = "name"
    direction: str = "asc"
    page: int = 1
    # "name=value" of the arguments that meant nothing and were left out, so the page can
    # say so instead of silently showing something else. Not part of the state.
    ignored: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Query:
        sort = args.get("sort", "name")
        sort = sort if sort in SORTS else "name"
        direction = args.get("dir", "")
        direction = direction if direction in ("asc", "desc") else DEFAULT_DIRECTION.get(sort, "asc")
        verdict = args.get("verdict", "")
        lifecycle = args.get("lifecycle", "")
        query = cls(
            q=(args.get("q") or "").strip()[:100],
            team=_int(args.get("team")),
            tier=_int(args.get("tier"), (1, 2, 3)),
            verdict=verdict if verdict in (*VERDICTS, NOT_ASSESSED) else "",
            lifecycle=lifecycle if lifecycle in LIFECYCLE_CHOICES else "",
            owner=_int(args.get("owner")),
            mine=args.get("mine") == "1",
            attention=args.get("attention") == "1",
            sort=sort, direction=direction,
            page=max(1, _int(args.get("page")) or 1),
        )
        kept = {"team": query.team, "tier": query.tier, "verdict": query.verdict, "lifecycle": query.lifecycle,
                "owner": query.owner, "sort": args.get("sort") in SORTS, "dir": args.get("dir") in ("asc", "desc"),
                "page": _int(args.get("page")) is not None and int(args["page"]) >= 1}
        ignored = tuple(f"{name}={args[name][:40]}" for name, value in kept.items()
                        if args.get(name) and value in (None, "", False))
        return replace(query, ignored=ignored) if ignored else query

    def args(self, **changes) -> dict[str, str | int]:
        """URL arguments for this state with `changes` applied; defaults left out, and any
        change other than the page itself goes back to page 1."""
        if "page" not in changes:
            changes["page"] = 1
        state = replace(self, **changes)
        out: dict[str, str | int] = {}
        for name, value in (("q", state.q), ("team", state.team), ("tier", state.tier),
                            ("verdict", state.verdict), ("lifecycle", state.lifecycle),
                            ("owner", state.owner)):
            if value not in (None, ""):
                out[name] = value
        if state.mine:
            out["mine"] = "1"
        if state.attention:
            out["attention"] = "1"
        if state.sort != "name":
            out["sort"] = state.sort
        if state.direction != DEFAULT_DIRECTION.get(state.sort, "asc"):
            out["dir"] = state.direction
        if state.page > 1:
            out["page"] = state.page
        return out

    def sorted_by(self, column: str) -> dict[str, str | int]:
        """Arguments for a column heading: sort by it, or flip the direction if it already is."""
        if self.sort == column:
            return self.args(direction="desc" if self.direction == "asc" else "asc")
        return self.args(sort=column, direction=DEFAULT_DIRECTION.get(column, "asc"))

    @property
    def filtered(self) -> bool:
        return bool(self.q or self.team or self.tier or self.verdict or self.lifecycle
                    or self.owner or self.mine or self.attention)


# What the page shows --------------------------------------------------------------------

@dataclass(frozen=True)
class WorkingAssessment:
    """The open assessment people are working on, as the read model stored it."""

    id: int
    state: str
    score: float
    verdict: str
    answered_pct: float
    blocker_count: int
    unanswered_count: int
    updated_at: datetime
    scored_at: datetime | None


@dataclass(frozen=True)
class SignedOff:
    id: int
    verdict: str
    score: float
    decided_at: datetime | None
    answered_pct: float
    blocker_count: int


@dataclass(frozen=True)
class DashboardRow:
    service_id: int
    name: str
    slug: str
    team_id: int
    team_name: str
    tier: int
    lifecycle: str
    owner_id: int | None
    owner_name: str | None
    owner_email: str | None
    mine: bool
    working: WorkingAssessment | None
    signed_off: SignedOff | None
    probe_outcome: str | None  # the worst latest outcome over check kinds; None if never probed
    probe_checked_at: datetime | None
    trend: tuple[float, ...] = ()
    attention_items: int | None = None  # things on the needs-attention list; None: not counted

    @property
    def shown(self) -> WorkingAssessment | SignedOff | None:
        """The assessment the service stands at now: the open one if there is one, else the
        last signed-off one, else None (not assessed). Verdict, score, answered share and
        blockers are its."""
        return self.working if self.working is not None else self.signed_off

    @property
    def verdict(self) -> str | None:
        return self.shown.verdict if self.shown else None

    @property
    def score(self) -> float | None:
        return self.shown.score if self.shown else None

    @property
    def answered_pct(self) -> float | None:
        return self.shown.answered_pct if self.shown else None

    @property
    def blocker_count(self) -> int | None:
        return self.shown.blocker_count if self.shown else None

    @property
    def last_assessed(self) -> datetime | None:
        if self.working is not None:
            return self.working.updated_at
        return self.signed_off.decided_at if self.signed_off else None

    def to_json(self) -> dict:
        working, signed = self.working, self.signed_off
        return {
            "service": {"id": self.service_id, "name": self.name, "slug": self.slug,
                        "tier": self.tier, "lifecycle": self.lifecycle},
            "team": {"id": self.team_id, "name": self.team_name},
            "owner": ({"id": self.owner_id, "name": self.owner_name, "email": self.owner_email}
                      if self.owner_id else None),
            "verdict": self.verdict,
            "score": self.score,
            "working": None if working is None else {
                "assessment_id": working.id, "state": working.state, "score": working.score,
                "verdict": working.verdict, "answered_pct": working.answered_pct,
                "blockers": working.blocker_count, "unanswered": working.unanswered_count,
                "updated_at": working.updated_at.isoformat(),
            },
            "signed_off": None if signed is None else {
                "assessment_id": signed.id, "verdict": signed.verdict, "score": signed.score,
                "answered_pct": signed.answered_pct, "blockers": signed.blocker_count,
                "decided_at": signed.decided_at.isoformat() if signed.decided_at else None,
            },
            "probes": {"outcome": self.probe_outcome,
                       "checked_at": self.probe_checked_at.isoformat() if self.probe_checked_at else None},
            "last_assessed": self.last_assessed.isoformat() if self.last_assessed else None,
            "trend": list(self.trend),
            "attention_items": self.attention_items,
        }


@dataclass(frozen=True)
class Summary:
    """The tiles above the table, over every service the filters match."""

    total: int
    by_verdict: dict[str, int]  # VERDICTS and NOT_ASSESSED
    by_tier: dict[int, int]
    by_team: list[tuple[int, str, int, float | None]]  # (id, name, services, average score)


@dataclass(frozen=True)
class Page:
    query: Query
    rows: list[DashboardRow]
    summary: Summary
    per_page: int = PAGE_SIZE
    teams: list[tuple[int, str]] = field(default_factory=list)
    owners: list[tuple[int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.summary.total

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def first(self) -> int:
        return 0 if not self.rows else (self.query.page - 1) * self.per_page + 1

    @property
    def last(self) -> int:
        return (self.query.page - 1) * self.per_page + len(self.rows)

    def page_numbers(self, around: int = 2) -> list[int | None]:
        """1 … 4 5 [6] 7 8 … 20: None marks a gap."""
        current, last = self.query.page, self.pages
        shown = sorted({1, last, *range(max(1, current - around), min(last, current + around) + 1)})
        numbers: list[int | None] = []
        for number in shown:
            if numbers and number - numbers[-1] > 1:
                numbers.append(None)
            numbers.append(number)
        return numbers


# The statement ---------------------------------------------------------------------------

owner_u = aliased(User, name="owner")


# Per service, correlated and LIMIT 1 through the service_id indexes: each service costs
# a look at its own few rows, where a window over the whole table cost every list (and the
# one-service page) a pass over every assessment.

def _working_query():
    """The open assessment to show: in review before draft (a newer, empty draft never hides
    the one being reviewed), then the newest."""
    return (select(Assessment)
            .where(Assessment.service_id == Service.id, Assessment.state.in_(OPEN_STATES))
            .order_by(case((Assessment.state == "in_review", 0), else_=1),
                      Assessment.created_at.desc(), Assessment.id.desc())
            .limit(1))


def _signed_query():
    """The latest signed-off assessment."""
    return (select(Assessment)
            .where(Assessment.service_id == Service.id, Assessment.state == "signed_off")
            .order_by(Assessment.decided_at.desc(), Assessment.id.desc())
            .limit(1))


def _assessment_joins():
    """(alias, join condition) for the working and the signed-off assessment: by the
    pointers stored on the service (see "Keeping the pointers current" below)."""
    working, signed = aliased(Assessment, name="working"), aliased(Assessment, name="signed")
    return [(working, working.id == Service.working_assessment_id),
            (signed, signed.id == Service.signed_assessment_id)]


def _probe_columns():
    """The worst latest outcome over the service's check kinds, and when it was last checked."""
    severity = case(*((ServiceCheck.outcome == o, r) for o, r in PROBE_SEVERITY.items()), else_=0)
    worst = (select(func.max(severity)).where(ServiceCheck.service_id == Service.id)
             .correlate(Service).scalar_subquery())
    checked = (select(func.max(ServiceCheck.checked_at)).where(ServiceCheck.service_id == Service.id)
               .correlate(Service).scalar_subquery())
    return worst, checked


@dataclass(frozen=True)
class _Shape:
    """The joined statements every list starts from, built once per process: constructing
    them costs more than SQLite takes to run them. The viewer is a bound parameter."""

    rows: Select
    ids: Select
    tiles: Select
    tiles_searching: Select  # with the owner's name, which a search also matches
    columns: dict
    mine: object
    rows_without_trend: Select  # exports without trends: no JSON to decode per row
    needs_attention: object  # the service is among the bound ids "attention_ids"
    tiles_verdict: object  # the verdict as the tiles' statements read it


class _JsonIds(TypeDecorator):
    """A list of ids bound as one JSON string, for SQLite's json_each."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return json.dumps(value)


class _ArrayText(TypeDecorator):
    """A list of ids bound as the text of a PostgreSQL array, '{1,2,3}': psycopg took
    0.45 ms of CPU to adapt a list of 600 ints, this 0.06 ms. Untyped, so the server reads
    the text as the array once (cast from a VARCHAR, it was cast again for every row:
    35 ms instead of 7 for the tiles)."""

    impl = NullType
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return "{" + ",".join(str(int(id_)) for id_ in value) + "}"


def _among_ids(dialect: str, name: str):
    """`Service.id IN <the ids bound as name>` as one parameter, whatever their number: an
    IN list of ~600 ids cost ~3 ms a statement to expand and render, and made the
    statement depend on the data, so it could not be kept."""
    if dialect == "postgresql":
        return Service.id == any_(cast(bindparam(name, type_=_ArrayText()), ARRAY(Integer)))
    if dialect == "sqlite":
        ids = func.json_each(bindparam(name, type_=_JsonIds())).table_valued("value")
        return Service.id.in_(select(ids.c.value))
    return Service.id.in_(bindparam(name, expanding=True))


@functools.cache
def _shape_for(dialect: str) -> _Shape:
    (working_a, working_on), (signed_a, signed_on) = _assessment_joins()
    probe_severity, probe_checked_at = _probe_columns()
    viewer = bindparam("viewer_id", type_=Integer)
    my_teams = select(Membership.team_id).where(Membership.user_id == viewer)
    mine = or_(Service.owner_id == viewer, Service.backup_owner_id == viewer, Service.team_id.in_(my_teams))
    verdict = func.coalesce(working_a.verdict, signed_a.verdict)
    columns = {
        "verdict": verdict,
        "verdict_rank": case(*((verdict == v, r) for v, r in VERDICT_RANK.items()), else_=0),
        "score": func.coalesce(working_a.score, signed_a.score),
        "mine": case((mine, literal(True)), else_=literal(False)),
        "assessed": func.coalesce(working_a.updated_at, signed_a.decided_at),
        "probe_severity": probe_severity,
        "probe_checked_at": probe_checked_at,
        "answered": func.coalesce(working_a.answered_pct, signed_a.answered_pct),
        "blockers": func.coalesce(working_a.blocker_count, signed_a.blocker_count),
        "signed": signed_a.decided_at,
    }

    def joined(*selected, owner: bool = True) -> Select:
        stmt = select(*selected).select_from(Service).join(Team, Team.id == Service.team_id)
        if owner:
            stmt = stmt.outerjoin(owner_u, owner_u.id == Service.owner_id)
        return stmt.outerjoin(working_a, working_on).outerjoin(signed_a, signed_on)

    rows = joined(*_row_columns(working_a, signed_a), columns["mine"].label("mine"), probe_severity.label("probe_severity"),
                  probe_checked_at.label("probe_checked_at"))

    shown, shown_on, shown_verdict, shown_score = _shown(dialect)

    def tiles(owner: bool) -> Select:
        # The tiles read only verdict and score, in which the working assessment hides the
        # signed-off one: one assessment per service, the one `_shown` finds, and the owner
        # joined only for a search (SQLite keeps an unused LEFT JOIN here).
        # Grouped by tier first: by team_id first, SQLite walked the team_id index and read
        # each service from there, not in one pass over the table (1.9 -> 1.5 ms together).
        stmt = select(Service.team_id, Team.name, Service.tier, shown_verdict.label("verdict"),
                      func.count().label("n"), func.count(shown_score).label("scored"),
                      func.sum(shown_score).label("score_sum")).select_from(Service).join(Team, Team.id == Service.team_id)
        if owner:
            stmt = stmt.outerjoin(owner_u, owner_u.id == Service.owner_id)
        return stmt.outerjoin(shown, shown_on).group_by(Service.tier, Service.team_id, Team.name, shown_verdict)

    return _Shape(rows.add_columns(Service.score_trend), joined(Service.id), tiles(False), tiles(True), columns,
                  mine, rows, _among_ids(dialect, "attention_ids"), shown_verdict)


def _shown(dialect: str) -> tuple:
    """(joinable, join condition, verdict, score) of the assessment a service stands at: its
    working one, else its signed-off one, found by the stored pointers. On PostgreSQL a
    LATERAL lookup per service, fenced by OFFSET 0: joined plainly, the planner hashed the
    whole assessment table (twice, with a join per pointer) to find ~1,000 rows (5.4 -> 2.5 ms)."""
    pointer = func.coalesce(Service.working_assessment_id, Service.signed_assessment_id)
    if dialect == "postgresql":
        shown = (select(Assessment.verdict, Assessment.score).where(Assessment.id == pointer)
                 .offset(0).lateral("shown"))
        return shown, true(), shown.c.verdict, shown.c.score
    shown = aliased(Assessment, name="shown")
    return shown, shown.id == pointer, shown.verdict, shown.score


def _shape() -> _Shape:
    return _shape_for(db.session.get_bind().dialect.name)


def _viewer(user_id: int | None) -> dict:
    return {"viewer_id": user_id or -1}


def _params(query: Query, user_id: int | None) -> dict:
    """The values a list's statement is run with: the viewer, and with the attention filter
    the ids from one run of the rules, shared by the tiles and the rows."""
    params = _viewer(user_id)
    if query.attention:
        params["attention_ids"] = list(attention.live_item_counts())
    return params


def _filter(stmt: Select, query: Query, shape: _Shape, verdict=None) -> Select:
    columns = {**shape.columns, "verdict": verdict} if verdict is not None else shape.columns
    if query.lifecycle == "all":
        pass
    elif query.lifecycle:
        stmt = stmt.where(Service.lifecycle == query.lifecycle)
    else:
        stmt = stmt.where(Service.lifecycle != "retired")
    if query.team:
        stmt = stmt.where(Service.team_id == query.team)
    if query.tier:
        stmt = stmt.where(Service.tier == query.tier)
    if query.owner:
        stmt = stmt.where(Service.owner_id == query.owner)
    if query.mine:
        stmt = stmt.where(shape.mine)
    if query.verdict == NOT_ASSESSED:
        stmt = stmt.where(columns["verdict"].is_(None))
    elif query.verdict:
        stmt = stmt.where(columns["verdict"] == query.verdict)
    if query.q:
        stmt = stmt.where(or_(Service.name.icontains(query.q, autoescape=True),
                              Service.slug.icontains(query.q, autoescape=True),
                              Team.name.icontains(query.q, autoescape=True),
                              owner_u.name.icontains(query.q, autoescape=True)))
    if query.attention:  # the ids are a parameter: see `_params`
        stmt = stmt.where(shape.needs_attention)
    return stmt


def _order(query: Query, columns: dict) -> list:
    key = {
        "name": func.lower(Service.name),
        "team": func.lower(Team.name),
        "tier": Service.tier,
        "lifecycle": Service.lifecycle,
        "verdict": columns["verdict_rank"],
        "score": columns["score"],
        "answered": columns["answered"],
        "blockers": columns["blockers"],
        "probes": columns["probe_severity"],
        "owner": func.lower(owner_u.name),
        "assessed": columns["assessed"],
        "signed": columns["signed"],
    }[query.sort]
    primary = key.desc() if query.direction == "desc" else key.asc()
    # Rows without a value go last whichever way the column is sorted.
    return [primary.nulls_last(), func.lower(Service.name), Service.id]


def _row_columns(working_a, signed_a) -> tuple:
    return (
        Service.id, Service.name, Service.slug, Service.team_id, Team.name.label("team_name"),
        Service.tier, Service.lifecycle, Service.owner_id, owner_u.name.label("owner_name"),
        owner_u.email.label("owner_email"),
        working_a.id.label("w_id"), working_a.state.label("w_state"), working_a.score.label("w_score"),
        working_a.verdict.label("w_verdict"), working_a.answered_pct.label("w_answered"),
        working_a.blocker_count.label("w_blockers"), working_a.unanswered_count.label("w_unanswered"),
        working_a.updated_at.label("w_updated_at"), working_a.scored_at.label("w_scored_at"),
        signed_a.id.label("s_id"), signed_a.verdict.label("s_verdict"), signed_a.score.label("s_score"),
        signed_a.decided_at.label("s_decided_at"), signed_a.answered_pct.label("s_answered"),
        signed_a.blocker_count.label("s_blockers"),
    )


def _row(r, attention_counts: dict[int, int] | None = None) -> DashboardRow:
    # Unpacked by position (the columns of `_Shape.rows`): reading 26 columns by name was
    # a third of the time of building a page of rows.
    (service_id, name, slug, team_id, team_name, tier, lifecycle, owner_id, owner_name, owner_email,
     w_id, w_state, w_score, w_verdict, w_answered, w_blockers, w_unanswered, w_updated_at, w_scored_at,
     s_id, s_verdict, s_score, s_decided_at, s_answered, s_blockers, mine, probe_severity, probe_checked_at,
     *trend) = r
    working = None if w_id is None else WorkingAssessment(
        w_id, w_state, w_score, w_verdict, w_answered, w_blockers, w_unanswered, w_updated_at, w_scored_at)
    signed = None if s_id is None else SignedOff(s_id, s_verdict, s_score, s_decided_at, s_answered, s_blockers)
    return DashboardRow(
        service_id=service_id, name=name, slug=slug, team_id=team_id, team_name=team_name,
        tier=tier, lifecycle=lifecycle, owner_id=owner_id, owner_name=owner_name,
        owner_email=owner_email, mine=bool(mine), working=working, signed_off=signed,
        probe_outcome=OUTCOME_OF_SEVERITY.get(probe_severity) if probe_severity is not None else None,
        probe_checked_at=probe_checked_at, trend=tuple(trend[0] or ()) if trend else (),
        attention_items=None if attention_counts is None else attention_counts.get(service_id, 0))


def select_rows(query: Query, user_id: int | None, *, limit: int | None = None,
                offset: int = 0, trend_points: int = TREND_POINTS,
                with_attention: bool = False) -> list[DashboardRow]:
    """Rows matching `query`, sorted, in two queries (rows, then their trends); with how many
    needs-attention items each has if asked: one run of the rules over every live service
    per transaction, shared with the attention filter (`attention.live_item_counts`)."""
    stmt = _statement(_rows_statement, query, bool(trend_points), limit, offset)
    counts = attention.live_item_counts() if with_attention else None
    rows = [_row(r, counts) for r in db.session.execute(stmt, _params(query, user_id))]
    return _with_trends(rows, trend_points)


def _statement(build: Callable[..., Select], query: Query, *args) -> Select:
    """`build(dialect, query, *args)`, kept per process for the queries people repeat (the
    home page first of all): building a statement this size, and the key SQLAlchemy finds
    its compiled form by, cost more than SQLite takes to run it."""
    return _kept_statement(build, db.session.get_bind().dialect.name, query, *args)


@functools.lru_cache(maxsize=256)
def _kept_statement(build: Callable[..., Select], dialect: str, query: Query, *args) -> Select:
    return build(dialect, query, *args)


def _rows_statement(dialect: str, query: Query, with_trend: bool, limit: int | None, offset: int) -> Select:
    shape = _shape_for(dialect)
    order = _order(query, shape.columns)
    stmt = (shape.rows if with_trend else shape.rows_without_trend).order_by(*order)
    if limit is None:
        return _filter(stmt, query, shape)
    # A page: pick its ids first, from a statement that computes only what the filters
    # and the sort use (SQLite then drops the unused joins), so the per-service lookups
    # of the full row run for this page's rows, not for every service (10 -> 2 ms). The
    # filters are not applied again to those ids: PostgreSQL then read every service a
    # second time to test them, the attention filter's ~700 ids included.
    page_ids = _filter(shape.ids, query, shape).order_by(*order).limit(limit).offset(offset)
    return stmt.where(Service.id.in_(page_ids.scalar_subquery()))


def _with_trends(rows: list[DashboardRow], points: int) -> list[DashboardRow]:
    """Rows carry the stored last TREND_POINTS scores; fewer are a slice, more a query."""
    if points > TREND_POINTS and rows:
        trends = score_trends([row.service_id for row in rows], points)
        return [replace(row, trend=tuple(trends.get(row.service_id, ()))) for row in rows]
    # Most rows keep their trend as it is: no copy for them (replace() costs ~10 µs a row).
    return [row if len(row.trend) <= points else replace(row, trend=row.trend[-points:] if points else ())
            for row in rows]


def summary(query: Query, user_id: int | None) -> Summary:
    """Counts by verdict and tier and average score by team, in one grouped query."""
    stmt = _statement(_tiles_statement, query)
    by_verdict = dict.fromkeys((*VERDICTS, NOT_ASSESSED), 0)
    by_tier = dict.fromkeys((1, 2, 3), 0)
    teams: dict[int, list] = {}
    total = 0
    for team_id, team_name, tier, verdict, n, scored, score_sum in db.session.execute(stmt, _params(query, user_id)):
        total += n
        by_verdict[verdict or NOT_ASSESSED] = by_verdict.get(verdict or NOT_ASSESSED, 0) + n
        by_tier[tier] = by_tier.get(tier, 0) + n
        team = teams.setdefault(team_id, [team_name, 0, 0, 0.0])
        team[1] += n
        team[2] += scored
        team[3] += score_sum or 0.0
    by_team = sorted(((tid, name, n, round(total_score / scored, 1) if scored else None)
                      for tid, (name, n, scored, total_score) in teams.items()),
                     key=lambda t: t[1].lower())
    return Summary(total, by_verdict, by_tier, by_team)


def _tiles_statement(dialect: str, query: Query) -> Select:
    shape = _shape_for(dialect)
    return _filter(shape.tiles_searching if query.q else shape.tiles, query, shape, shape.tiles_verdict)


def score_trends(service_ids: list[int] | None, points: int = TREND_POINTS,
                 connection=None) -> dict[int, list[float]]:
    """The last `points` snapshot scores of each service (every service if None), oldest
    first: one windowed query."""
    if service_ids is not None and not service_ids:
        return {}
    stmt = _trends_statement(true() if service_ids is None else ScoreSnapshot.service_id.in_(service_ids), points)
    return _trends((connection or db.session).execute(stmt))


def _trends_statement(which, points):
    rank = func.row_number().over(partition_by=ScoreSnapshot.service_id,
                                  order_by=(ScoreSnapshot.at.desc(), ScoreSnapshot.id.desc()))
    ranked = (select(ScoreSnapshot.service_id, ScoreSnapshot.score, ScoreSnapshot.at, ScoreSnapshot.id,
                     rank.label("rank")).where(which).subquery())
    return (select(ranked.c.service_id, ranked.c.score).where(ranked.c.rank <= points)
            .order_by(ranked.c.service_id, ranked.c.at, ranked.c.id))


def _trends(rows) -> dict[int, list[float]]:
    trends: dict[int, list[float]] = defaultdict(list)
    for service_id, score in rows:
        trends[service_id].append(score)
    return dict(trends)


def score_trend(service: Service, points: int = TREND_POINTS) -> list[float]:
    """One service's last score snapshots, oldest first."""
    return score_trends([service.id], points).get(service.id, [])


def filter_choices() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Teams, and people who own at least one service, for the filter menus (two queries)."""
    teams, owners = _choice_statements()
    return [tuple(r) for r in db.session.execute(teams)], [tuple(r) for r in db.session.execute(owners)]


@functools.cache
def _choice_statements() -> tuple[Select, Select]:
    """Built once per process, like `_shape_for`: they never change."""
    teams = select(Team.id, Team.name).order_by(func.lower(Team.name))
    owners = (select(User.id, User.name)
              .where(User.id.in_(select(Service.owner_id).where(Service.owner_id.is_not(None))))
              .order_by(func.lower(User.name)))
    return teams, owners


def dashboard(query: Query, user_id: int | None, per_page: int = PAGE_SIZE) -> Page:
    """A page of the dashboard: summary, rows and filter menus in five queries."""
    tiles = summary(query, user_id)
    pages = max(1, math.ceil(tiles.total / per_page))
    if query.page > pages:
        query = replace(query, page=pages, ignored=(*query.ignored, f"page={query.page} (there are {pages})"))
    # Items counted only when asked for; the filter has run the rules already.
    rows = select_rows(query, user_id, limit=per_page, offset=(query.page - 1) * per_page,
                       with_attention=query.attention)
    teams, owners = filter_choices()
    return Page(query, rows, tiles, per_page, teams, owners)


def service_row(service_id: int, user_id: int | None = None,
                trend_points: int = TREND_POINTS) -> DashboardRow | None:
    """The dashboard row of one service, retired or not."""
    stmt = _shape().rows.where(Service.id == service_id)
    found = db.session.execute(stmt, _viewer(user_id)).first()
    if found is None:
        return None
    return _with_trends([_row(found)], trend_points)[0]


# Exports ---------------------------------------------------------------------------------

CSV_COLUMNS = ("service_id", "service", "slug", "team", "tier", "lifecycle", "owner", "owner_email",
               "verdict", "score", "working_state", "working_verdict", "working_score", "answered_pct",
               "blockers", "unanswered", "signed_off_verdict", "signed_off_at", "probe_status",
               "last_assessed", "attention_items")


_FORMULA_START = frozenset(("=", "+", "-", "@", "\t", "\r"))


def _cell(value) -> str | int | float:
    """A CSV cell that a spreadsheet will not run as a formula (CWE-1236). Strings checked
    first: they are most cells, and an export of every service has some 20,000."""
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value[:1] in _FORMULA_START else value
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")  # UTC; with a "T" and microseconds, Excel kept text
    if isinstance(value, date):
        return value.isoformat()
    return value


def to_csv(rows: list[DashboardRow]) -> str:
    """The rows as CSV for spreadsheets: a UTF-8 byte-order mark first (without it Excel
    reads the file in the machine's legacy code page and garbles names like "Zoë")."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        w, s = row.working, row.signed_off
        writer.writerow([_cell(v) for v in (
            row.service_id, row.name, row.slug, row.team_name, row.tier, row.lifecycle, row.owner_name,
            row.owner_email, row.verdict, row.score, w and w.state, w and w.verdict, w and w.score,
            row.answered_pct, row.blocker_count, w.unanswered_count if w else (0 if s else None), s and s.verdict,
            s and s.decided_at, row.probe_outcome, row.last_assessed, row.attention_items)])
    return out.getvalue()


# Keeping the read model filled ---------------------------------------------------------

def rescore(*, everything: bool = False, batch_size: int = 200, now: datetime | None = None,
            commit: Callable[[], None] | None = None) -> int:
    """Fill the read model: score assessments with no stored score (scored_at NULL, e.g. rows
    older than the read model), then catch up open ones whose approved waiver lapsed since
    they were scored (`assessments.rescore_lapsed_waivers`); every assessment with
    `everything`. Answers and waivers are loaded a batch at a time (a few queries per batch,
    not one per answer); `commit` runs after each batch. Returns how many were scored.
    When nothing needs it, this costs a few small queries."""
    from webapp.assessments import refresh_score, rescore_lapsed_waivers

    now = now or utcnow()
    condition = literal(True) if everything else Assessment.scored_at.is_(None)
    done, last_id = 0, 0
    while ids := list(db.session.scalars(select(Assessment.id).where(condition, Assessment.id > last_id)
                                         .order_by(Assessment.id).limit(batch_size))):
        last_id = ids[-1]
        batch = db.session.scalars(
            select(Assessment).where(Assessment.id.in_(ids))
            .options(selectinload(Assessment.answers).selectinload(Answer.waivers),
                     selectinload(Assessment.service), selectinload(Assessment.checklist_version)))
        for assessment in batch:
            # Scoring is not an edit: keep updated_at ("last assessed") as it was. Marked
            # before refresh_score flushes, or the column's onupdate would move it.
            flag_modified(assessment, "updated_at")
            refresh_score(assessment, now)
        db.session.flush()
        done += len(ids)
        if commit is not None:
            commit()
    if not everything:
        done += rescore_lapsed_waivers(now)
    refresh_read_model()  # also a backstop for services' pointers and trends
    return done


# Keeping the pointers and trends current -------------------------------------------------
# Service.working_assessment_id / signed_assessment_id are what `_working_query` and
# `_signed_query` would find, and Service.score_trend what `score_trends` would. One hook on
# every ORM session keeps them so: after a flush that inserted, deleted or moved an
# assessment, changed its state, created_at or decided_at, or inserted a score snapshot,
# the services concerned are recomputed in two queries and written only where something
# changed. A GET changes none of these, so it never writes here. Core writes to
# `assessment` or `score_snapshot` bypass the hook: call `refresh_read_model()` after them
# (as `demo.seed` does; `flask assessments rescore` runs it as a backstop).

_POINTER_INPUTS = ("state", "created_at", "decided_at", "service_id")
_PENDING = "dashboard_read_model_services"


def _pointer_values(service_ids: Iterable[int] | None = None) -> Select:
    working = _working_query().with_only_columns(Assessment.id).correlate(Service).scalar_subquery()
    signed = _signed_query().with_only_columns(Assessment.id).correlate(Service).scalar_subquery()
    stmt = select(Service.id, Service.working_assessment_id, Service.signed_assessment_id, working, signed)
    return stmt if service_ids is None else stmt.where(Service.id.in_(list(service_ids)))


@functools.cache
def _refresh_statements() -> tuple[Select, Select, Select]:
    """refresh_read_model's three reads for a list of services, built once per process: it
    runs after every flush that touches an assessment (a sweep's every answered service),
    and building the statements each time was most of its cost."""
    ids = bindparam("ids", expanding=True)
    return (select(Service.id, Service.score_trend).where(Service.id.in_(ids)),
            _trends_statement(ScoreSnapshot.service_id.in_(ids), TREND_POINTS),
            _pointer_values().where(Service.id.in_(ids)))


def refresh_read_model(session: Session | None = None, service_ids: Iterable[int] | None = None) -> int:
    """Recompute the pointers and trends of `service_ids` (every service if None); returns
    how many services changed. Runs on the session's connection, in its transaction."""
    session = session or db.session
    connection = session.connection()
    ids = None if service_ids is None else sorted(set(service_ids))
    if ids is None:
        reads = (select(Service.id, Service.score_trend), _trends_statement(true(), TREND_POINTS), _pointer_values())
        params = {}
    else:
        reads, params = _refresh_statements(), {"ids": ids}
    stored_read, trends_read, pointers_read = reads
    stored = {sid: tuple(trend or ()) for sid, trend in connection.execute(stored_read, params)}
    trends = _trends(connection.execute(trends_read, params))
    changed = []
    for sid, old_w, old_s, w, s in connection.execute(pointers_read, params):
        trend = trends.get(sid, [])
        if (old_w, old_s, stored.get(sid, ())) != (w, s, tuple(trend)):
            changed.append({"sid": sid, "w": w, "s": s, "t": trend})
    if changed:
        table = Service.__table__
        # Not an edit of the service: updated_at stays as it was.
        connection.execute(update(table).where(table.c.id == bindparam("sid"))
                           .values(working_assessment_id=bindparam("w"), signed_assessment_id=bindparam("s"),
                                   score_trend=bindparam("t", type_=table.c.score_trend.type),
                                   updated_at=table.c.updated_at), changed)
        for row in changed:  # loaded services show the new values without a reload
            service = session.identity_map.get(inspect(Service).identity_key_from_primary_key((row["sid"],)))
            if service is not None:
                set_committed_value(service, "working_assessment_id", row["w"])
                set_committed_value(service, "signed_assessment_id", row["s"])
                set_committed_value(service, "score_trend", row["t"])
    return len(changed)


def _note(session: Session, service_ids: Iterable[int | None]) -> None:
    noted = {sid for sid in service_ids if sid is not None}
    if noted:
        session.info.setdefault(_PENDING, set()).update(noted)


@event.listens_for(Session, "before_flush")
def _note_deleted_assessments(session: Session, flush_context, instances) -> None:
    """Deleted rows are read before the flush: afterwards there is no row to load from.
    (Their snapshots go with them, by ON DELETE CASCADE: the trend is refreshed too.)"""
    _note(session, (obj.service_id for obj in session.deleted if isinstance(obj, Assessment | ScoreSnapshot)))


@event.listens_for(Session, "after_flush")
def _note_assessment_changes(session: Session, flush_context) -> None:
    """Note which services this flush may have changed. In after_flush the new rows have
    their ids and attribute history still says what changed."""
    noted = [obj.service_id for obj in session.new if isinstance(obj, Assessment | ScoreSnapshot)]
    for obj in session.dirty:
        if isinstance(obj, Assessment):
            attrs = inspect(obj).attrs
            if any(attrs[name].history.has_changes() for name in _POINTER_INPUTS):
                noted += [obj.service_id, *(attrs.service_id.history.deleted or ())]
    _note(session, noted)


@event.listens_for(Session, "after_flush_postexec")
def _refresh_noted(session: Session, flush_context) -> None:
    noted = session.info.pop(_PENDING, None)
    if noted:
        refresh_read_model(session, noted)
