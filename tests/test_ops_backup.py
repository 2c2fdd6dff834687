"""`flask db-backup` / `flask db-restore`: back up, wipe, restore, and every table is as it
was — on SQLite (online backup API) and PostgreSQL (pg_dump/pg_restore)."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select, table, text

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from tests.ops_support import scratch_postgres
from webapp import assessments, catalog, create_app
from webapp.extensions import db


def _snapshot() -> dict[str, list[tuple]]:
    """Every row of every table, in a stable order."""
    names = sorted(inspect(db.engine).get_table_names())
    return {name: sorted(map(tuple, db.session.execute(select(text("*")).select_from(table(name)))),
                         key=repr) for name in names}


def _seed() -> None:
    member = MembershipFactory(role="maintainer", user=UserFactory(name="Zoë O'Brien"))
    service = ServiceFactory(team=member.team, description="multi\nline ✓")
    catalog.sync(force=True)
    assessment = assessments.start_assessment(
        service, catalog.latest_version("production-readiness"), member.user)
    assessments.record_answer(assessment, "runbook", "met", "docs/runbook.md", member.user)
    assessments.add_evidence(assessment, "runbook", "https://example.test/runbook", "Runbook",
                             member.user)
    db.session.commit()


def _roundtrip(url: str, tmp_path) -> None:
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "x" * 32,
                      "RATELIMIT_ENABLED": False, "HUEY_IMMEDIATE": True})
    app.instance_path = str(tmp_path)
    runner = app.test_cli_runner()
    dump = tmp_path / "preflight.backup"
    with app.app_context():
        db.create_all()
        _seed()
        before = _snapshot()
        assert sum(len(rows) for rows in before.values()) > 10
        db.session.remove()

    result = runner.invoke(args=["db-backup", str(dump)])
    assert result.exit_code == 0, result.output
    assert "backed up" in result.output and dump.stat().st_size > 0

    refused = runner.invoke(args=["db-restore", str(dump)])
    assert refused.exit_code == 1 and "not empty" in refused.output

    with app.app_context():  # wipe: every row of every table gone
        with db.engine.begin() as connection:
            for model_table in reversed(db.metadata.sorted_tables):
                connection.execute(model_table.delete())
        assert all(not rows for name, rows in _snapshot().items() if name != "alembic_version")

    result = runner.invoke(args=["db-restore", str(dump)])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert _snapshot() == before
        # --force replaces data that was added since
        UserFactory(email="added-after-backup@example.test")
        db.session.commit()
        db.session.remove()
    result = runner.invoke(args=["db-restore", "--force", str(dump)])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert _snapshot() == before
        db.session.remove()
        db.engine.dispose()


def test_sqlite_backup_wipe_restore_is_identical(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path / 'live.sqlite3'}", tmp_path)


@pytest.mark.postgres
def test_postgres_backup_wipe_restore_is_identical(tmp_path):
    with scratch_postgres() as url:
        _roundtrip(url, tmp_path)


def test_restore_refuses_a_file_of_the_other_kind(tmp_path):
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.sqlite3'}",
                      "SECRET_KEY": "x" * 32, "RATELIMIT_ENABLED": False})
    bogus = tmp_path / "dump.backup"
    bogus.write_bytes(b"PGDMP\x01\x0e\x00 not sqlite")
    result = app.test_cli_runner().invoke(args=["db-restore", str(bogus)])
    assert result.exit_code == 1 and "not an SQLite backup" in result.output
