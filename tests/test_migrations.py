"""Migrations make the schema: an empty database upgrades to head, matches the models, and
downgrades back to nothing — on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import uuid

import flask_migrate
import pytest
from sqlalchemy import create_engine, inspect, text

from tests.conftest import need
from webapp import create_app
from webapp.extensions import db


def _roundtrip(url: str, tmp_path) -> None:
    # RATELIMIT_ENABLED off: Flask-Limiter keeps "enabled" on its one global object.
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "x" * 32,
                      "RATELIMIT_ENABLED": False})
    app.instance_path = str(tmp_path)
    with app.app_context():
        flask_migrate.upgrade()
        tables = set(inspect(db.engine).get_table_names())
        assert set(db.metadata.tables) <= tables
        flask_migrate.check()  # raises if the models and the migrations disagree
        flask_migrate.downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()


def test_sqlite_upgrade_check_downgrade(tmp_path):
    _roundtrip(f"sqlite:///{tmp_path / 'migrations.sqlite3'}", tmp_path)


def test_postgres_upgrade_check_downgrade(tmp_path):
    admin_url = os.environ.get("TEST_POSTGRES_URL", "")
    need("postgres", bool(admin_url), "TEST_POSTGRES_URL is not set")
    admin_url = admin_url.replace("postgresql://", "postgresql+psycopg://", 1)
    name = f"preflight_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - server down or refused: a skip on a laptop, a failure in CI
        need("postgres", False, f"cannot create a database at {admin_url}: {exc}")
    try:
        _roundtrip(admin_url.rsplit("/", 1)[0] + f"/{name}", tmp_path)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("env, message", [
    ({"PREFLIGHT_ENV": "production"}, "SECRET_KEY must be set"),
    ({"PREFLIGHT_ENV": "production", "SECRET_KEY": "change-me"}, "SECRET_KEY must be set"),
    ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be"),
    ({"PROBE_ALLOW_NETWORKS": "10.0.0.0/33"}, "PROBE_ALLOW_NETWORKS"),
    ({"PROBE_INTERVAL_MINUTES": "soon"}, "whole number"),
    ({"ALLOW_SIGNUP": "maybe"}, "true or false"),
])
def test_bad_settings_refuse_to_start_with_a_clear_message(tmp_path, env, message):
    from webapp.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, env)


def test_production_settings_accept_a_real_key(tmp_path):
    from webapp.config import load_settings

    settings = load_settings(tmp_path, {"PREFLIGHT_ENV": "production", "SECRET_KEY": "k" * 40})
    assert settings["SESSION_COOKIE_SECURE"] is True
    assert settings["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")


def test_create_app_exits_with_the_message_in_production_without_a_key(monkeypatch):
    monkeypatch.setenv("PREFLIGHT_ENV", "production")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(SystemExit, match="SECRET_KEY must be set"):
        create_app()
