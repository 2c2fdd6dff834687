"""Tests for webapp.scoring: one test per rule of DESIGN.md §3, then properties."""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webapp.scoring import (
    CREDIT,
    MET,
    N_A,
    NOT_MET,
    NOT_READY,
    PARTIAL,
    READY,
    READY_WITH_CONDITIONS,
    VERDICT_LABELS,
    AnswerState,
    ScoreCard,
    score_assessment,
    verdict_for,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=7)
EARLIER = NOW - timedelta(days=7)


@dataclass(frozen=True)
class Item:
    """Stand-in for webapp.checklists.Item with the attributes scoring reads."""

    key: str
    category: str = "ops"
    weight: int = 1
    critical: bool = False
    tiers: tuple[int, ...] = (1, 2, 3)

    def applies_to(self, tier: int) -> bool:
        return tier in self.tiers


def score(items, answers=None, *, tier=1, **kwargs) -> ScoreCard:
    return score_assessment(items, answers or {}, tier=tier, now=NOW, **kwargs)


def states(**statuses) -> dict[str, AnswerState]:
    return {key: AnswerState(status) for key, status in statuses.items()}


# --- credit and weights -------------------------------------------------------------


def test_credit_values():
    assert CREDIT == {MET: 1.0, PARTIAL: 0.5, NOT_MET: 0.0}


def test_weights_scale_credit():
    items = [Item("a", weight=3), Item("b", weight=1)]
    assert score(items, states(a=MET, b=NOT_MET)).score == 75.0
    assert score(items, states(a=NOT_MET, b=MET)).score == 25.0


def test_partial_earns_half():
    items = [Item("a", weight=2), Item("b", weight=2)]
    assert score(items, states(a=PARTIAL, b=MET)).score == 75.0


def test_unanswered_earns_nothing_and_is_listed():
    items = [Item("a"), Item("b"), Item("c")]
    card = score(items, states(a=MET))
    assert card.score == 33.3
    assert card.unanswered == ("b", "c")
    assert card.answered == 1
    assert card.applicable == 3


def test_score_rounds_to_one_decimal():
    items = [Item("a"), Item("b"), Item("c")]
    assert score(items, states(a=MET, b=MET)).score == 66.7


# --- n/a -------------------------------------------------------------------------


def test_n_a_drops_out_of_denominator_but_counts_as_answered():
    items = [Item("a", weight=1), Item("b", weight=3)]
    card = score(items, states(a=MET, b=N_A))
    assert card.score == 100.0
    assert card.answered == 2
    assert card.unanswered == ()


def test_all_n_a_scores_100_and_category_scores_none():
    items = [Item("a"), Item("b")]
    card = score(items, states(a=N_A, b=N_A))
    assert card.score == 100.0
    assert card.verdict == READY
    assert card.categories["ops"].score is None


def test_nothing_applicable_scores_0_and_is_not_ready():
    card = score([Item("a", tiers=(1,))], tier=3)
    assert card.score == 0.0
    assert card.applicable == 0
    assert card.verdict == NOT_READY
    assert card.percent_answered == 100.0


def test_no_items_at_all():
    card = score([])
    assert card.score == 0.0
    assert card.categories == {}
    assert card.verdict == NOT_READY


def test_n_a_critical_is_not_a_blocker():
    card = score([Item("a", critical=True), Item("b")], states(a=N_A, b=MET))
    assert card.blockers == ()
    assert card.verdict == READY


# --- tiers ---------------------------------------------------------------------------


def test_items_outside_the_tier_are_excluded_entirely():
    items = [
        Item("a"),
        Item("tier1_only", weight=3, critical=True, tiers=(1,)),
    ]
    card = score(items, states(a=MET), tier=2)
    assert card.score == 100.0
    assert card.applicable == 1
    assert card.unanswered == ()
    assert card.blockers == ()
    assert card.verdict == READY
    assert card.categories["ops"].applicable == 1
    assert card.categories["ops"].total == 2


