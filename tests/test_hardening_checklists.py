"""Hostile checklist files (issue 14, item 1): alias bombs, deep nests and huge lists are
refused from the parser's events with `file:line: problem`, before anything is built, and a
refused file is remembered and not parsed again on a request."""

from __future__ import annotations

import tracemalloc

import pytest

from tests.factories import UserFactory
from webapp import catalog, checklists
from webapp.checklists import ChecklistInvalid, parse_checklist

HEAD = """\
slug: hostile
version: "1.0.0"
title: Hostile
categories:
  - key: basics
    title: Basics
    items:
      - &item {key: owner_known, title: The service has an owner}
"""

# ~1 KB that expands to 10**9 items: the file that made a worker grow to 3.4 GB.
BILLION_LAUGHS = HEAD + "".join(
    f"l{n}: &l{n} [{', '.join([f'*l{n - 1}' if n > 1 else '*item'] * 1000)}]\n" for n in range(1, 4))
DEEP = HEAD + "extra: " + "[" * 500 + "]" * 500 + "\n"
DEEP_BLOCK = HEAD + "extra:\n" + "".join("  " * depth + "- \n" for depth in range(1, 400))
MANY_ITEMS = HEAD + "".join(f"      - {{key: item_{n}, title: Item {n}}}\n" for n in range(2_100))


def problems_of(text: str) -> list[str]:
    with pytest.raises(ChecklistInvalid) as caught:
        parse_checklist(text, "hostile.yaml")
    return [str(p) for p in caught.value.problems]


def test_an_alias_bomb_is_refused_at_its_line_in_bounded_memory():
    tracemalloc.start()
    try:
        problems = problems_of(BILLION_LAUGHS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems == ["hostile.yaml:10: the document expands to more than 50,000 values "
                        "(aliases count once per use); split the file or drop the aliases"]
    assert peak < 20 * 1024 * 1024  # nothing was expanded


@pytest.mark.parametrize("text, line", [(DEEP, 9), (DEEP_BLOCK, 41)])
def test_deep_nesting_is_refused_not_a_recursion_error(text, line):
    assert problems_of(text) == [
        f"hostile.yaml:{line}: nested more than 32 levels deep; a checklist never needs that"]


def test_too_many_items_are_refused():
    assert problems_of(MANY_ITEMS) == ["hostile.yaml:4: categories: 2,101 items in all; at most 2,000"]


def test_a_file_over_the_size_limit_is_refused_unread():
    text = HEAD + "# " + "x" * checklists.MAX_FILE_BYTES + "\n"
    assert problems_of(text) == [
        f"hostile.yaml: the file is {len(text.encode()):,} bytes; a checklist may be at most 524,288"]


def test_aliases_that_stay_small_still_work():
    text = HEAD.replace("      - &item {key: owner_known, title: The service has an owner}\n",
                        "      - {key: owner_known, title: Owner, tiers: &all [1, 2, 3]}\n"
                        "      - {key: oncall_known, title: On-call, tiers: *all}\n")
    checklist = parse_checklist(text, "fine.yaml")
    assert [item.tiers for item in checklist.items] == [(1, 2, 3), (1, 2, 3)]


def test_validate_command_reports_a_bomb_instead_of_hanging_or_crashing(runner, tmp_path):
    (tmp_path / "deep.yaml").write_text(DEEP)
    (tmp_path / "bomb.yaml").write_text(BILLION_LAUGHS)
    result = runner.invoke(args=["checklists", "validate", str(tmp_path)])
    assert result.exit_code != 0
    assert f"{tmp_path / 'bomb.yaml'}:10: the document expands" in result.output
    assert f"{tmp_path / 'deep.yaml'}:9: nested more than 32 levels deep" in result.output
    assert "Traceback" not in result.output


@pytest.fixture
def hostile_dir(app, tmp_path):
    app.config["CHECKLISTS_DIR"] = str(tmp_path)
    catalog._loaded.clear()  # this process's parse memo: start from nothing
    yield tmp_path
    app.config["CHECKLISTS_DIR"] = None
    catalog._loaded.clear()


def test_a_refused_file_is_not_parsed_again(client, auth, hostile_dir, monkeypatch):
    """Not by pages (they read the refusal from the database), and not by later syncs while
    the file is unchanged, even when another file changed."""
    (hostile_dir / "deep.yaml").write_text(DEEP)
    problems = catalog.sync()
    assert [str(p) for p in problems] == [
        f"{hostile_dir / 'deep.yaml'}:9: nested more than 32 levels deep; a checklist never needs that"]
    admin = UserFactory(is_admin=True)
    auth.login(admin)

    parsed = []
    real = checklists._check_events
    monkeypatch.setattr(checklists, "_check_events", lambda source, path: (parsed.append(path), real(source, path)))
    (hostile_dir / "other.yaml").write_text(HEAD.replace("slug: hostile", "slug: other"))  # another file changes
    for _ in range(3):
        page = client.get("/checklists/")
        assert page.status_code == 200
        assert "nested more than 32 levels deep" in page.get_data(as_text=True)
        assert [str(p) for p in catalog.sync()] == [str(p) for p in problems]  # the worker's sync
    assert str(hostile_dir / "deep.yaml") not in parsed
