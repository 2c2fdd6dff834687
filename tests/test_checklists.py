"""Tests for webapp.checklists: the shipped checklist files, validation with line numbers,
version diffs and answer carry-over."""

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.checklists import (
    PROBE_KINDS,
    STATUSES,
    Checklist,
    ChecklistInvalid,
    ChecklistProblem,
    Thresholds,
    carry_over_keys,
    diff_checklists,
    discover,
    load_checklist,
    parse_checklist,
    validate_paths,
)

ROOT = Path(__file__).resolve().parents[1]
CHECKLISTS = ROOT / "checklists"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_SEED = Path(__file__).resolve().parents[2] / "shared" / "seed" / (
    "production-readiness-checklist.md")


def seed_checklist() -> list[tuple[str, list[str]]]:
    """(category title, [item titles]) from the seed's "## Production Readiness Checklist"."""
    path = SHARED_SEED if SHARED_SEED.exists() else FIXTURES / "seed-checklist.md"
    sections: list[tuple[str, list[str]]] = []
    inside = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            inside = line.strip() == "## Production Readiness Checklist"
        elif inside and line.startswith("### "):
            sections.append((line[4:].strip(), []))
        elif inside and line.startswith("- [ ] "):
            sections[-1][1].append(line[len("- [ ] "):].strip())
    return sections


@pytest.fixture(scope="module")
def readiness() -> Checklist:
    return load_checklist(CHECKLISTS / "production-readiness.yaml")


# --- the shipped files -----------------------------------------------------------------

def test_readiness_has_every_seed_item_in_its_category(readiness):
    seed = seed_checklist()
    assert [title for title, _ in seed] == [c.title for c in readiness.categories]
    for (title, item_titles), category in zip(seed, readiness.categories, strict=True):
        assert [i.title for i in category.items] == item_titles, title
    assert sum(len(items) for _, items in seed) == 46
    assert len(readiness.items) == 46


def test_readiness_top_level(readiness):
    assert readiness.slug == "production-readiness"
    assert readiness.version == "1.0.0"
    assert readiness.thresholds == Thresholds(ready=85.0, conditions=70.0)
    assert len(readiness.content_hash) == 64


def test_readiness_probes_map_to_the_obvious_items(readiness):
    probes = {i.key: i.probe for i in readiness.items if i.probe}
    assert probes == {
        "health_checks_configured": "health",
        "metrics_exported": "metrics",
        "health_check_endpoints": "deep_health",
        "correlation_ids": "correlation_id",
        "https_everywhere": "https",
        "security_headers_configured": "security_headers",
        "runbook": "runbook_present",
        "oncall_rotation": "oncall_present",
    }


@pytest.mark.parametrize("name", ["production-readiness.yaml", "design-for-production.yaml"])
def test_shipped_checklists_are_complete(name):
    checklist = load_checklist(CHECKLISTS / name)
    critical = [i for i in checklist.items if i.critical]
    assert 3 <= len(critical) <= 14
    for item in checklist.items:
        assert item.guidance.count(".") >= 2, item.key  # a few sentences, not a stub
        assert 1 <= len(item.evidence) <= 3, item.key
        assert item.applies_to(1), item.key  # tier 1 gets everything
    assert validate_paths([CHECKLISTS / name]) == []


def test_design_for_production_shape():
    checklist = load_checklist(CHECKLISTS / "design-for-production.yaml")
    assert checklist.slug == "design-for-production"
    assert 4 <= len(checklist.categories) <= 6
    assert 12 <= len(checklist.items) <= 18


def test_shipped_checklists_do_not_share_keys_or_slugs():
    assert validate_paths([CHECKLISTS]) == []


def test_constants():
    assert len(PROBE_KINDS) == 10 and "tls_expiry" in PROBE_KINDS
    assert STATUSES == ("met", "partial", "not_met", "n_a")


def test_item_lookup_and_tiers(readiness):
    item = readiness.item("multiple_availability_zones")
    assert item is not None and item.category == "infrastructure"
    assert item.applies_to(1) and not item.applies_to(3)
    assert readiness.item("no_such_item") is None