def test_answers_to_excluded_items_are_ignored():
    items = [Item("a"), Item("b", tiers=(1,))]
    card = score(items, states(a=MET, b=NOT_MET), tier=2)
    assert card.score == 100.0
    assert card.answered == 1


def test_answers_for_unknown_keys_are_ignored():
    card = score([Item("a")], states(a=MET, ghost=NOT_MET))
    assert card.score == 100.0
    assert card.answered == 1


# --- criticals and waivers -----------------------------------------------------------


def test_unmet_critical_blocks_even_with_a_perfect_score_elsewhere():
    items = [Item(f"i{n}", weight=3) for n in range(9)]
    items.append(Item("crit", weight=1, critical=True))
    answers = states(**{f"i{n}": MET for n in range(9)}, crit=PARTIAL)
    card = score(items, answers)
    assert card.score > 95
    assert card.blockers == ("crit",)
    assert card.verdict == NOT_READY


def test_unanswered_critical_is_a_blocker():
    card = score([Item("a", critical=True)])
    assert card.blockers == ("a",)


@pytest.mark.parametrize("status", [NOT_MET, PARTIAL])
def test_live_waiver_covers_critical_without_changing_score(status):
    items = [Item("crit", critical=True), Item("b")]
    waived = {"crit": AnswerState(status, waiver_expires_at=LATER), "b": AnswerState(MET)}
    unwaived = {"crit": AnswerState(status), "b": AnswerState(MET)}
    card = score(items, waived, conditions_threshold=50.0)
    assert card.blockers == ()
    assert card.expired_waivers == ()
    assert card.score == score(items, unwaived).score
    assert card.verdict == READY_WITH_CONDITIONS
    assert score(items, unwaived).verdict == NOT_READY


def test_expired_waiver_is_no_cover_and_is_listed():
    items = [Item("crit", critical=True), Item("b")]
    answers = {"crit": AnswerState(NOT_MET, waiver_expires_at=EARLIER), "b": AnswerState(MET)}
    card = score(items, answers, conditions_threshold=50.0)
    assert card.blockers == ("crit",)
    assert card.expired_waivers == ("crit",)
    assert card.verdict == NOT_READY


def test_waiver_expiring_exactly_now_has_expired():
    answer = AnswerState(NOT_MET, waiver_expires_at=NOW)
    assert not answer.waiver_live(NOW)
    assert answer.waiver_live(NOW - timedelta(microseconds=1))
    assert score([Item("a", critical=True)], {"a": answer}).blockers == ("a",)


def test_expired_waiver_on_non_critical_item_is_listed_but_blocks_nothing():
    card = score([Item("a")], {"a": AnswerState(PARTIAL, waiver_expires_at=EARLIER)})
    assert card.expired_waivers == ("a",)
    assert card.blockers == ()


@pytest.mark.parametrize("status", [MET, N_A])
def test_expired_waiver_on_met_or_n_a_item_is_moot(status):
    card = score([Item("a", critical=True)], {"a": AnswerState(status, EARLIER)})
    assert card.expired_waivers == ()
    assert card.blockers == ()


def test_waiver_does_not_cover_an_unanswered_critical():
    card = score([Item("a", critical=True)], {"a": AnswerState(None, LATER)})
    assert card.blockers == ("a",)


def test_no_waiver_is_never_live():
    assert not AnswerState(NOT_MET).waiver_live(NOW)


def test_naive_datetimes_are_treated_as_utc():
    naive_now = NOW.replace(tzinfo=None)
    assert AnswerState(NOT_MET, LATER.replace(tzinfo=None)).waiver_live(NOW)
    assert AnswerState(NOT_MET, LATER).waiver_live(naive_now)
    assert not AnswerState(NOT_MET, EARLIER.replace(tzinfo=None)).waiver_live(naive_now)


