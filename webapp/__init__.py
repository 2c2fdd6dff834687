"""Preflight: production readiness reviews. `create_app()` builds the Flask app."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from pathlib import Path

from flask import Flask, g, render_template, request
from markupsafe import escape
from sqlalchemy import event
from sqlalchemy.engine import Engine

from webapp.config import ConfigError, load_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings, extensions, blueprints, error pages, CLI, logging."""
    app = Flask(
        __name__,
        instance_path=os.environ.get("PREFLIGHT_INSTANCE_PATH") or str(REPO_ROOT / "instance"),
        template_folder=str(REPO_ROOT / "templates"),
        static_folder=str(REPO_ROOT / "static"),
    )
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    try:
        app.config.from_mapping(load_settings(Path(app.instance_path)))
    except ConfigError as exc:
        sys.exit(f"preflight: configuration error: {exc}")
    app.config["CHECKLISTS_BUILTIN_DIR"] = str(REPO_ROOT / "checklists")
    if test_config:
        app.config.update(test_config)

    configure_logging(app)
    register_extensions(app)
    register_request_hooks(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_template_helpers(app)
    register_commands(app)
    return app


def configure_logging(app: Flask) -> None:
    handler = logging.StreamHandler()
    if app.config["LOG_FORMAT"] == "json":
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("webapp")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    """SQLite: WAL so readers don't block the writer, a busy timeout, foreign keys on."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def register_extensions(app: Flask) -> None:
    from webapp.extensions import csrf, db, huey, limiter, login_manager, migrate
    from webapp.models import User

    db.init_app(app)
    migrate.init_app(app, db, directory=str(REPO_ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    if app.config.get("HUEY_IMMEDIATE"):
        huey.immediate = True  # tests: run jobs inline (the queue is process-global)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        return db.session.get(User, int(user_id)) if user_id.isdigit() else None


def register_request_hooks(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        # Accept a caller's id only if it is short and plain, so it is safe in logs.
        ok = 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum()
        g.request_id = incoming if ok else uuid.uuid4().hex

    @app.after_request
    def security_headers(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if app.config["PREFLIGHT_ENV"] == "production":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response


def register_blueprints(app: Flask) -> None:
    from webapp.views import (
        assessments,
        attention,
        auth,
        checklists,
        main,
        ops,
        owners,
        probes,
        reports,
        reviews,
        runbooks,
        services,
        teams,
    )

    for module in (main, attention, auth, teams, services, owners, runbooks, checklists, assessments,
                   probes, ops, reviews, reports):
        app.register_blueprint(module.bp)


def register_errorhandlers(app: Flask) -> None:
    from flask_wtf.csrf import CSRFError

    from webapp.extensions import db

    def render_error(error):
        code = getattr(error, "code", 500) or 500
        if code >= 500:
            db.session.rollback()
        description = getattr(error, "description", "Something went wrong on our side.")
        if request.headers.get("HX-Request"):
            return f'<div class="flash flash-error" role="alert">{code}: {escape(description)}</div>', code
        return render_template("error.html", code=code, description=description), code

    for code in (400, 403, 404, 405, 409, 413, 429, 500):
        app.register_error_handler(code, render_error)

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return render_template(
            "error.html", code=400,
            description="Your form expired or was sent from elsewhere (missing or bad CSRF "
            "token). Reload the page and try again.",
        ), 400


def register_template_helpers(app: Flask) -> None:
    from webapp import presentation

    app.jinja_env.filters.update(presentation.FILTERS)


def register_commands(app: Flask) -> None:
    from webapp import cli

    cli.register(app)
