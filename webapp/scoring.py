"""Readiness scoring: turns a checklist's items and an assessment's answers into a score,
per-category scores and a verdict (DESIGN.md §3). Pure functions, no Flask or database.

Items are duck-typed: anything with ``key``, ``category``, ``weight`` (1-3), ``critical``
and ``applies_to(tier)`` will do (see ``webapp.checklists.Item``).

Decisions the design leaves open, made here:

- An item whose ``applies_to(tier)`` is false is left out entirely: no score, no count.
- Scores are rounded to one decimal, and the verdict is taken from the rounded score, so
  the number a reviewer sees always agrees with the verdict beside it.
- When nothing counts towards the score: 100.0 if there are applicable items but every
  one is n/a (nothing is missing), 0.0 if the tier has no applicable items at all (there
  is nothing to be ready on). A category in either situation scores ``None``.
- A waiver covers a critical item for the verdict only when it is live and the answer is
  ``not_met`` or ``partial``; it never changes the numeric score. A waiver expires at its
  ``waiver_expires_at``: from that instant on it is no cover, as if it did not exist.
- An unanswered critical item is a blocker, waiver or not; an n/a critical item is not.
- ``expired_waivers`` lists items whose waiver has expired *and still matters*, i.e. the
  answer is ``not_met`` or ``partial``; once an item is met or n/a its old waiver is moot.
- Naive datetimes are taken to be UTC.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

MET, PARTIAL, NOT_MET, N_A = "met", "partial", "not_met", "n_a"  # None = unanswered
STATUSES = (MET, PARTIAL, NOT_MET, N_A)
CREDIT = {MET: 1.0, PARTIAL: 0.5, NOT_MET: 0.0}

READY, READY_WITH_CONDITIONS, NOT_READY = "ready", "ready_with_conditions", "not_ready"
VERDICT_LABELS = {
    READY: "Ready",
    READY_WITH_CONDITIONS: "Ready with conditions",
    NOT_READY: "Not ready",
}

DEFAULT_READY_THRESHOLD = 85.0
DEFAULT_CONDITIONS_THRESHOLD = 70.0

# Statuses a waiver can cover: the team has accepted a known gap.
_WAIVABLE = frozenset({NOT_MET, PARTIAL})


class ScoredItem(Protocol):
    """What scoring needs from a checklist item (read-only, so frozen dataclasses fit)."""

    @property
    def key(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def weight(self) -> int: ...
    @property
    def critical(self) -> bool: ...
    def applies_to(self, tier: int) -> bool: ...


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class AnswerState:
    """What scoring needs from one answer: its status and any approved waiver's expiry."""

    status: str | None = None  # None = unanswered
    waiver_expires_at: datetime | None = None  # expiry of an APPROVED waiver, if any

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown answer status {self.status!r}")

    @property
    def has_waiver(self) -> bool:
        return self.waiver_expires_at is not None

    def waiver_live(self, now: datetime) -> bool:
        """True if there is an approved waiver and it has not yet expired at ``now``."""
        if self.waiver_expires_at is None:
            return False
        return _as_utc(now) < _as_utc(self.waiver_expires_at)


UNANSWERED = AnswerState()


@dataclass(frozen=True)
class CategoryScore:
    """One category's score; ``score`` is None when nothing in it counts (all n/a or none)."""

    key: str
    score: float | None
    answered: int  # applicable items with any status, n/a included
    applicable: int  # items in this category that apply to the tier
    total: int  # items in this category, whatever their tiers


@dataclass(frozen=True)
class ScoreCard:
    """The outcome of scoring one assessment."""

    score: float  # 0..100, one decimal
    verdict: str
    categories: dict[str, CategoryScore]  # in order of first appearance among the items
    answered: int  # applicable items with any status, n/a included
    applicable: int  # items that apply to the tier
    unanswered: tuple[str, ...]
    blockers: tuple[str, ...]  # critical, not met, not n/a, no live waiver
    expired_waivers: tuple[str, ...]  # not met or partial, and the waiver has expired

    @property
    def verdict_label(self) -> str:
        return VERDICT_LABELS[self.verdict]

    @property
    def percent_answered(self) -> float:
        """Share of applicable items answered, 0..100; 100.0 when nothing applies."""
        if self.applicable == 0:
            return 100.0
        return round(100 * self.answered / self.applicable, 1)