def test_aware_datetimes_in_other_zones_compare_by_instant():
    plus_two = timezone(timedelta(hours=2))
    one_hour_ahead = (NOW + timedelta(hours=1)).astimezone(plus_two)
    one_hour_ago = (NOW - timedelta(hours=1)).astimezone(plus_two)  # 13:00 on the wall clock
    assert AnswerState(NOT_MET, one_hour_ahead).waiver_live(NOW)
    assert not AnswerState(NOT_MET, one_hour_ago).waiver_live(NOW)


def test_now_defaults_to_the_current_time():
    far_future = datetime(9999, 1, 1, tzinfo=UTC)
    far_past = datetime(2000, 1, 1, tzinfo=UTC)
    items = [Item("live", critical=True), Item("dead", critical=True)]
    answers = {
        "live": AnswerState(NOT_MET, far_future),
        "dead": AnswerState(NOT_MET, far_past),
    }
    card = score_assessment(items, answers, tier=1)
    assert card.blockers == ("dead",)
    assert card.expired_waivers == ("dead",)


# --- verdict and thresholds ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (100.0, READY),
        (85.0, READY),
        (84.9, READY_WITH_CONDITIONS),
        (70.0, READY_WITH_CONDITIONS),
        (69.9, NOT_READY),
        (0.0, NOT_READY),
    ],
)
def test_verdict_thresholds_are_inclusive(value, expected):
    assert verdict_for(value, (), (), 85.0, 70.0) == expected


def test_verdict_blockers_override_score():
    assert verdict_for(100.0, ("a",), (), 85.0, 70.0) == NOT_READY


def test_verdict_unanswered_only_keeps_from_ready():
    assert verdict_for(100.0, (), ("a",), 85.0, 70.0) == READY_WITH_CONDITIONS
    assert verdict_for(69.9, (), ("a",), 85.0, 70.0) == NOT_READY


def _met_out_of(met: int, total: int):
    items = [Item(f"i{n}") for n in range(total)]
    answers = {f"i{n}": AnswerState(MET if n < met else NOT_MET) for n in range(total)}
    return items, answers


@pytest.mark.parametrize(
    ("met", "total", "expected_score", "expected_verdict"),
    [
        (17, 20, 85.0, READY),
        (84, 100, 84.0, READY_WITH_CONDITIONS),
        (7, 10, 70.0, READY_WITH_CONDITIONS),
        (69, 100, 69.0, NOT_READY),
    ],
)
def test_score_exactly_at_threshold(met, total, expected_score, expected_verdict):
    card = score(*_met_out_of(met, total))
    assert card.score == expected_score
    assert card.verdict == expected_verdict


def test_partials_and_weights_land_exactly_on_thresholds():
    # (3 + 3 + 0.5 + 1.5) / 10 and (7 + 3 × 0.5) / 10: no float drift at the boundary.
    items = [Item("a", weight=3), Item("b", weight=3), Item("c", weight=1), Item("d", weight=3)]
    assert score(items, states(a=MET, b=MET, c=PARTIAL, d=PARTIAL)).score == 80.0
    items = [Item(f"i{n}") for n in range(10)]
    answers = states(**{f"i{n}": MET for n in range(7)}, i7=PARTIAL, i8=PARTIAL, i9=PARTIAL)
    assert score(items, answers).score == 85.0
    assert score(items, answers).verdict == READY


def test_unanswered_item_keeps_a_high_score_from_ready():
    items, answers = _met_out_of(19, 20)
    del answers["i19"]
    card = score(items, answers)
    assert card.score == 95.0
    assert card.unanswered == ("i19",)
    assert card.verdict == READY_WITH_CONDITIONS


def test_thresholds_can_be_set_by_the_checklist():
    items, answers = _met_out_of(6, 10)
    assert score(items, answers).verdict == NOT_READY
    assert score(items, answers, conditions_threshold=60.0).verdict == READY_WITH_CONDITIONS
    card = score(items, answers, ready_threshold=60.0, conditions_threshold=50.0)
    assert card.verdict == READY


