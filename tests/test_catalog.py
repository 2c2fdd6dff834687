"""Checklist files in the running app: versions stored, a bad file refused while the last
good version keeps serving (log + admin page), and the `flask checklists` commands."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.factories import UserFactory
from webapp import catalog
from webapp.extensions import db

GOOD = """\
slug: custom
version: "1.0.0"
title: Custom checks
description: A team's own checklist.
thresholds: {ready: 85, conditions: 70}
categories:
  - key: basics
    title: Basics
    items:
      - key: owner_known
        title: The service has an owner
        guidance: Someone must answer for it.
        evidence: [Owner field filled in]
        weight: 2
"""


@pytest.fixture
def custom_dir(app, tmp_path):
    app.config["CHECKLISTS_DIR"] = str(tmp_path)
    yield tmp_path
    app.config["CHECKLISTS_DIR"] = None


def test_extra_directory_is_offered_and_versions_are_stored(custom_dir):
    (custom_dir / "custom.yaml").write_text(GOOD)
    assert catalog.sync(force=True) == []
    slugs = {v.slug for v in catalog.latest_versions()}
    assert slugs == {"custom", "production-readiness", "design-for-production"}
    first = catalog.latest_version("custom")
    (custom_dir / "custom.yaml").write_text(GOOD.replace('"1.0.0"', '"1.1.0"'))
    catalog.sync(force=True)
    second = catalog.latest_version("custom")
    assert second.id != first.id and second.version == "1.1.0"
    assert catalog.checklist_of(first).version == "1.0.0"  # the old version stays for its assessments


def test_bad_file_is_refused_and_last_good_version_keeps_serving(client, auth, custom_dir, caplog):
    (custom_dir / "custom.yaml").write_text(GOOD)
    catalog.sync(force=True)
    good = catalog.latest_version("custom")
    db.session.commit()
    (custom_dir / "custom.yaml").write_text(GOOD.replace("weight: 2", "weight: 9"))
    with caplog.at_level(logging.WARNING, logger="webapp.checklists"):
        problems = catalog.sync(force=True)
    assert problems and "weight" in str(problems[0]) and ":14:" in str(problems[0])
    assert "last good version keeps serving" in caplog.text
    assert catalog.latest_version("custom").id == good.id
    db.session.commit()
    auth.login(UserFactory(is_admin=True))
    db.session.commit()
    page = client.get("/checklists/").get_data(as_text=True)
    assert "custom.yaml" in page and "Custom checks" in page


def test_cli_validate_list_and_diff(runner, tmp_path):
    good, bad, newer = tmp_path / "good.yaml", tmp_path / "bad.yaml", tmp_path / "newer.yaml"
    good.write_text(GOOD)
    bad.write_text(GOOD.replace("title: The service has an owner", "title: ''").replace("weight: 2", "weight: 0"))
    newer.write_text(GOOD.replace("key: owner_known", "key: owner_named\n        replaces: [owner_known]")
                     + "      - key: runbook_linked\n        title: Runbook linked\n")
    result = runner.invoke(args=["checklists", "validate", str(good)])
    assert result.exit_code == 0 and "ok" in result.output
    result = runner.invoke(args=["checklists", "validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:14:" in result.output and "weight" in result.output
    assert runner.invoke(args=["checklists", "validate"]).exit_code == 0  # the shipped files
    result = runner.invoke(args=["checklists", "list"])
    assert "production-readiness\tv1.0.0\t46 items" in result.output
    result = runner.invoke(args=["checklists", "diff", str(good), str(newer)])
    assert "+ runbook_linked" in result.output and "~ owner_known -> owner_named" in result.output
    assert runner.invoke(args=["checklists", "diff", str(good), str(bad)]).exit_code == 1


def test_shipped_checklist_dir_is_the_repos(app):
    assert Path(app.config["CHECKLISTS_BUILTIN_DIR"]).joinpath("production-readiness.yaml").exists()