# --- validation ------------------------------------------------------------------------

BASE = textwrap.dedent("""\
    slug: demo
    version: "1"
    title: Demo
    categories:
      - key: basics
        title: Basics
        items:
          - key: first
            title: First item
            weight: 2
          - key: second
            title: Second item
""")


def problems_in(text: str) -> list[ChecklistProblem]:
    with pytest.raises(ChecklistInvalid) as info:
        parse_checklist(text, "demo.yaml")
    return info.value.problems


def only_problem(text: str) -> ChecklistProblem:
    problems = problems_in(text)
    assert len(problems) == 1, problems
    return problems[0]


def test_base_is_valid():
    checklist = parse_checklist(BASE)
    assert [i.key for i in checklist.items] == ["first", "second"]
    assert checklist.item("second").weight == 1
    assert checklist.item("second").tiers == (1, 2, 3)


@pytest.mark.parametrize(("old", "new", "line", "message"), [
    ("weight: 2\n", "weight: 2\n        colour: red\n", 11,
     "categories[0].items[0]: unknown field 'colour'"),
    ('version: "1"\n', 'version: "1"\nowner: me\n', 3, "unknown field 'owner'"),
    ("key: second", "key: first", 11, "duplicate item key 'first'"),
    ("weight: 2\n", "weight: 2\n        weight: 3\n", 11, "duplicate key 'weight'"),
    ("        title: Second item\n", "", 11, "items[1]: missing required field 'title'"),
    ("title: Second item", 'title: "  "', 12, "items[1].title: must not be empty"),
    ("title: Basics", "title:", 6, "categories[0].title: Input should be a valid string"),
    ("weight: 2", "weight: 5", 10, "weight: Input should be less than or equal to 3"),
    ("weight: 2", "weight: 0", 10, "weight: Input should be greater than or equal to 1"),
    ("weight: 2", 'weight: "2"', 10, "weight: Input should be a valid integer"),
    ("weight: 2", "weight: 2\n        tiers: [1, 4]", 11,
     "tiers must be a non-empty subset of [1, 2, 3], got [1, 4]"),
    ("weight: 2", "weight: 2\n        tiers: []", 11, "tiers must be a non-empty subset"),
    ("weight: 2", "weight: 2\n        probe: ping", 11, "unknown probe 'ping'"),
    ("slug: demo", "slug: Demo_1", 1, "slug: 'Demo_1' must match ^[a-z0-9][a-z0-9-]*$"),
    ("key: basics", "key: Basics", 5, "categories[0].key: 'Basics' must match"),
    ('version: "1"\n', 'version: "1"\nthresholds:\n  ready: 120\n  conditions: 70\n', 4,
     "thresholds.ready: Input should be less than or equal to 100"),
    ('version: "1"\n', 'version: "1"\nthresholds:\n  ready: 60\n  conditions: 70\n', 5,
     "thresholds.conditions: conditions (70) must not exceed ready (60)"),
    ("weight: 2", "weight: 2\n        replaces: [second]", 11,
     "replaces 'second', which is still an item"),
])
def test_validation_error_names_line_and_problem(old, new, line, message):
    assert old in BASE
    problem = only_problem(BASE.replace(old, new, 1))
    assert problem.path == "demo.yaml"
    assert problem.line == line, problem
    assert message in problem.message, problem


def test_empty_items_list():
    text = BASE.split("    items:\n")[0] + "    items: []\n"
    problem = only_problem(text)
    assert (problem.line, problem.message) == (7, "categories[0].items: must not be empty")


def test_item_must_be_a_mapping():
    problem = only_problem(BASE.replace("      - key: second\n        title: Second item\n",
                                        "      - just a string\n"))
    assert (problem.line, problem.message) == (11, "categories[0].items[1]: must be a mapping")


def test_empty_categories():
    problem = only_problem('slug: demo\nversion: "1"\ntitle: Demo\ncategories: []\n')
    assert (problem.line, problem.message) == (4, "categories: must not be empty")


def test_missing_top_level_field_points_at_line_1():
    problem = only_problem(BASE.replace("title: Demo\n", ""))
    assert (problem.line, problem.message) == (1, "missing required field 'title'")