def test_inverted_thresholds_are_rejected():
    with pytest.raises(ValueError, match="threshold"):
        score([Item("a")], ready_threshold=70.0, conditions_threshold=85.0)


def test_verdict_labels():
    assert VERDICT_LABELS == {
        READY: "Ready",
        READY_WITH_CONDITIONS: "Ready with conditions",
        NOT_READY: "Not ready",
    }
    assert score([Item("a")], states(a=MET)).verdict_label == "Ready"


# --- categories and counts -----------------------------------------------------------


def test_categories_are_scored_separately_in_order_of_first_appearance():
    items = [
        Item("s1", category="security", weight=2),
        Item("o1", category="observability", weight=1),
        Item("s2", category="security", weight=2),
        Item("o2", category="observability", weight=3, tiers=(2,)),
        Item("r1", category="resilience", tiers=(2,)),
    ]
    card = score(items, states(s1=MET, s2=PARTIAL, o1=N_A), tier=1)
    assert list(card.categories) == ["security", "observability", "resilience"]

    security = card.categories["security"]
    assert (security.key, security.score) == ("security", 75.0)
    assert (security.answered, security.applicable, security.total) == (2, 2, 2)

    observability = card.categories["observability"]
    assert observability.score is None  # its only applicable item is n/a
    assert (observability.answered, observability.applicable, observability.total) == (1, 1, 2)

    resilience = card.categories["resilience"]
    assert resilience.score is None  # nothing in it applies to tier 1
    assert (resilience.answered, resilience.applicable, resilience.total) == (0, 0, 1)

    assert card.score == 75.0


def test_category_with_unanswered_item():
    items = [Item("a", category="x", weight=1), Item("b", category="x", weight=1)]
    category = score(items, states(a=MET)).categories["x"]
    assert category.score == 50.0
    assert category.answered == 1


def test_percent_answered():
    items = [Item("a"), Item("b"), Item("c"), Item("d", tiers=(2,))]
    card = score(items, states(a=MET, b=N_A))
    assert card.percent_answered == 66.7
    assert score(items, states(a=MET, b=N_A, c=PARTIAL)).percent_answered == 100.0


# --- bad input ---------------------------------------------------------------------


def test_unknown_status_is_rejected():
    with pytest.raises(ValueError, match="status"):
        AnswerState("done")


def test_duplicate_item_keys_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        score([Item("a"), Item("a", category="other")])


# --- properties ----------------------------------------------------------------------

STATUS_CHOICES = [None, MET, PARTIAL, NOT_MET, N_A]
VERDICT_RANK = {NOT_READY: 0, READY_WITH_CONDITIONS: 1, READY: 2}

item_fields = st.fixed_dictionaries(
    {
        "category": st.sampled_from(["security", "observability", "resilience"]),
        "weight": st.integers(1, 3),
        "critical": st.booleans(),
        "tiers": st.sets(st.integers(1, 3), min_size=1).map(lambda s: tuple(sorted(s))),
    }
)
answer_states = st.builds(
    AnswerState,
    status=st.sampled_from(STATUS_CHOICES),
    waiver_expires_at=st.none() | st.integers(-3, 3).map(lambda h: NOW + timedelta(hours=h)),
)


@st.composite
def assessments(draw):
    """A list of items with unique keys, answers to some of them, and a tier."""
    fields = draw(st.lists(item_fields, max_size=12))
    items = [Item(key=f"i{n}", **f) for n, f in enumerate(fields)]
    answered = draw(st.lists(st.sampled_from(items), unique=True)) if items else []
    answers = {item.key: draw(answer_states) for item in answered}
    return items, answers, draw(st.integers(1, 3))


