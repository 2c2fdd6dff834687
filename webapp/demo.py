"""Demo data for screenshots and benchmarks (`flask demo seed`): teams, people, services at
every tier, lifecycle and verdict, months of assessment history with answer changes and
score snapshots, probe results, runbooks and owner changes.

Deterministic (one seeded `random.Random`) and fast enough for thousands of services: rows
are generated a service at a time and written with executemany INSERTs (explicit ids, no
ORM objects). Scores are computed with the real scoring module, so the stored read model
(`Assessment.score`, `verdict`, ...) is exactly what `flask assessments rescore --all` gives.

Each kind of data has its own function taking the seeding context; to add a kind (sign-off
decisions, signed reports, conditions), write a `seed_<kind>(ctx, ...)` and call it from
`seed()` where the comment marks the place. Flushes only; the CLI commits.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import JSON, Boolean, Date, func, select, text
from werkzeug.security import generate_password_hash

from webapp import catalog, dashboard, scoring
from webapp.checklists import Checklist, Item
from webapp.extensions import db
from webapp.models import (
    Answer,
    AnswerChange,
    Assessment,
    ChecklistVersion,
    Membership,
    OwnershipChange,
    ProbeDailyRollup,
    ProbeResult,
    ProbeRun,
    Report,
    RunbookRevision,
    ScoreSnapshot,
    Service,
    ServiceCheck,
    SignOff,
    Team,
    User,
    UTCDateTime,
    Waiver,
    utcnow,
)
from webapp.presentation import render_markdown

PASSWORD = "preflight-demo"
EMAIL_DOMAIN = "demo.preflight.test"
CHECKLIST_SLUG = "production-readiness"
FLUSH_ROWS = 20_000  # rows buffered per table before an INSERT batch

TEAMS = ("Payments", "Identity", "Search", "Checkout", "Notifications", "Data Platform",
         "Mobile API", "Observability", "Storage", "Billing", "Growth", "Messaging")
FIRST = ("Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Alan", "Radia",
         "Edsger", "Sophie", "Donald", "Hedy", "Tim", "Katherine", "Guido", "Annie", "Vint", "Joan")
LAST = ("Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen",
        "Turing", "Perlman", "Dijkstra", "Wilson", "Knuth", "Lamarr", "Berners-Lee", "Johnson")
NOUNS = ("gateway", "ledger", "router", "indexer", "scheduler", "resolver", "catalog", "vault",
         "relay", "tracker", "broker", "renderer", "collector", "planner", "mailer", "auditor",
         "matcher", "profile", "session", "quota", "invoice", "wallet", "feed", "export")
ADJECTIVES = ("core", "edge", "batch", "realtime", "legacy", "public", "internal", "async",
              "bulk", "smart", "fast", "shadow", "global", "regional", "secure", "partner")
TIER_WEIGHTS = ((1, 2), (2, 5), (3, 3))
LIFECYCLE_WEIGHTS = (("planned", 8), ("launching", 14), ("live", 72), ("retired", 6))
TARGET_WEIGHTS = (("ready", 35), ("ready_with_conditions", 30), ("not_ready", 35))
PROBE_KINDS = ("health", "readiness", "https", "security_headers", "correlation_id", "latency",
               "runbook_present", "oncall_present")
ROLLUP_DAYS, RUNS_PER_DAY = 60, 96  # health-check history before the raw results
OUTCOME_WEIGHTS = {"healthy": (("pass", 96), ("warn", 3), ("fail", 1), ("error", 0)),
                   "flaky": (("pass", 70), ("warn", 15), ("fail", 10), ("error", 5)),
                   "down": (("pass", 10), ("warn", 10), ("fail", 40), ("error", 40))}


class DemoError(RuntimeError):
    """Seeding cannot go ahead; the message says why."""


def first_email() -> str:
    return f"{FIRST[0].lower()}.{LAST[0].lower()}@{EMAIL_DOMAIN}"


def _pick(rng: random.Random, weighted) -> object:
    values, weights = zip(*weighted, strict=True)
    return rng.choices(values, weights)[0]


class Writer:
    """Buffers rows per table and writes them with executemany INSERTs, assigning ids."""

    def __init__(self) -> None:
        self.rows: dict[type, list[dict]] = defaultdict(list)
        self.next_ids: dict[type, int] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def new_id(self, model: type) -> int:
        if model not in self.next_ids:
            self.next_ids[model] = (db.session.scalar(select(func.max(model.id))) or 0) + 1
        self.next_ids[model] += 1
        return self.next_ids[model] - 1

    def add(self, model: type, **values) -> int:
        values.setdefault("id", self.new_id(model))
        self.rows[model].append(values)
        if len(self.rows[model]) >= FLUSH_ROWS:
            self.flush()  # everything, so foreign keys always point at written rows
        return values["id"]

    def flush(self) -> None:
        """Straight to the driver's executemany: SQLAlchemy's per-row parameter processing
        would cost more than the database does. Values are converted here as the column
        types would (UTC datetimes, JSON text, SQLite's forms of dates and booleans)."""
        connection = db.session.connection()
        sqlite = connection.dialect.name == "sqlite"
        mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
        for model in FLUSH_ORDER:
            rows = self.rows.pop(model, None)
            if not rows:
                continue
            names = list(rows[0])
            convert = [(i, _converter(model.__table__.c[name].type, sqlite)) for i, name in enumerate(names)]
            convert = [(i, f) for i, f in convert if f is not None]
            values = []
            for row in rows:
                record = [row[name] for name in names]
                for index, function in convert:
                    if record[index] is not None:
                        record[index] = function(record[index])
                values.append(tuple(record))
            columns = ", ".join(f'"{name}"' for name in names)
            connection.exec_driver_sql(
                f'INSERT INTO "{model.__tablename__}" ({columns}) VALUES ({", ".join([mark] * len(names))})', values)
            self.counts[model.__tablename__] += len(rows)

    def reset_sequences(self) -> None:
        """PostgreSQL: explicit ids leave the serial sequences behind; move them on."""
        if db.session.get_bind().dialect.name != "postgresql":
            return
        for model in self.next_ids:
            table = model.__tablename__
            db.session.execute(text(
                f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                f"(SELECT COALESCE(MAX(id), 1) FROM \"{table}\"))"))


def _converter(column_type, sqlite: bool):
    """How a Python value of this column type goes to the driver, or None when as it is."""
    if isinstance(column_type, UTCDateTime):
        if sqlite:  # what SQLAlchemy's SQLite DateTime stores: naive UTC, microseconds
            return lambda v: v.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return lambda v: v.astimezone(UTC)
    if isinstance(column_type, Date) and sqlite:
        return date.isoformat
    if isinstance(column_type, JSON):
        return json.dumps
    if isinstance(column_type, Boolean) and sqlite:
        return int
    return None


FLUSH_ORDER = (User, Team, Membership, Service, OwnershipChange, RunbookRevision, Assessment,
               Answer, AnswerChange, Waiver, ScoreSnapshot, SignOff, ProbeRun, ProbeResult, ServiceCheck,
               ProbeDailyRollup)


@dataclass
class Context:
    rng: random.Random
    now: datetime
    version: ChecklistVersion
    checklist: Checklist
    writer: Writer = field(default_factory=Writer)
    users: list[int] = field(default_factory=list)
    admin_id: int = 0


@dataclass
class DemoService:
    id: int
    team_id: int
    slug: str
    tier: int
    lifecycle: str
    owner_id: int | None
    members: list[int]
    target: str  # the verdict its history converges on
    signed_off: list[int] = field(default_factory=list)  # assessment ids, oldest first


def seed(services: int = 60, assessments_per_service: int = 20, seed: int = 7,
         now: datetime | None = None, reports: int = 0) -> dict[str, int]:
    """Create the demo data; returns rows written per table. Refuses to run twice (`extend`
    adds to demo data already here).
    `reports`: how many services get a signed, stored PDF report for their latest sign-off
    (rendering costs about a second each, so it is bounded; `flask demo seed` asks for 5)."""
    if present():
        raise DemoError("Demo data is already here (demo users exist). Use a fresh database to seed again.")
    catalog.sync()
    version = catalog.latest_version(CHECKLIST_SLUG)
    if version is None:
        raise DemoError(f"The {CHECKLIST_SLUG!r} checklist is not loaded; run `flask checklists sync`.")
    ctx = Context(random.Random(seed), now or utcnow(), version, catalog.checklist_of(version))
    seed_users(ctx, people=max(12, min(120, services // 8)))
    teams = seed_teams(ctx, count=max(3, min(len(TEAMS), services // 5)))
    demo_services = seed_services(ctx, teams, services)
    for service in demo_services:
        seed_ownership_history(ctx, service)
        seed_runbook(ctx, service)
        seed_assessments(ctx, service, assessments_per_service)
        seed_probes(ctx, service)
        # More kinds of history per service go here (sign-off decisions, reports, conditions).
    ctx.writer.flush()
    ctx.writer.reset_sequences()
    dashboard.refresh_read_model()  # the writer's Core INSERTs bypass the hook that keeps it
    counts = dict(ctx.writer.counts)
    counts["report"] = seed_reports(ctx, demo_services, reports)
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("ANALYZE"))  # fresh statistics, or the planner guesses 45 rows
    db.session.flush()
    return counts


def present() -> bool:
    """Whether demo data is here already (its people exist)."""
    return db.session.scalar(select(User.id).where(User.email.like(f"%@{EMAIL_DOMAIN}")).limit(1)) is not None


def extend(reports: int = 0) -> dict[str, int]:
    """Demo data is here already: add what a newer seed makes and an older one may not have,
    touching nothing else. Each signed-off (or superseded) demo assessment without approvals
    gets the owner's and a reviewer's; up to `reports` services whose latest sign-off has no
    stored report get one. Running it again adds nothing new (returns zero counts)."""
    demo_users = select(User.id).where(User.email.like(f"%@{EMAIL_DOMAIN}"))
    demo_teams = select(Membership.team_id).where(Membership.user_id.in_(demo_users))
    reviewer = db.session.scalar(select(User.id).where(User.id.in_(demo_users), User.is_reviewer)
                                 .order_by(User.id).limit(1))
    admin = db.session.scalar(select(User).where(User.id.in_(demo_users), User.is_admin).order_by(User.id).limit(1))
    unsigned = db.session.execute(
        select(Assessment.id, Assessment.decided_at, Service.owner_id, Service.tier)
        .join(Service, Service.id == Assessment.service_id)
        .where(Service.team_id.in_(demo_teams), Assessment.state.in_(("signed_off", "superseded")),
               ~select(SignOff.id).where(SignOff.assessment_id == Assessment.id).exists())).all()
    for assessment_id, decided_at, owner_id, tier in unsigned:
        at = decided_at or utcnow()
        db.session.add_all([
            SignOff(assessment_id=assessment_id, signer_id=owner_id or admin.id, role="owner", decision="approve",
                    comment="", at=at - timedelta(hours=1)),
            SignOff(assessment_id=assessment_id, signer_id=reviewer or owner_id,
                    role="sre" if tier < 3 else "reviewer", decision="approve", comment="", at=at),
        ])
    db.session.flush()
    latest = (select(func.max(Assessment.id)).where(Assessment.state == "signed_off")
              .group_by(Assessment.service_id))
    missing = db.session.scalars(
        select(Assessment).join(Service, Service.id == Assessment.service_id)
        .where(Assessment.id.in_(latest), Service.team_id.in_(demo_teams),
               ~select(Report.id).where(Report.assessment_id == Assessment.id).exists())
        .order_by(Assessment.service_id).limit(reports)).all() if reports else []
    for assessment in missing:
        _issue_report(assessment, admin)
    return {"sign_off": 2 * len(unsigned), "report": len(missing)}


# People and teams ---------------------------------------------------------------------

def seed_users(ctx: Context, people: int) -> None:
    """An admin, reviewers and engineers, all with the demo password (hashed once)."""
    password_hash = generate_password_hash(PASSWORD)
    for index in range(people):
        first, last = FIRST[index % len(FIRST)], LAST[(index // len(FIRST) + index) % len(LAST)]
        suffix = "" if index < len(FIRST) else str(index // len(FIRST))
        email = f"{first.lower()}.{last.lower().replace(' ', '')}{suffix}@{EMAIL_DOMAIN}"
        user_id = ctx.writer.add(User, email=email, name=f"{first} {last}", password_hash=password_hash,
                                 is_admin=index == 0, is_reviewer=index % 6 in (1, 4), disabled_at=None,
                                 reviewer_roles=["sre"] if index % 6 == 1 else ["security"] if index % 6 == 4 else [],
                                 created_at=ctx.now - timedelta(days=400 - index))
        ctx.users.append(user_id)
    ctx.admin_id = ctx.users[0]


def seed_teams(ctx: Context, count: int) -> list[tuple[int, list[int]]]:
    """Teams with 3-8 members (maintainers, members, a viewer); returns (id, member ids)."""
    teams = []
    for index in range(count):
        name = TEAMS[index % len(TEAMS)] + ("" if index < len(TEAMS) else f" {index // len(TEAMS) + 1}")
        team_id = ctx.writer.add(Team, name=name, slug=name.lower().replace(" ", "-"),
                                 description=f"The {name} team's services.",
                                 created_at=ctx.now - timedelta(days=380))
        members = ctx.rng.sample(ctx.users, k=min(len(ctx.users), ctx.rng.randint(3, 8)))
        for position, user_id in enumerate(members):
            role = "maintainer" if position == 0 else ("viewer" if position == len(members) - 1 else "member")
            ctx.writer.add(Membership, team_id=team_id, user_id=user_id, role=role,
                           created_at=ctx.now - timedelta(days=370))
        teams.append((team_id, members))
    return teams


def seed_services(ctx: Context, teams: list[tuple[int, list[int]]], count: int) -> list[DemoService]:
    """Services spread over teams, tiers and lifecycles; most have an owner and a backup."""
    out, slugs = [], set()
    for index in range(count):
        team_id, members = teams[index % len(teams)]
        name = f"{ctx.rng.choice(ADJECTIVES)} {ctx.rng.choice(NOUNS)}"
        slug = name.replace(" ", "-")
        if slug in slugs:
            slug, name = f"{slug}-{index}", f"{name} {index}"
        slugs.add(slug)
        tier = _pick(ctx.rng, TIER_WEIGHTS)
        lifecycle = _pick(ctx.rng, LIFECYCLE_WEIGHTS)
        owner = ctx.rng.choice(members) if ctx.rng.random() > 0.05 else None
        backup = ctx.rng.choice([m for m in members if m != owner] or [None]) if ctx.rng.random() > 0.15 else None
        probed = lifecycle in ("launching", "live")
        host = f"https://{slug}.demo.invalid"
        created = ctx.now - timedelta(days=ctx.rng.randint(200, 360))
        service_id = ctx.writer.add(
            Service, team_id=team_id, name=name.title(), slug=slug, tier=tier, lifecycle=lifecycle,
            description=f"{name.title()} for the {TEAMS[index % len(TEAMS)]} domain.",
            owner_id=owner, backup_owner_id=backup,
            oncall_url=f"https://oncall.demo.invalid/{slug}" if ctx.rng.random() > 0.1 else None,
            repository_url=f"https://git.demo.invalid/{slug}", dashboard_url=None,
            base_url=host if probed else None, health_url=f"{host}/healthz" if probed else None,
            readiness_url=f"{host}/readyz" if probed else None, deep_health_url=None, metrics_url=None,
            probe_interval_minutes=15,
            # Demo hosts do not resolve: keep the scheduler from probing them for a month.
            next_probe_at=ctx.now + timedelta(days=30),
            created_at=created, updated_at=created,
            retired_at=ctx.now - timedelta(days=20) if lifecycle == "retired" else None)
        out.append(DemoService(service_id, team_id, slug, tier, lifecycle, owner, members,
                               _pick(ctx.rng, TARGET_WEIGHTS)))
    return out


def seed_ownership_history(ctx: Context, service: DemoService) -> None:
    for _ in range(ctx.rng.choice((0, 0, 1, 2))):
        ctx.writer.add(OwnershipChange, service_id=service.id, field="owner",
                       from_user_id=ctx.rng.choice(service.members), to_user_id=service.owner_id,
                       changed_by_id=service.members[0],
                       changed_at=ctx.now - timedelta(days=ctx.rng.randint(10, 180)))


def seed_runbook(ctx: Context, service: DemoService) -> None:
    if service.lifecycle == "planned" or ctx.rng.random() < 0.2:
        return
    revisions = ctx.rng.randint(1, 4)
    for number in range(revisions):
        created = ctx.now - timedelta(days=30 * (revisions - number) + ctx.rng.randint(0, 20))
        reviewed = created + timedelta(days=2) if ctx.rng.random() < 0.6 else None
        body = (f"# {service.slug} runbook (revision {number + 1})\n\n## Paging\n"
                "Check the dashboard, then the last deploy.\n\n## Rollback\n`deploy rollback`\n")
        ctx.writer.add(RunbookRevision, service_id=service.id, author_id=ctx.rng.choice(service.members),
                       body=body, body_html=str(render_markdown(body)), created_at=created,
                       reviewed_at=reviewed, reviewed_by_id=service.members[0] if reviewed else None)


# Assessments --------------------------------------------------------------------------

def _final_statuses(ctx: Context, items: list[Item], target: str) -> dict[str, str | None]:
    """Where the service's answers end up, shaped by the verdict it is heading for."""
    rng, statuses = ctx.rng, {}
    met = {"ready": 0.95, "ready_with_conditions": 0.62, "not_ready": 0.5}[target]
    broken_critical = rng.choice([i.key for i in items if i.critical] or [None]) if target == "not_ready" else None
    for item in items:
        if item.critical and target != "not_ready":
            statuses[item.key] = "met"
        elif item.key == broken_critical:
            statuses[item.key] = "not_met"
        else:
            roll = rng.random()
            statuses[item.key] = ("met" if roll < met else "partial" if roll < met + (1 - met) / 2
                                  else "n_a" if roll > 0.985 else "not_met")
    return statuses


def _worse(rng: random.Random, status: str | None) -> str | None:
    return {"met": rng.choice(("partial", "not_met", None)), "partial": rng.choice(("not_met", None)),
            "n_a": None}.get(status)


def _card(ctx: Context, items: list[Item], statuses: dict[str, str | None], tier: int,
          waivers: dict[str, date]) -> scoring.ScoreCard:
    states = {key: scoring.AnswerState(status, _waiver_expiry(waivers.get(key)))
              for key, status in statuses.items() if status is not None}
    return scoring.score_assessment(items, states, tier=tier, now=ctx.now,
                                    ready_threshold=ctx.checklist.thresholds.ready,
                                    conditions_threshold=ctx.checklist.thresholds.conditions)


def _waiver_expiry(expires_on: date | None) -> datetime | None:
    if expires_on is None:
        return None
    return datetime(expires_on.year, expires_on.month, expires_on.day, 23, 59, 59, tzinfo=UTC)


def _states_plan(rng: random.Random, count: int, lifecycle: str) -> list[str]:
    """The life of `count` assessments, oldest first: review cycles that end signed off or
    rejected, the newest left open (signed off, for a retired service)."""
    states = ["signed_off" if rng.random() < 0.75 else "rejected" for _ in range(count - 1)]
    states.append("signed_off" if lifecycle == "retired" else "in_review" if rng.random() < 0.4 else "draft")
    return states


def seed_assessments(ctx: Context, service: DemoService, per_service: int) -> None:
    """Assessments spread over the past months, each improving on the one before; answers,
    their change history, waivers, score snapshots, and the stored read model."""
    rng = ctx.rng
    if service.lifecycle == "planned":
        count = rng.choice((0, 1, 2))
    else:
        count = per_service if rng.random() > 0.03 else 0
    if count == 0:
        return
    items = [i for i in ctx.checklist.items if i.applies_to(service.tier)]
    final = _final_statuses(ctx, items, service.target)
    states = _states_plan(rng, count, service.lifecycle)
    span_days = min(360, 9 * count)
    waivers: dict[str, date] = {}
    if service.target == "ready_with_conditions" and rng.random() < 0.3:
        gap = rng.choice([i for i in items if not i.critical])
        final[gap.key] = "not_met"
        waivers[gap.key] = (ctx.now + timedelta(days=rng.randint(5, 120))).date()
    planned, previous = [], {}
    for index, state in enumerate(states):
        progress = (index + 1) / count
        statuses = {item.key: (final[item.key] if rng.random() < 0.35 + 0.65 * progress
                               else _worse(rng, final[item.key])) for item in items}
        if state == "draft":  # work in progress: some items still as they were, or unanswered
            for item in items:
                if rng.random() < 0.25:
                    statuses[item.key] = previous.get(item.key)
        else:  # submitted: every item was answered
            statuses = {k: (v if v is not None else "not_met") for k, v in statuses.items()}
        if state == "signed_off" and _card(ctx, items, statuses, service.tier, {}).verdict == "not_ready":
            state = "rejected"  # reviewers do not sign off what is not ready
        planned.append((state, statuses, previous))
        previous = statuses
    # Only the newest sign-off stays signed_off; the ones before it were superseded.
    last_signed = max((i for i, (state, _, _) in enumerate(planned) if state == "signed_off"), default=None)
    for index, (state, statuses, before) in enumerate(planned):
        if state == "signed_off" and index != last_signed:
            state = "superseded"
        is_last = index == count - 1
        created = ctx.now - timedelta(days=span_days * (1 - index / count), hours=rng.randint(0, 12))
        updated = min(ctx.now - timedelta(minutes=5), created + timedelta(days=rng.randint(1, 6)))
        assessment_id = _write_assessment(ctx, service, items, statuses, before, state, created, updated,
                                          waivers if is_last else {})
        if state in ("signed_off", "superseded"):
            service.signed_off.append(assessment_id)
        if is_last and state == "in_review" and rng.random() < 0.15:
            # Someone started a new draft while the last one is in review: the dashboard must
            # keep showing the one in review.
            later = min(ctx.now - timedelta(minutes=1), updated + timedelta(hours=3))
            _write_assessment(ctx, service, items, dict.fromkeys(statuses), {}, "draft", later, later, {})


def _write_assessment(ctx: Context, service: DemoService, items: list[Item], statuses: dict,
                      previous: dict, state: str, created: datetime, updated: datetime,
                      waivers: dict[str, date]) -> int:
    rng, writer = ctx.rng, ctx.writer
    card = _card(ctx, items, statuses, service.tier, waivers)
    decided = updated if state in ("signed_off", "superseded", "rejected") else None
    author = service.owner_id or service.members[0]
    assessment_id = writer.add(
        Assessment, service_id=service.id, checklist_version_id=ctx.version.id, state=state,
        created_by_id=author, copied_from_id=None, created_at=created, updated_at=updated,
        submitted_at=updated - timedelta(hours=2) if state != "draft" else None, decided_at=decided,
        review_round=0 if state == "draft" else 1,  # submitted once, as sign-offs' round 1 says
        score=card.score, verdict=card.verdict, answered_pct=card.percent_answered,
        unanswered_count=len(card.unanswered), blocker_count=len(card.blockers), scored_at=updated)
    for item in items:
        status = statuses.get(item.key)
        if status is None:
            continue
        answered = created + (updated - created) * rng.random()
        answer_id = writer.add(
            Answer, assessment_id=assessment_id, item_key=item.key, status=status,
            note="Not applicable: no user-facing traffic." if status == "n_a" else "",
            source="manual", answered_by_id=rng.choice(service.members), answered_at=answered,
            probe_result_id=None, version=1)
        writer.add(AnswerChange, answer_id=answer_id, from_status=previous.get(item.key), to_status=status,
                   note="", source="manual", changed_by_id=author, changed_at=answered)
        if item.key in waivers:
            writer.add(Waiver, answer_id=answer_id, reason="Scheduled for next quarter.",
                       compensating_control="Manual check in the weekly ops review.",
                       risk_owner_id=author, expires_on=waivers[item.key], state="approved",
                       requested_by_id=author, requested_at=answered, approved_by_id=ctx.admin_id,
                       decided_at=answered + timedelta(hours=4))
    # The trend: the score as work started (half the answers in) and as it stands.
    halfway = {k: (v if rng.random() < 0.5 else previous.get(k)) for k, v in statuses.items()}
    for at, point in ((created + (updated - created) / 3, _card(ctx, items, halfway, service.tier, {})),
                      (updated, card)):
        writer.add(ScoreSnapshot, service_id=service.id, assessment_id=assessment_id, at=at,
                   score=point.score, verdict=point.verdict,
                   categories={k: c.score for k, c in point.categories.items()})
    if state in ("signed_off", "superseded"):
        seed_signoffs(ctx, service, assessment_id, decided)
    return assessment_id


def seed_signoffs(ctx: Context, service: DemoService, assessment_id: int, at: datetime) -> None:
    """The approvals behind a sign-off: the owner, and a reviewer for the other role."""
    reviewer = ctx.users[1]
    ctx.writer.add(SignOff, assessment_id=assessment_id, signer_id=service.owner_id or service.members[0],
                   role="owner", decision="approve", comment="", at=at - timedelta(hours=1))
    ctx.writer.add(SignOff, assessment_id=assessment_id, signer_id=reviewer,
                   role="sre" if service.tier < 3 else "reviewer", decision="approve", comment="", at=at)


def seed_reports(ctx: Context, services: list[DemoService], limit: int) -> int:
    """Signed PDF reports, made exactly as a sign-off makes them (snapshot, render, sign,
    store), for the latest signed-off assessment of the first `limit` services that have
    one. Runs after the bulk INSERTs, through the ORM, since it renders from the rows."""
    made = 0
    for service in services:
        if made >= limit:
            break
        if not service.signed_off:
            continue
        _issue_report(db.session.get(Assessment, service.signed_off[-1]), db.session.get(User, ctx.admin_id))
        made += 1
    return made


def _issue_report(assessment: Assessment, actor: User) -> None:
    """Render, sign and store the report of a signed-off assessment, as its sign-off would,
    dated at that sign-off."""
    from webapp import reports, reviews

    body = reviews.canonical_json(reviews.snapshot(assessment))
    reports.issue(assessment, body, actor, at=assessment.decided_at)


# Probes -------------------------------------------------------------------------------

def seed_probes(ctx: Context, service: DemoService, runs: int = 12) -> None:
    """Hourly runs over the last half day, the latest outcome per kind (ServiceCheck), and the
    health checks of the weeks before as retention leaves them: one roll-up per day."""
    if service.lifecycle not in ("launching", "live"):
        return
    rng, writer = ctx.rng, ctx.writer
    health = rng.choices(("healthy", "flaky", "down"), (80, 15, 5))[0]
    latest: dict[str, tuple[str, int, datetime, datetime]] = {}  # kind -> outcome, id, at, changed
    for number in range(runs):
        started = ctx.now - timedelta(hours=runs - number, minutes=rng.randint(0, 10))
        finished = started + timedelta(seconds=2)
        run_id = writer.add(ProbeRun, service_id=service.id, trigger="schedule", started_at=started,
                            finished_at=finished)
        for kind in PROBE_KINDS:
            outcome = _pick(rng, OUTCOME_WEIGHTS[health])
            latency = round(rng.lognormvariate(3.5, 0.5), 1) if outcome != "error" else None
            result_id = writer.add(
                ProbeResult, run_id=run_id, service_id=service.id, kind=kind,
                url=f"https://{service.slug}.demo.invalid/healthz", started_at=started, finished_at=finished,
                outcome=outcome, status_code=None if outcome == "error" else (200 if outcome != "fail" else 503),
                latency_ms=latency, error_code="connect_timeout" if outcome == "error" else None,
                explanation=f"{kind}: {outcome}", details={})
            changed = latest[kind][3] if kind in latest and latest[kind][0] == outcome else finished
            latest[kind] = (outcome, result_id, finished, changed)
    for kind, (outcome, result_id, checked, changed) in latest.items():
        writer.add(ServiceCheck, service_id=service.id, kind=kind, outcome=outcome, result_id=result_id,
                   checked_at=checked, changed_at=changed)
    column = {"warn": "warns", "fail": "fails", "error": "errors"}
    for days_ago in range(ROLLUP_DAYS, 1, -1):  # health only: the day-by-day bar reads it
        worst = _pick(rng, OUTCOME_WEIGHTS[health])
        counts = {"warns": 0, "fails": 0, "errors": 0}
        if worst != "pass":
            counts[column[worst]] = rng.randint(1, 6)
        writer.add(ProbeDailyRollup, service_id=service.id, kind="health", day=ctx.now.date() - timedelta(days=days_ago),
                   runs=RUNS_PER_DAY, passes=RUNS_PER_DAY - sum(counts.values()), **counts,
                   latency_ms_median=round(rng.lognormvariate(3.5, 0.3), 1))