def test_duplicate_item_key_across_categories():
    second_category = textwrap.indent(textwrap.dedent("""\
        - key: more
          title: More
          items:
            - key: first
              title: Same key, other category
    """), "  ")
    problem = only_problem(BASE + second_category)
    assert (problem.line, problem.message) == (
        16, "categories[1].items[0].key: duplicate item key 'first'")


def test_duplicate_category_key():
    text = BASE + "  - key: basics\n    title: Again\n    items:\n      - {key: third, title: T}\n"
    problem = only_problem(text)
    assert (problem.line, problem.message) == (
        13, "categories[1].key: duplicate category key 'basics'")


def test_yaml_syntax_error_has_line():
    problem = only_problem(BASE.replace("title: First item", "title: [First item"))
    assert problem.message.startswith("YAML syntax error")
    assert problem.line in (10, 11)


@pytest.mark.parametrize(("text", "what"), [("- a\n- b\n", "a list"), ("", "empty"),
                                            ("just words\n", "a str")])
def test_file_must_be_a_mapping(text, what):
    problem = only_problem(text)
    assert problem.line == 1
    assert problem.message == f"a checklist must be a YAML mapping, this file is {what}"


def test_all_problems_are_collected_in_line_order():
    text = (BASE.replace("slug: demo", "slug: -bad")
                .replace("weight: 2", "weight: 9\n        weight: 1")
                .replace("key: second", "key: first"))
    problems = problems_in(text)
    assert [p.line for p in problems] == [1, 11, 12]
    assert "slug" in problems[0].message and "duplicate key 'weight'" in problems[1].message
    assert "duplicate item key 'first'" in problems[2].message


def test_exception_and_problem_text():
    with pytest.raises(ChecklistInvalid) as info:
        parse_checklist(BASE.replace("weight: 2", "weight: 5").replace("slug: demo", "slug: X"),
                        "x.yaml")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("x.yaml:1: slug:")
    assert lines[1].startswith("x.yaml:10: categories[0].items[0].weight:")
    assert str(ChecklistProblem("x.yaml", None, "gone")) == "x.yaml: gone"


def test_unreadable_file(tmp_path):
    with pytest.raises(ChecklistInvalid) as info:
        load_checklist(tmp_path / "missing.yaml")
    [problem] = info.value.problems
    assert problem.line is None and problem.message.startswith("cannot read file")


def test_fixture_with_duplicates():
    problems = validate_paths(FIXTURES / "checklists" / "bad-duplicates.yaml")
    assert [(p.line, p.message) for p in problems] == [
        (11, "duplicate key 'title'"),
        (12, "categories[0].items[1].key: duplicate item key 'has_owner'"),
    ]


def test_content_hash_is_of_the_bytes():
    assert parse_checklist(BASE).content_hash == hashlib.sha256(BASE.encode()).hexdigest()
    assert parse_checklist(BASE.encode()).content_hash == parse_checklist(BASE).content_hash


# --- discovery and validate_paths ------------------------------------------------------

