"""The tables of DESIGN.md §2. Models hold data and small derived properties, no workflow."""

from __future__ import annotations

from datetime import UTC, date, datetime

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates
from sqlalchemy.types import TypeDecorator
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.extensions import db
from webapp.presentation import render_note


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores aware UTC datetimes; SQLite drops tzinfo, so put it back on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


ROLES = ("maintainer", "member", "viewer")
TIERS = (1, 2, 3)
LIFECYCLES = ("planned", "launching", "live", "retired")
ASSESSMENT_STATES = ("draft", "in_review", "signed_off", "rejected", "superseded")
ANSWER_STATUSES = ("met", "partial", "not_met", "n_a")
ANSWER_SOURCES = ("manual", "probe")
WAIVER_STATES = ("requested", "approved", "declined")
PROBE_OUTCOMES = ("pass", "warn", "fail", "error")
SIGNOFF_DECISIONS = ("approve", "approve_with_conditions", "reject")


def _in(column: str, values: tuple) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class User(UserMixin, db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(256))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    is_reviewer: Mapped[bool] = mapped_column(Boolean, default=False)
    # Sign-off roles an admin granted (e.g. ["sre", "security"]); see webapp/reviews.py.
    reviewer_roles: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Part of the id every session and "remember me" cookie carries; bumped on sign-out and
    # password change, which ends every session of the user, copies of the cookies included.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    memberships: Mapped[list[Membership]] = relationship(back_populates="user")

    def get_id(self) -> str:
        """What Flask-Login stores in the session and the remember cookie: "id:generation"."""
        return f"{self.id}:{self.session_generation}"

    @property
    def is_active(self) -> bool:  # Flask-Login refuses sessions of disabled users
        return self.disabled_at is None

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)  # scrypt, Werkzeug's default

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<User {self.email}>"


class Invitation(db.Model):
    """A one-time sign-up link an admin hands to a person; only its hash is stored."""

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_reviewer: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    created_by: Mapped[User] = relationship()


class Team(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="team", cascade="all, delete-orphan"
    )
    services: Mapped[list[Service]] = relationship(back_populates="team", order_by="Service.name")