class _Tally:
    """Running weighted sums for one score (the whole assessment or one category)."""

    def __init__(self) -> None:
        self.earned = 0.0  # Σ weight × credit
        self.possible = 0  # Σ weight over applicable items that are not n/a
        self.answered = 0
        self.applicable = 0
        self.total = 0

    def add(self, item: ScoredItem, status: str | None) -> None:
        self.applicable += 1
        if status is not None:
            self.answered += 1
        if status == N_A:
            return
        self.possible += item.weight
        self.earned += item.weight * CREDIT.get(status, 0.0)  # unanswered earns nothing

    def score(self) -> float | None:
        """Rounded percentage, or None when no item counts towards it."""
        if self.possible == 0:
            return None
        # Multiply first: earned is a multiple of 0.5, so 100 × earned is exact and
        # a score sitting exactly on a threshold stays exactly on it.
        return round(100 * self.earned / self.possible, 1)


def verdict_for(
    score: float,
    blockers: Collection[str],
    unanswered: Collection[str],
    ready_threshold: float = DEFAULT_READY_THRESHOLD,
    conditions_threshold: float = DEFAULT_CONDITIONS_THRESHOLD,
) -> str:
    """READY, READY_WITH_CONDITIONS or NOT_READY for a score and its outstanding items.

    Any blocker means NOT_READY; unanswered items only keep an assessment from READY.
    """
    if blockers:
        return NOT_READY
    if score >= ready_threshold and not unanswered:
        return READY
    if score >= conditions_threshold:
        return READY_WITH_CONDITIONS
    return NOT_READY


def _is_blocker(item: ScoredItem, answer: AnswerState, now: datetime) -> bool:
    if not item.critical or answer.status in (MET, N_A):
        return False
    waived = answer.status in _WAIVABLE and answer.waiver_live(now)
    return not waived


def score_assessment(
    items: Iterable[ScoredItem],
    answers: Mapping[str, AnswerState],
    *,
    tier: int,
    ready_threshold: float = DEFAULT_READY_THRESHOLD,
    conditions_threshold: float = DEFAULT_CONDITIONS_THRESHOLD,
    now: datetime | None = None,
) -> ScoreCard:
    """Score an assessment of ``items`` for a service of ``tier``.

    ``answers`` maps item keys to their state; a missing key means unanswered, and keys
    that name no item are ignored. The order of ``answers`` never matters; the order of
    ``items`` only sets the order of categories and of the listed keys.
    """
    if conditions_threshold > ready_threshold:
        raise ValueError("conditions_threshold must not exceed ready_threshold")
    now = datetime.now(UTC) if now is None else now

    overall = _Tally()
    by_category: dict[str, _Tally] = {}
    seen: set[str] = set()
    unanswered: list[str] = []
    blockers: list[str] = []
    expired: list[str] = []

    for item in items:
        if item.key in seen:
            raise ValueError(f"duplicate item key {item.key!r}")
        seen.add(item.key)
        category = by_category.setdefault(item.category, _Tally())
        category.total += 1
        if not item.applies_to(tier):
            continue

        answer = answers.get(item.key, UNANSWERED)
        overall.add(item, answer.status)
        category.add(item, answer.status)
        if answer.status is None:
            unanswered.append(item.key)
        if _is_blocker(item, answer, now):
            blockers.append(item.key)
        if answer.status in _WAIVABLE and answer.has_waiver and not answer.waiver_live(now):
            expired.append(item.key)

    score = overall.score()
    if score is None:
        score = 100.0 if overall.applicable else 0.0

    return ScoreCard(
        score=score,
        verdict=verdict_for(score, blockers, unanswered, ready_threshold, conditions_threshold),
        categories={
            key: CategoryScore(
                key=key,
                score=tally.score(),
                answered=tally.answered,
                applicable=tally.applicable,
                total=tally.total,
            )
            for key, tally in by_category.items()
        },
        answered=overall.answered,
        applicable=overall.applicable,
        unanswered=tuple(unanswered),
        blockers=tuple(blockers),
        expired_waivers=tuple(expired),
    )