def test_discover_across_two_dirs(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    (one / "b.yaml").write_text(BASE)
    (one / "notes.txt").write_text("not a checklist")
    (two / "a.yml").write_text(BASE)
    found = discover([one, two, one, tmp_path / "absent"])
    assert found == [(one / "b.yaml").resolve(), (two / "a.yml").resolve()]


def test_validate_paths_flags_same_slug(tmp_path):
    (tmp_path / "a.yaml").write_text(BASE)
    (tmp_path / "b.yaml").write_text(BASE + "\n")
    problems = validate_paths([tmp_path])
    assert len(problems) == 1
    assert problems[0].path.endswith("b.yaml") and "slug 'demo' is also used by" in str(
        problems[0])


def test_validate_paths_missing_and_empty(tmp_path):
    problems = validate_paths([tmp_path, tmp_path / "nope.yaml"])
    assert [p.message for p in problems] == ["no *.yaml checklists here",
                                             "no such file or directory"]
    assert validate_paths(FIXTURES / "checklists" / "minimal.yaml") == []


# --- versions --------------------------------------------------------------------------

V2 = textwrap.dedent("""\
    slug: demo
    version: "2"
    title: Demo
    categories:
      - key: basics
        title: Basics
        items:
          - key: first
            title: First item
            weight: 3
          - key: second_renamed
            title: Second item, renamed
            replaces: [second]
          - key: third
            title: A new item
""")


def test_diff_with_replaces():
    diff = diff_checklists(parse_checklist(BASE), parse_checklist(V2))
    assert diff.added == ("third",)
    assert diff.removed == ()
    assert diff.renamed == {"second": "second_renamed"}
    assert diff.changed == ("first",)


def test_diff_removed_and_unchanged():
    old = parse_checklist(V2)
    new = parse_checklist(BASE.replace("weight: 2", "weight: 3"))
    diff = diff_checklists(old, new)
    # `second` is new here: nothing in the new file says it replaces `second_renamed`.
    assert diff.added == ("second",)
    assert diff.removed == ("second_renamed", "third")
    assert diff.renamed == {} and diff.changed == ()
    same = diff_checklists(old, old)
    assert (same.added, same.removed, same.renamed, same.changed) == ((), (), {}, ())


def test_carry_over_keys():
    old, new = parse_checklist(BASE), parse_checklist(V2)
    assert carry_over_keys(old, new) == {"first": "first", "second_renamed": "second"}
    assert carry_over_keys(new, new) == {k: k for k in ("first", "second_renamed", "third")}


def test_carry_over_prefers_first_existing_replaced_key():
    new = parse_checklist(V2.replace("replaces: [second]", "replaces: [gone, second]"))
    assert carry_over_keys(parse_checklist(BASE), new)["second_renamed"] == "second"


def test_two_items_cannot_replace_the_same_key():
    text = V2.replace("title: A new item", "title: A new item\n        replaces: [second]")
    problem = only_problem(text)
    assert (problem.line, problem.message) == (
        16, "categories[0].items[2].replaces[0]: 'second' is already replaced by 'second_renamed'")


# --- JSON ------------------------------------------------------------------------------

def test_json_round_trip(readiness):
    data = json.loads(json.dumps(readiness.to_json()))
    assert Checklist.from_json(data) == readiness


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.booleans(),
                          st.sets(st.sampled_from([1, 2, 3]), min_size=1),
                          st.none() | st.sampled_from(sorted(PROBE_KINDS))),
                min_size=1, max_size=8),
       st.integers(0, 100), st.integers(0, 100))
def test_any_valid_checklist_round_trips(items, a, b):
    document = {
        "slug": "generated", "version": "1", "title": "Generated",
        "thresholds": {"ready": max(a, b), "conditions": min(a, b)},
        "categories": [{"key": "only", "title": "Only", "items": [
            {"key": f"item_{n}", "title": f"Item {n}", "weight": weight, "critical": critical,
             "tiers": sorted(tiers), "probe": probe}
            for n, (weight, critical, tiers, probe) in enumerate(items)]}],
    }
    checklist = parse_checklist(yaml.safe_dump(document))
    assert Checklist.from_json(json.loads(json.dumps(checklist.to_json()))) == checklist
    assert all(item.applies_to(t) == (t in item.tiers) for item in checklist.items
               for t in (1, 2, 3))


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6)
PLACES = [("slug",), ("version",), ("thresholds",), ("categories",), ("categories", 0),
          ("categories", 0, "key"), ("categories", 0, "items"), ("categories", 0, "items", 0),
          ("categories", 0, "items", 0, "key"), ("categories", 0, "items", 1, "tiers"),
          ("categories", 0, "items", 1, "replaces"), ("categories", 0, "items", 1, "probe")]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PLACES), JUNK)
def test_junk_anywhere_is_reported_not_raised(place, junk):
    document = yaml.safe_load(BASE)
    target = document
    for part in place[:-1]:
        target = target[part]
    target[place[-1]] = junk
    try:
        parse_checklist(yaml.safe_dump(document))
    except ChecklistInvalid as exc:
        assert exc.problems and all(p.line and p.message for p in exc.problems)
