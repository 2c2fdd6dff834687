"""Shared fixtures: the app on SQLite (default) or PostgreSQL (DATABASE_URL), a client, and
helpers that turn "not available here" into a skip on a laptop and a failure in CI."""

from __future__ import annotations

import contextvars
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from flask import has_app_context
from flask.testing import FlaskClient, FlaskCliRunner

# Before webapp is imported: its job queue and dev secret must never touch the repo's
# instance/ folder (a developer's `make run` database and queue live there).
os.environ["PREFLIGHT_INSTANCE_PATH"] = tempfile.mkdtemp(prefix="preflight-test-instance-")

from webapp import create_app
from webapp.extensions import db

# live_server and page for the browser tests (tests/browser_support.py).
pytest_plugins = ["tests.browser_support"]

REQUIRED = {
    "postgres": "PREFLIGHT_REQUIRE_POSTGRES",
    "redis": "PREFLIGHT_REQUIRE_REDIS",
    "browser": "PREFLIGHT_REQUIRE_BROWSER",
}


def need(resource: str, available: bool, reason: str) -> None:
    """Skip when `resource` is missing, unless CI set the variable that makes it required."""
    if available:
        return
    if os.environ.get(REQUIRED[resource]) == "1":
        pytest.fail(f"{resource} is required here ({REQUIRED[resource]}=1) but {reason}")
    pytest.skip(f"{resource} not available: {reason}")


def _in_own_context(call, *args, **kwargs):
    """Run `call` as production would: in a fresh app context, hence its own database session.

    The test's pending rows are committed first (they stand for data already in the
    database), and the test's session forgets what it loaded afterwards, so assertions read
    what the request really committed: a view that forgets to commit fails its test.
    """
    if not has_app_context():  # a redirect followed inside a request already detached
        return call(*args, **kwargs)
    db.session.commit()
    try:
        # An empty context has no app context in it, so the request pushes its own.
        return contextvars.Context().run(call, *args, **kwargs)
    finally:
        db.session.expire_all()


class IsolatedClient(FlaskClient):
    """A test client whose every request runs in its own session, as under gunicorn."""

    def open(self, *args, **kwargs):
        return _in_own_context(super().open, *args, **kwargs)


class IsolatedCliRunner(FlaskCliRunner):
    """CLI commands too run in their own app context and session, as from a shell."""

    def invoke(self, *args, **kwargs):
        def in_fresh_app_context():
            with self.app.app_context():  # what `flask` itself pushes for every command
                return FlaskCliRunner.invoke(self, *args, **kwargs)

        return _in_own_context(in_fresh_app_context)


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    instance = tmp_path_factory.mktemp("instance")
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{instance / 'test.sqlite3'}"
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    app = create_app({
        "TESTING": True,
        "SECRET_KEY": "test-secret-key-not-for-production",
        "SQLALCHEMY_DATABASE_URI": database_url,
        "WTF_CSRF_ENABLED": False,
        "RATELIMIT_ENABLED": False,
        "HUEY_IMMEDIATE": True,
        "SERVER_NAME": None,
        "PROBE_ALLOW_NETWORKS": "127.0.0.0/8",  # the tests' own local servers, nothing else
        "PROBE_DEADLINE_SECONDS": 2,
    })
    app.instance_path = str(instance)
    app.test_client_class = IsolatedClient
    app.test_cli_runner_class = IsolatedCliRunner
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        db.engine.dispose()
    shutil.rmtree(instance, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_database(request):
    """Every test starts with empty tables (cheaper than rebuilding the schema)."""
    if "app" not in request.fixturenames:
        yield
        return
    app = request.getfixturevalue("app")
    from webapp import flags

    flags.forget()  # a flag a previous test switched off must not linger in the cache
    with app.app_context():
        yield
        db.session.remove()
        with db.engine.begin() as connection:
            for table in reversed(db.metadata.sorted_tables):
                connection.execute(table.delete())


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class Auth:
    def __init__(self, client):
        self.client = client

    def login(self, user, password: str = "correct horse battery"):
        return self.client.post("/login", data={"email": user.email, "password": password})

    def logout(self):
        return self.client.post("/logout")


@pytest.fixture
def auth(client):
    return Auth(client)


REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """PREFLIGHT_ONLY_DATABASE_TESTS=1 keeps only the tests that run on the app's database (the
    `app` fixture). CI sets it for its PostgreSQL pass: the other tests do not depend on
    DATABASE_URL and have just run, identically, in its SQLite pass."""
    if os.environ.get("PREFLIGHT_ONLY_DATABASE_TESTS") != "1":
        return
    kept = [item for item in items if "app" in getattr(item, "fixturenames", ())]
    dropped = [item for item in items if "app" not in getattr(item, "fixturenames", ())]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(f"PREFLIGHT_ONLY_DATABASE_TESTS: {len(dropped)} tests that do not use "
                                f"the app's database deselected (they run in the SQLite pass)")


def pytest_unconfigure(config):
    shutil.rmtree(os.environ["PREFLIGHT_INSTANCE_PATH"], ignore_errors=True)


# --- GET never writes (a self-contained block; owner: the "shared" engineer) ----------------
# The rule every view follows: a GET, HEAD or OPTIONS request never writes and never commits.
# This hook holds every test to it, on SQLite and PostgreSQL, for the test client and for live
# servers alike: any INSERT/UPDATE/DELETE sent, or commit made, while such a request is being
# handled fails the test that made the request, naming the method, the path and the statement.

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WRITE_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE"})


def _safe_request_now() -> str | None:
    from flask import has_request_context, request

    if has_request_context() and request.method in _SAFE_METHODS:
        return f"{request.method} {request.full_path.rstrip('?')}"
    return None


@pytest.fixture(autouse=True)
def _get_never_writes():
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

    violations: list[str] = []

    def refuse(what: str) -> None:
        violations.append(what)
        raise AssertionError(what)

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
        where = _safe_request_now()
        words = statement.split(None, 1)
        if where and words and words[0].upper() in _WRITE_VERBS:
            refuse(f"{where} wrote to the database: {' '.join(statement.split())[:200]}")

    def before_commit(session):
        where = _safe_request_now()
        if where:
            refuse(f"{where} committed")

    event.listen(Engine, "before_cursor_execute", before_cursor_execute)
    event.listen(Session, "before_commit", before_commit)
    try:
        yield violations
    finally:
        event.remove(Engine, "before_cursor_execute", before_cursor_execute)
        event.remove(Session, "before_commit", before_commit)
    assert not violations, "GET requests must never write:\n" + "\n".join(violations)