class Membership(db.Model):
    __table_args__ = (
        UniqueConstraint("team_id", "user_id"),
        CheckConstraint(_in("role", ROLES), name="role"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    team: Mapped[Team] = relationship(back_populates="memberships")
    user: Mapped[User] = relationship(back_populates="memberships")


class Service(db.Model):
    __table_args__ = (
        UniqueConstraint("team_id", "slug"),
        CheckConstraint("tier BETWEEN 1 AND 3", name="tier"),
        CheckConstraint(_in("lifecycle", LIFECYCLES), name="lifecycle"),
        CheckConstraint("probe_interval_minutes BETWEEN 1 AND 1440", name="probe_interval"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("team.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    slug: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="")
    tier: Mapped[int] = mapped_column(Integer, default=2)
    lifecycle: Mapped[str] = mapped_column(String(20), default="planned")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    backup_owner_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    oncall_url: Mapped[str | None] = mapped_column(String(2048))
    repository_url: Mapped[str | None] = mapped_column(String(2048))
    dashboard_url: Mapped[str | None] = mapped_column(String(2048))
    base_url: Mapped[str | None] = mapped_column(String(2048))
    health_url: Mapped[str | None] = mapped_column(String(2048))
    readiness_url: Mapped[str | None] = mapped_column(String(2048))
    deep_health_url: Mapped[str | None] = mapped_column(String(2048))
    metrics_url: Mapped[str | None] = mapped_column(String(2048))
    runbook_url: Mapped[str | None] = mapped_column(String(2048))  # an external runbook instead
    probe_interval_minutes: Mapped[int] = mapped_column(Integer, default=15)
    next_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The read model's pointers: the open assessment lists show and the latest signed-off
    # one, kept current by the flush hook in webapp.dashboard (never set them by hand), so
    # lists join two rows by primary key instead of looking them up per service.
    working_assessment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assessment.id", ondelete="SET NULL", use_alter=True, name="fk_service_working_assessment_id"),
        index=True)
    signed_assessment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assessment.id", ondelete="SET NULL", use_alter=True, name="fk_service_signed_assessment_id"),
        index=True)
    # The last dashboard.TREND_POINTS snapshot scores, oldest first, kept by the same hook.
    score_trend: Mapped[list] = mapped_column(JSON, default=list, server_default="[]")

    team: Mapped[Team] = relationship(back_populates="services")
    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id])
    backup_owner: Mapped[User | None] = relationship(foreign_keys=[backup_owner_id])
    assessments: Mapped[list[Assessment]] = relationship(
        back_populates="service", order_by="Assessment.created_at.desc()",
        foreign_keys="Assessment.service_id",
    )
    runbook_revisions: Mapped[list[RunbookRevision]] = relationship(
        back_populates="service", order_by="RunbookRevision.created_at.desc()"
    )

    @property
    def probe_urls(self) -> dict[str, str]:
        """The configured probe targets, by check kind."""
        return probe_urls(self)


PROBED_URL_KINDS = ("health", "readiness", "deep_health", "metrics")  # each read from `<kind>_url`


def probe_urls(service) -> dict[str, str]:
    """The configured probe targets of a Service, or of a row with its `<kind>_url` columns."""
    return {kind: url for kind in PROBED_URL_KINDS if (url := getattr(service, f"{kind}_url"))}


class OwnershipChange(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True)
    field: Mapped[str] = mapped_column(String(20))  # owner | backup_owner
    from_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    to_user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    changed_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    from_user: Mapped[User | None] = relationship(foreign_keys=[from_user_id])
    to_user: Mapped[User | None] = relationship(foreign_keys=[to_user_id])
    changed_by: Mapped[User] = relationship(foreign_keys=[changed_by_id])


class RunbookRevision(db.Model):
    __table_args__ = (
        # Each service's latest revision (needs attention's runbook rule) read from here in order.
        Index("ix_runbook_revision_service_id_created_at", "service_id", "created_at", "id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True)
    body: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str] = mapped_column(Text, default="")  # rendered once, when saved
    author_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))

    service: Mapped[Service] = relationship(back_populates="runbook_revisions")
    author: Mapped[User] = relationship(foreign_keys=[author_id])
    reviewed_by: Mapped[User | None] = relationship(foreign_keys=[reviewed_by_id])


