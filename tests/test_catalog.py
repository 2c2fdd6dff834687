"""Checklist files in the running app: versions stored, a bad file refused while the last
good version keeps serving (log + admin page), the database as the only truth (concurrent
syncs, no sync on GET, every process sees the same), and the `flask checklists` commands."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from tests.factories import ServiceFactory, UserFactory
from webapp import assessments, catalog
from webapp.extensions import db
from webapp.models import ChecklistRefusal, ChecklistVersion
from webapp.probes.tasks import sync_checklists

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


def _count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def _sync_in_own_session(app, outcomes: list, index: int, racers: set | None = None) -> None:
    """What a second worker or host does: its own app context, session and connection."""
    if racers is not None:
        racers.add(threading.get_ident())
    with app.app_context():
        try:
            outcomes[index] = catalog.sync()
            db.session.commit()
        except Exception as exc:  # noqa: BLE001 - the test reports whatever the race raised
            outcomes[index] = exc
        finally:
            db.session.remove()


@pytest.mark.parametrize(("content", "table"), [(GOOD, "checklist_version"),
                                                (GOOD.replace("weight: 2", "weight: 9"), "checklist_refusal")],
                         ids=["new version", "refused file"])
def test_two_workers_syncing_the_same_new_file_both_succeed(app, custom_dir, content, table):
    catalog.sync()
    db.session.commit()
    (custom_dir / "custom.yaml").write_text(content)
    # Both sessions have read "not stored yet" before either writes: hold each one's INSERT
    # until the other has reached its own, so they race on the unique key for real.
    racers: set[int] = set()
    both_ready = threading.Barrier(2, timeout=10)

    def hold_insert(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() in racers and statement.lstrip().startswith(f"INSERT INTO {table}"):
            both_ready.wait()

    outcomes: list = [None, None]
    threads = [threading.Thread(target=_sync_in_own_session, args=(app, outcomes, i, racers))
               for i in range(2)]
    event.listen(db.engine, "before_cursor_execute", hold_insert)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        event.remove(db.engine, "before_cursor_execute", hold_insert)
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    db.session.expire_all()
    if table == "checklist_version":
        assert outcomes == [[], []]
        assert _count(ChecklistVersion, ChecklistVersion.slug == "custom") == 1
        assert catalog.latest_version("custom").version == "1.0.0"
    else:
        assert all("weight" in str(o[0]) for o in outcomes)
        assert _count(ChecklistRefusal) == 1 and _count(ChecklistVersion, ChecklistVersion.slug == "custom") == 0


def test_sync_writes_nothing_when_no_file_changed(app, custom_dir):
    (custom_dir / "custom.yaml").write_text(GOOD)
    (custom_dir / "broken.yaml").write_text(GOOD.replace("slug: custom", "slug: broken").replace("weight: 2", "weight: 9"))
    catalog.sync()
    db.session.commit()
    writes: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            writes.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert [p.path for p in catalog.sync(force=True)] == [str(custom_dir / "broken.yaml")]
        db.session.commit()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert writes == []  # the worker syncs every minute: an idle minute takes no write lock


def test_refusals_are_stored_and_cleared_for_every_process(app, client, custom_dir):
    (custom_dir / "custom.yaml").write_text(GOOD.replace("weight: 2", "weight: 9"))
    outcomes: list = [None]
    _sync_in_own_session(app, outcomes, 0)  # another process refused the file ...
    deep = client.get("/healthz/deep").get_json()["checks"]["checklists"]
    assert deep == {"status": "warn", "checklists": 2, "refused_files": 1, "problems": 1}  # ... this one knows
    assert [p.line for p in catalog.current_problems()] == [14]
    (custom_dir / "custom.yaml").write_text(GOOD)
    _sync_in_own_session(app, outcomes, 0)
    deep = client.get("/healthz/deep").get_json()["checks"]["checklists"]
    assert deep == {"status": "pass", "checklists": 3, "refused_files": 0, "problems": 0}
    (custom_dir / "gone.yaml").write_text("slug: [")
    _sync_in_own_session(app, outcomes, 0)
    assert _count(ChecklistRefusal) == 1
    (custom_dir / "gone.yaml").unlink()
    _sync_in_own_session(app, outcomes, 0)
    assert _count(ChecklistRefusal) == 0  # a deleted file's problems go with it


def test_deep_health_warns_when_no_checklist_is_loaded(client):
    deep = client.get("/healthz/deep").get_json()["checks"]["checklists"]
    assert deep["status"] == "warn" and deep["checklists"] == 0


def test_upgrade_page_offers_only_what_the_database_holds(app, client, auth, custom_dir):
    """Issue 8: a GET of the upgrade page loaded 1.1.0 without committing it, and this
    process's memory then said "already synced", so 1.1.0 was never offered again."""
    (custom_dir / "custom.yaml").write_text(GOOD)
    catalog.sync()
    admin = UserFactory(is_admin=True)
    assessment = assessments.start_assessment(ServiceFactory(), catalog.latest_version("custom"), admin)
    db.session.commit()
    auth.login(admin)
    (custom_dir / "custom.yaml").write_text(GOOD.replace('"1.0.0"', '"1.1.0"'))
    page = client.get(f"/assessments/{assessment.id}/upgrade")
    assert page.status_code == 302 and page.headers["Location"].endswith(f"/assessments/{assessment.id}")
    assert _count(ChecklistVersion, ChecklistVersion.version == "1.1.0") == 0
    assert sync_checklists.call_local() == 0  # the worker's job loads and commits it
    page = client.get(f"/assessments/{assessment.id}/upgrade")
    assert page.status_code == 200 and "1.1.0" in page.get_data(as_text=True)
    assert client.get(f"/assessments/{assessment.id}/upgrade").status_code == 200  # and keeps offering it