@given(assessments())
def test_scores_always_within_0_and_100(assessment):
    items, answers, tier = assessment
    card = score(items, answers, tier=tier)
    assert 0.0 <= card.score <= 100.0
    assert 0.0 <= card.percent_answered <= 100.0
    for category in card.categories.values():
        assert category.score is None or 0.0 <= category.score <= 100.0
        assert category.answered <= category.applicable <= category.total
    assert card.answered + len(card.unanswered) == card.applicable


@given(assessments(), st.data())
def test_changing_one_answer_to_met_never_makes_things_worse(assessment, data):
    """Score, the item's category score and the verdict never drop when an item becomes
    met (its waiver, if any, kept as it was)."""
    items, answers, tier = assessment
    if not items:
        return
    item = data.draw(st.sampled_from(items))
    before = score(items, answers, tier=tier)
    old = answers.get(item.key, AnswerState())
    after = score(items, {**answers, item.key: replace(old, status=MET)}, tier=tier)

    assert after.score >= before.score
    assert VERDICT_RANK[after.verdict] >= VERDICT_RANK[before.verdict]
    assert set(after.blockers) <= set(before.blockers)
    old_category = before.categories[item.category].score
    new_category = after.categories[item.category].score
    if old_category is not None:
        assert new_category >= old_category


@given(assessments(), st.data())
def test_marking_a_non_critical_item_n_a_leaves_other_items_alone(assessment, data):
    """Marking one non-critical item n/a:

    - leaves ``blockers`` exactly as they were (a non-critical item never blocks);
    - changes ``unanswered`` and ``expired_waivers`` only by dropping that item;
    - if it was unanswered or not_met (credit 0), never lowers the score or the verdict;
    - if it was met (credit 1), never raises the score.
    A partial item can move the score either way, so nothing is claimed for it.
    """
    items, answers, tier = assessment
    candidates = [item for item in items if not item.critical]
    if not candidates:
        return
    item = data.draw(st.sampled_from(candidates))
    before = score(items, answers, tier=tier)
    old = answers.get(item.key, AnswerState())
    after = score(items, {**answers, item.key: replace(old, status=N_A)}, tier=tier)

    assert after.blockers == before.blockers
    assert after.unanswered == tuple(k for k in before.unanswered if k != item.key)
    assert after.expired_waivers == tuple(k for k in before.expired_waivers if k != item.key)
    if old.status in (None, NOT_MET):
        assert after.score >= before.score
        assert VERDICT_RANK[after.verdict] >= VERDICT_RANK[before.verdict]
    if old.status == MET:
        assert after.score <= before.score


@given(assessments(), st.randoms(use_true_random=False))
def test_order_of_answers_is_irrelevant(assessment, random):
    items, answers, tier = assessment
    keys = list(answers)
    random.shuffle(keys)
    shuffled = {key: answers[key] for key in keys}
    before = score(items, answers, tier=tier)
    after = score(items, shuffled, tier=tier)
    assert after == before
    assert list(after.categories) == list(before.categories)


@given(assessments(), st.randoms(use_true_random=False))
def test_order_of_items_only_changes_listing_order(assessment, random):
    items, answers, tier = assessment
    shuffled = list(items)
    random.shuffle(shuffled)
    before = score(items, answers, tier=tier)
    after = score(shuffled, answers, tier=tier)
    assert (after.score, after.verdict) == (before.score, before.verdict)
    assert set(after.unanswered) == set(before.unanswered)
    assert set(after.blockers) == set(before.blockers)
    assert set(after.expired_waivers) == set(before.expired_waivers)
    assert after.categories == before.categories  # dict equality ignores order


@given(assessments())
def test_waivers_never_change_the_numbers(assessment):
    items, answers, tier = assessment
    unwaived = {key: replace(a, waiver_expires_at=None) for key, a in answers.items()}
    with_waivers = score(items, answers, tier=tier)
    without = score(items, unwaived, tier=tier)
    assert with_waivers.score == without.score
    assert with_waivers.categories == without.categories
    assert set(with_waivers.blockers) <= set(without.blockers)