class ChecklistVersion(db.Model):
    __table_args__ = (UniqueConstraint("slug", "content_hash"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), index=True)
    version: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(200))
    content_hash: Mapped[str] = mapped_column(String(64))
    content: Mapped[dict] = mapped_column(JSON)
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChecklistRefusal(db.Model):
    """A checklist file that failed to load, as of the content that failed. Stored so that every
    process and host shows the same problems; the row goes when the file loads or disappears."""

    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the refused bytes
    problems: Mapped[list] = mapped_column(JSON)  # [{"line": int | None, "message": str}, ...]
    refused_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Assessment(db.Model):
    __table_args__ = (
        CheckConstraint(_in("state", ASSESSMENT_STATES), name="state"),
        # Lists find each service's open and signed-off assessment from this index alone.
        Index("ix_assessment_service_id_state", "service_id", "state", "created_at", "decided_at"),
        # The review queue and the navigation badge on every page: the few in review out
        # of a history of thousands, oldest submitted first.
        Index("ix_assessment_state_submitted_at", "state", "submitted_at"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    # active_history: a move loads the old service first, whose pointers must move too.
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True, active_history=True)
    checklist_version_id: Mapped[int] = mapped_column(ForeignKey("checklist_version.id"))
    state: Mapped[str] = mapped_column(String(20), default="draft")
    created_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    copied_from_id: Mapped[int | None] = mapped_column(ForeignKey("assessment.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    submitted_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    # Incremented on every submit: sign-offs count only in the round they were given in.
    review_round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The read model: what lists and the API show, kept current by assessments.refresh_score
    # wherever answers or waivers change, so no list page scores assessments per row.
    score: Mapped[float] = mapped_column(Float, default=0.0)
    verdict: Mapped[str] = mapped_column(String(30), default="not_ready")
    answered_pct: Mapped[float] = mapped_column(Float, default=0.0)
    unanswered_count: Mapped[int] = mapped_column(Integer, default=0)
    blocker_count: Mapped[int] = mapped_column(Integer, default=0)
    scored_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    service: Mapped[Service] = relationship(back_populates="assessments", foreign_keys=[service_id])
    checklist_version: Mapped[ChecklistVersion] = relationship()
    created_by: Mapped[User] = relationship(foreign_keys=[created_by_id])
    submitted_by: Mapped[User | None] = relationship(foreign_keys=[submitted_by_id])
    # The live answers, one per item of the current checklist version. Answers to items a
    # checklist upgrade removed stay in the database, archived (see `archived_answers`).
    answers: Mapped[list[Answer]] = relationship(
        back_populates="assessment", cascade="all, delete-orphan",
        primaryjoin="and_(Assessment.id == Answer.assessment_id, Answer.archived_at.is_(None))",
    )
    archived_answers: Mapped[list[Answer]] = relationship(
        primaryjoin="and_(Assessment.id == Answer.assessment_id, Answer.archived_at.is_not(None))",
        viewonly=True, order_by="Answer.archived_at",
    )
    signoffs: Mapped[list[SignOff]] = relationship(
        back_populates="assessment", order_by="SignOff.at"
    )

    @property
    def is_open(self) -> bool:
        return self.state in ("draft", "in_review")

    @property
    def is_editable(self) -> bool:
        """Answers, evidence and waiver requests change only in a draft: in review they are
        what the reviewers are deciding on, and a signed-off assessment is frozen. A retired
        service is no longer assessed: its drafts are kept, read-only."""
        return self.state == "draft" and self.service.lifecycle != "retired"


class Answer(db.Model):
    __table_args__ = (
        # One live answer per item; archived answers (items an upgrade removed) may repeat a key.
        Index("uq_answer_live_item", "assessment_id", "item_key", unique=True,
              sqlite_where=text("archived_at IS NULL"), postgresql_where=text("archived_at IS NULL")),
        CheckConstraint(f"status IS NULL OR {_in('status', ANSWER_STATUSES)}", name="status"),
        CheckConstraint(_in("source", ANSWER_SOURCES), name="source"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(
        ForeignKey("assessment.id", ondelete="CASCADE"), index=True
    )
    item_key: Mapped[str] = mapped_column(String(80))
    status: Mapped[str | None] = mapped_column(String(10))
    note: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(10), default="manual")
    answered_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The result that last set a probe answer's status; the latest result of every kind is
    # in ServiceCheck. The probe's explanation stays on the result, never in `note`.
    # Indexed: deleting old results checks this foreign key for every deleted row.
    probe_result_id: Mapped[int | None] = mapped_column(ForeignKey("probe_result.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Set when a checklist upgrade removed the item: kept with its history, evidence and
    # waivers, readable, but no longer scored or listed.
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The note rendered once, when it is written (markdown is too slow to redo per page view);
    # NULL for rows written before this column existed, which are rendered on display.
    note_html: Mapped[str | None] = mapped_column(Text)

    assessment: Mapped[Assessment] = relationship(back_populates="answers")
    answered_by: Mapped[User | None] = relationship()
    evidence: Mapped[list[Evidence]] = relationship(
        back_populates="answer", cascade="all, delete-orphan", order_by="Evidence.added_at"
    )
    waivers: Mapped[list[Waiver]] = relationship(
        back_populates="answer", cascade="all, delete-orphan", order_by="Waiver.requested_at.desc()"
    )
    changes: Mapped[list[AnswerChange]] = relationship(
        back_populates="answer", cascade="all, delete-orphan", order_by="AnswerChange.changed_at.desc()"
    )

    # Optimistic locking: SQLAlchemy adds "AND version = :old" to every UPDATE.
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012 - read once by the mapper

    @validates("note")
    def _render_note(self, key: str, note: str | None) -> str | None:
        self.note_html = render_note(note)
        return note


class AnswerChange(db.Model):
    """One row per change of an answer: who, when, from → to, with the note at that time."""

    id: Mapped[int] = mapped_column(primary_key=True)
    answer_id: Mapped[int] = mapped_column(ForeignKey("answer.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(10))
    to_status: Mapped[str | None] = mapped_column(String(10))
    note: Mapped[str] = mapped_column(Text, default="")
    source: Mapped[str] = mapped_column(String(10), default="manual")
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    note_html: Mapped[str | None] = mapped_column(Text)  # as on Answer

    answer: Mapped[Answer] = relationship(back_populates="changes")
    changed_by: Mapped[User | None] = relationship()

    @validates("note")
    def _render_note(self, key: str, note: str | None) -> str | None:
        self.note_html = render_note(note)
        return note


class Evidence(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    answer_id: Mapped[int] = mapped_column(ForeignKey("answer.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    title: Mapped[str] = mapped_column(String(200))
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    check_ok: Mapped[bool | None] = mapped_column(Boolean)
    check_error: Mapped[str | None] = mapped_column(String(200))

    answer: Mapped[Answer] = relationship(back_populates="evidence")
    added_by: Mapped[User | None] = relationship()


class Waiver(db.Model):
    __table_args__ = (CheckConstraint(_in("state", WAIVER_STATES), name="state"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    answer_id: Mapped[int] = mapped_column(ForeignKey("answer.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    compensating_control: Mapped[str] = mapped_column(Text)
    risk_owner_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    expires_on: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(10), default="requested")
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    answer: Mapped[Answer] = relationship(back_populates="waivers")
    risk_owner: Mapped[User] = relationship(foreign_keys=[risk_owner_id])
    requested_by: Mapped[User] = relationship(foreign_keys=[requested_by_id])
    approved_by: Mapped[User | None] = relationship(foreign_keys=[approved_by_id])

    @property
    def expires_at(self) -> datetime:
        """A waiver is good through the end of its expiry day (UTC)."""
        return datetime(self.expires_on.year, self.expires_on.month, self.expires_on.day,
                        23, 59, 59, tzinfo=UTC)

    def is_live(self, now: datetime) -> bool:
        return self.state == "approved" and now <= self.expires_at


class ProbeRun(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(20), default="schedule")  # schedule | manual | cli
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why a run ended without all its results (the worker stopped, a conflict, a dead worker).
    error: Mapped[str | None] = mapped_column(String(200))

    service: Mapped[Service] = relationship()
    results: Mapped[list[ProbeResult]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="ProbeResult.id"
    )


class ProbeResult(db.Model):
    __table_args__ = (CheckConstraint(_in("outcome", PROBE_OUTCOMES), name="outcome"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("probe_run.id", ondelete="CASCADE"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    url: Mapped[str] = mapped_column(String(2048))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(10))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error_code: Mapped[str | None] = mapped_column(String(40))
    explanation: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[dict] = mapped_column(JSON, default=dict)

    run: Mapped[ProbeRun] = relationship(back_populates="results")


class ServiceCheck(db.Model):
    """The read model of probes: the latest outcome of each check kind of a service, updated
    as results are stored, so lists never scan raw results."""

    __table_args__ = (
        UniqueConstraint("service_id", "kind"),
        CheckConstraint(_in("outcome", PROBE_OUTCOMES), name="outcome"),
        # Needs attention's failing probes: the few failing checks, not every check.
        Index("ix_service_check_outcome_service_id", "outcome", "service_id"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    outcome: Mapped[str] = mapped_column(String(10))
    result_id: Mapped[int | None] = mapped_column(ForeignKey("probe_result.id", ondelete="SET NULL"), index=True)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)  # outcome last changed

    result: Mapped[ProbeResult | None] = relationship()


class ProbeDailyRollup(db.Model):
    """What survives of raw probe results after retention: one row per service, kind, day."""

    __table_args__ = (UniqueConstraint("service_id", "kind", "day"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    day: Mapped[date] = mapped_column(Date)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    passes: Mapped[int] = mapped_column(Integer, default=0)
    warns: Mapped[int] = mapped_column(Integer, default=0)
    fails: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms_median: Mapped[float | None] = mapped_column(Float)


class JobLock(db.Model):
    """A lock for background jobs that must run once at a time across processes and hosts
    (the probe sweep, the retention roll-up). It expires, so a killed worker cannot keep it;
    the holder renews it while working."""

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))  # host:pid:random, who may release or renew
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScoreSnapshot(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True)
    assessment_id: Mapped[int | None] = mapped_column(
        ForeignKey("assessment.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    score: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(30))
    categories: Mapped[dict] = mapped_column(JSON, default=dict)


class SignOff(db.Model):
    __table_args__ = (CheckConstraint(_in("decision", SIGNOFF_DECISIONS), name="decision"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessment.id"), index=True)
    signer_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    role: Mapped[str] = mapped_column(String(40))
    decision: Mapped[str] = mapped_column(String(30))
    comment: Mapped[str] = mapped_column(Text, default="")
    # A reject's comments on single items: {item_key: text}, shown on those items.
    item_comments: Mapped[dict] = mapped_column(JSON, default=dict, server_default="{}")
    review_round: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    present: Mapped[str] = mapped_column(Text, default="", server_default="")  # meeting mode
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    assessment: Mapped[Assessment] = relationship(back_populates="signoffs")
    signer: Mapped[User] = relationship()
    conditions: Mapped[list[Condition]] = relationship(
        back_populates="signoff", order_by="Condition.due_on"
    )


class Condition(db.Model):
    """An action item attached to an "approve with conditions": tracked until done."""

    id: Mapped[int] = mapped_column(primary_key=True)
    signoff_id: Mapped[int] = mapped_column(ForeignKey("sign_off.id"), index=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessment.id"), index=True)
    service_id: Mapped[int] = mapped_column(ForeignKey("service.id"), index=True)
    text: Mapped[str] = mapped_column(Text)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    due_on: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    done_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))

    signoff: Mapped[SignOff] = relationship(back_populates="conditions")
    owner: Mapped[User] = relationship(foreign_keys=[owner_id])
    done_by: Mapped[User | None] = relationship(foreign_keys=[done_by_id])

    def is_overdue(self, today: date) -> bool:
        return self.done_at is None and self.due_on < today


class Report(db.Model):
    """The signed PDF of a signed-off assessment, and the snapshot it was made from.

    Both are immutable once written: downloads serve these bytes, verification compares
    against these hashes."""

    id: Mapped[int] = mapped_column(primary_key=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessment.id"), index=True)
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    snapshot: Mapped[str] = mapped_column(Text, default="", server_default="")  # canonical JSON
    snapshot_sha256: Mapped[str] = mapped_column(String(64), default="", server_default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    assessment: Mapped[Assessment] = relationship()


class SigningCredential(db.Model):
    """The instance's self-made report-signing certificate, kept in the database so every
    web process and host signs with the same one. The key is encrypted with SECRET_KEY."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    key_pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEvent(db.Model):
    """Append-only: rows are inserted, never updated or deleted."""

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    action: Mapped[str] = mapped_column(String(60), index=True)
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[int | None] = mapped_column(Integer)
    service_id: Mapped[int | None] = mapped_column(ForeignKey("service.id"), index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id"), index=True)
    before: Mapped[dict | None] = mapped_column(JSON)
    after: Mapped[dict | None] = mapped_column(JSON)
    request_id: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    actor: Mapped[User | None] = relationship()


API_SCOPES = ("read", "write", "probe")


class ApiToken(db.Model):
    """A bearer token for /api/v1. Only the SHA-256 of the secret is stored; the secret is shown
    once. A personal token acts as its user; a team token (team_id set) acts as the maintainer who
    made it, and only on that team's services."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise it by
    scopes: Mapped[str] = mapped_column(String(40))  # space-separated, from API_SCOPES
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))

    user: Mapped[User] = relationship(foreign_keys=[user_id])
    team: Mapped[Team | None] = relationship()
    revoked_by: Mapped[User | None] = relationship(foreign_keys=[revoked_by_id])

    @property
    def scope_list(self) -> list[str]:
        return self.scopes.split()

    def is_usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class FeatureFlag(db.Model):
    """A run-time switch for a risky feature (webapp/flags.py defines which). A row exists
    only once the flag was changed; no row means on."""

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(40), unique=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    note: Mapped[str] = mapped_column(String(200), default="")
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id", ondelete="SET NULL"))

    changed_by: Mapped[User | None] = relationship()