def test_a_checklist_changed_back_is_offered_as_earlier_not_newer(app, client, auth, custom_dir):
    """A file reverted to content stored before is current again; an assessment on the
    later content is told the checklist went back, and the switch is not called an upgrade."""
    (custom_dir / "custom.yaml").write_text(GOOD)
    catalog.sync()
    (custom_dir / "custom.yaml").write_text(GOOD.replace('"1.0.0"', '"1.1.0"'))
    catalog.sync()
    admin = UserFactory(is_admin=True)
    assessment = assessments.start_assessment(ServiceFactory(), catalog.latest_version("custom"), admin)
    db.session.commit()
    auth.login(admin)
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    assert "newer version" not in page and "changed back" not in page  # on the current version
    (custom_dir / "custom.yaml").write_text(GOOD)
    catalog.sync()
    db.session.commit()
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    assert "This checklist was changed back to an earlier version</strong> (v1.0.0" in page
    assert "A newer version" not in page and "See what changed and switch" in page
    page = client.get(f"/assessments/{assessment.id}/upgrade").get_data(as_text=True)
    assert "v1.0.0 is not newer." in page and "Switch to v1.0.0" in page and "Upgrade to" not in page
    (custom_dir / "custom.yaml").write_text(GOOD.replace('"1.0.0"', '"1.2.0"'))
    catalog.sync()
    db.session.commit()
    page = client.get(f"/assessments/{assessment.id}").get_data(as_text=True)
    assert "A newer version of this checklist is available</strong> (v1.2.0" in page
    assert "Upgrade to v1.2.0" in client.get(f"/assessments/{assessment.id}/upgrade").get_data(as_text=True)


def test_checklist_pages_and_start_page_do_not_load_files(app, client, auth, custom_dir):
    catalog.sync()
    admin = UserFactory(is_admin=True)
    service = ServiceFactory()
    db.session.commit()
    auth.login(admin)
    (custom_dir / "custom.yaml").write_text(GOOD)
    assert client.get("/checklists/custom").status_code == 404
    assert "Custom checks" not in client.get("/checklists/").get_data(as_text=True)
    assert "Custom checks" not in client.get(f"/services/{service.id}/assessments/new").get_data(as_text=True)
    assert _count(ChecklistVersion, ChecklistVersion.slug == "custom") == 0


def test_admin_reload_loads_changed_files_and_says_what_changed(app, client, auth, custom_dir):
    catalog.sync()
    admin = UserFactory(is_admin=True)
    db.session.commit()
    auth.login(admin)
    (custom_dir / "custom.yaml").write_text(GOOD)
    page = client.post("/checklists/reload", follow_redirects=True).get_data(as_text=True)
    assert "Loaded Custom checks v1.0.0." in page
    assert client.get("/checklists/custom").status_code == 200
    page = client.post("/checklists/reload", follow_redirects=True).get_data(as_text=True)
    assert "nothing changed" in page
    (custom_dir / "custom.yaml").write_text(GOOD.replace("weight: 2", "weight: 9"))
    page = client.post("/checklists/reload", follow_redirects=True).get_data(as_text=True)
    assert "1 problem in checklist files" in page and "custom.yaml:14:" in page
    db.session.expire_all()
    assert catalog.latest_version("custom").version == "1.0.0"


def test_a_write_while_handling_a_get_fails_the_test(app, _get_never_writes):
    """The conftest hook that holds every request test to "GET never writes" really bites."""
    with app.test_request_context("/somewhere", method="GET"):
        db.session.add(ChecklistRefusal(path="/x.yaml", content_hash="0", problems=[]))
        with pytest.raises(AssertionError, match=r"GET /somewhere wrote to the database: INSERT INTO checklist_refusal"):
            db.session.flush()
        db.session.rollback()
        with pytest.raises(AssertionError, match="GET /somewhere committed"):
            db.session.commit()
    with app.test_request_context("/somewhere", method="POST"):
        db.session.add(ChecklistRefusal(path="/x.yaml", content_hash="0", problems=[]))
        db.session.commit()  # POST may
    assert len(_get_never_writes) == 2
    _get_never_writes.clear()
