"""Preflight: production readiness reviews. `create_app()` builds the Flask app."""

from __future__ import annotations

import io
import logging
import os
import sys
import uuid
from pathlib import Path

from flask import Flask, abort, flash, g, jsonify, make_response, redirect, render_template, request
from markupsafe import escape
from sqlalchemy import event
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from webapp.config import ConfigError, engine_options, load_settings

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
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS",
                          engine_options(app.config["SQLALCHEMY_DATABASE_URI"], app.config))

    configure_logging(app)
    limit_streamed_bodies(app)
    trust_proxies(app)
    register_extensions(app)
    register_request_hooks(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_template_helpers(app)
    register_commands(app)
    return app


def configure_logging(app: Flask) -> None:
    """JSON lines (production) or text on stdout; request id and user id on every line;
    sign-ins, refused sign-ins and refused pages logged; secrets never."""
    from flask_login import user_logged_in, user_logged_out, user_unauthorized

    from webapp import logs

    logs.add_secret(app.config.get("SECRET_KEY"))
    logs.configure(app.config.get("LOG_FORMAT", "text"), app.config.get("LOG_LEVEL", "INFO"))
    log = logging.getLogger("webapp.auth")

    def signed_in(sender, user, **extra) -> None:
        log.info("sign-in succeeded", extra={"user_id": str(user.id), "event": "auth.login"})

    def signed_out(sender, user, **extra) -> None:
        log.info("signed out", extra={"event": "auth.logout"})

    def unauthorized(sender, **extra) -> None:
        log.info("sign-in required for %s %s", request.method, request.path,
                 extra={"event": "auth.required"})

    user_logged_in.connect(signed_in, app, weak=False)
    user_logged_out.connect(signed_out, app, weak=False)
    user_unauthorized.connect(unauthorized, app, weak=False)

    @app.after_request
    def log_refused_sign_in(response):
        if (request.method == "POST" and request.endpoint in ("auth.login", "auth.signup")
                and response.status_code in (400, 429)):
            # Never the email or password: the address and the outcome are enough.
            log.warning("%s refused (%s) from %s", request.endpoint, response.status_code,
                        request.remote_addr, extra={"event": f"{request.endpoint}.failed"})
        # For gunicorn's access log line (webapp/gunicorn_conf.py), without a query.
        request.environ["preflight.user_id"] = logs.current_user_id()
        return response


def trust_proxies(app: Flask) -> None:
    """Behind TRUSTED_PROXIES reverse proxies, take the client's address, scheme and host from
    the X-Forwarded-* headers they set (only the last N hops: a client can forge the rest),
    so rate limits key on the real client, not on the proxy every request comes through."""
    hops = app.config.get("TRUSTED_PROXIES", 0)
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)


BODY_TOO_LARGE = "preflight.body_too_large"


def limit_streamed_bodies(app: Flask) -> None:
    """Read a body sent without Content-Length (chunked) before Flask sees it, up to
    MAX_CONTENT_LENGTH: one over the limit is then answered 413 (by a request hook, with the
    usual error page) like any other large body. Left to Werkzeug, it is silently cut at the
    limit and fails later as a broken form (400)."""
    wsgi_app, limit = app.wsgi_app, app.config["MAX_CONTENT_LENGTH"]

    def middleware(environ, start_response):
        if (not environ.get("CONTENT_LENGTH")
                and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()):
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                environ[BODY_TOO_LARGE], body = True, b""
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        return wsgi_app(environ, start_response)

    app.wsgi_app = middleware


SESSION_EXPIRED = ("Your session expired: sign in again, then save once more. "
                   "What you typed is still on the page.")


def session_expired_response(status: int):
    """For htmx requests: no swap (the person's text stays in the page), a short message, and a
    header static/js/session.js recognises to offer signing in again."""
    response = make_response(
        f'<div class="flash flash-error" role="alert">{escape(SESSION_EXPIRED)}</div>', status)
    response.headers["HX-Reswap"] = "none"
    response.headers["X-Preflight-Session"] = "expired"
    return response


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    """SQLite: WAL so readers don't block the writer, a busy timeout, foreign keys on, and a
    page cache (32 MB, default 2 MB) that holds the services and assessments the dashboard
    reads on every request: with 1,000 services the default re-read them from the OS."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-32000")  # KiB; pages are allocated only as they are read
        cursor.close()


def register_extensions(app: Flask) -> None:
    from webapp.extensions import csrf, db, huey, limiter, login_manager, migrate
    from webapp.models import User

    db.init_app(app)
    from webapp.views.ops import count_pool_use

    with app.app_context():
        count_pool_use(db.engine)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        from webapp import db_deadlines

        with app.app_context():
            db_deadlines.watch(db.engine, app.config["DB_STATEMENT_TIMEOUT_MS"] / 1000 + 2)
    migrate.init_app(app, db, directory=str(REPO_ROOT / "migrations"), render_as_batch=True)
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    login_manager.login_message = "Sign in to see this page."  # the app says "sign in" everywhere
    if app.config.get("HUEY_IMMEDIATE"):
        huey.immediate = True  # tests: run jobs inline (the queue is process-global)

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        # "id:generation" (User.get_id): a cookie from before the last sign-out or password
        # change carries an old generation and no longer signs anyone in.
        ident, _, generation = user_id.partition(":")
        if not (ident.isdigit() and generation.isdigit()):
            return None
        user = db.session.get(User, int(ident))
        return user if user is not None and user.session_generation == int(generation) else None

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.headers.get("HX-Request"):
            return session_expired_response(401)
        from flask_login import login_url

        flash(login_manager.login_message, login_manager.login_message_category)
        return redirect(login_url(login_manager.login_view, request.url))


def register_request_hooks(app: Flask) -> None:
    @app.before_request
    def refuse_nul_bytes() -> None:
        """A NUL byte is never meaningful text, and PostgreSQL refuses it in every text column
        (a 500 deep inside a view): refuse it up front, wherever in the request it is. The
        JSON API checks its own input (its body cap first, then a 422 naming each field)."""
        if request.path.startswith("/api/"):
            return
        if (_has_nul(request.path) or _has_nul(request.args.to_dict(flat=False))
                or _has_nul(request.form.to_dict(flat=False))
                or (request.is_json and _has_nul(request.get_json(silent=True)))):
            abort(400, description="The request contains a NUL character (\\x00), which "
                                   "Preflight does not accept in any text. Remove it and try again.")

    def refuse_large_streamed_body() -> None:
        if request.environ.get(BODY_TOO_LARGE):
            abort(413)

    # First of all hooks: CSRF protection and the rate limiter read the form before ours run.
    app.before_request_funcs.setdefault(None, []).insert(0, refuse_large_streamed_body)

    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        # Accept a caller's id only if it is short and plain, so it is safe in logs.
        ok = 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum()
        g.request_id = incoming if ok else uuid.uuid4().hex

    @app.before_request
    def database_breaker() -> None:
        """Fail fast while the database circuit breaker is open (webapp/db_breaker.py)."""
        from webapp import db_breaker

        if request.endpoint in db_breaker.BYPASS:
            return
        breaker = db_breaker.of(app)
        verdict = breaker.admit()
        if verdict == db_breaker.GO:
            return
        if verdict == db_breaker.PROBE:
            from webapp.views.ops import check_database

            if check_database()["status"] == "pass":
                breaker.success()
                return
            breaker.failure()
        raise db_breaker.BreakerOpen()

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


class RowIdConverter(IntegerConverter):
    """`<int:…>` in every route: ids are integer columns, so a larger number is a page that
    does not exist (404), never a query the database refuses (SQLite: OverflowError past
    2**63; PostgreSQL: "integer out of range" past 2**31)."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, *args, **kwargs)


def register_blueprints(app: Flask) -> None:
    app.url_map.converters["int"] = RowIdConverter  # before any rule is added
    from webapp.views import (
        assessments,
        attention,
        auth,
        checklists,
        flags,
        main,
        ops,
        owners,
        probes,
        reports,
        reviews,
        runbooks,
        services,
        teams,
        tokens,
    )

    for module in (main, attention, auth, teams, services, owners, runbooks, checklists, assessments,
                   probes, ops, reviews, reports, tokens, flags):
        app.register_blueprint(module.bp)

    from webapp.api import views as api

    api.register(app)


# Said instead of werkzeug's stock texts ("If you entered the URL manually please check your
# spelling…"), which speak of servers and URLs rather than of what the person was after.
PLAIN_DESCRIPTIONS = {
    404: "There is nothing at this address: the link may be mistyped or out of date, or what it "
         "pointed to was removed.",
    405: "This address cannot be used that way: go back to the page and use its buttons.",
}


def register_errorhandlers(app: Flask) -> None:
    """Every error is a page in the app's layout (or an htmx fragment), never a traceback."""
    from flask_login import AnonymousUserMixin
    from flask_wtf.csrf import CSRFError
    from sqlalchemy.exc import InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from webapp import db_breaker
    from webapp.extensions import db

    log = logging.getLogger("webapp.errors")

    def respond(code: int, description: str):
        if request.headers.get("HX-Request"):
            return f'<div class="flash flash-error" role="alert">{code}: {escape(description)}</div>', code
        return render_template("error.html", code=code, description=description), code

    def render_error(error):
        code = getattr(error, "code", 500) or 500
        if code >= 500:
            db.session.rollback()
        if code == 403:
            logging.getLogger("webapp.auth").warning(
                "permission refused: %s %s", request.method, request.path,
                extra={"event": "authz.denied"})
        if request.path.startswith("/api/"):  # the JSON API answers in problem+json
            from webapp.api.views import problem_for_path

            return problem_for_path(error)
        description = getattr(error, "description", "Something went wrong on our side.")
        if description == getattr(type(error), "description", None):  # werkzeug's stock text
            description = PLAIN_DESCRIPTIONS.get(code, description)
        return respond(code, description)

    for code in (400, 403, 404, 405, 409, 413, 429, 500, 503):
        app.register_error_handler(code, render_error)

    def database_unavailable_response(retry_after: int | None = None):
        if g.get("_login_user") is None:
            g._login_user = AnonymousUserMixin()  # the layout must not query the database again
        message = ("The database is not answering right now, so nothing was loaded or saved. "
                   "Try again in a minute; operators have been alerted.")
        if request.path.startswith("/api/"):
            from webapp.api.problems import problem_response

            response = problem_response(503, message, kind="database-unavailable")
        else:
            response = make_response(respond(503, message))
        if retry_after:
            response.headers["Retry-After"] = str(retry_after)
        return response

    # Only "cannot talk to the database" errors: an IntegrityError is a bug, a 500.
    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeout)
    def database_unavailable(error):
        log.error("database unavailable: %s", type(getattr(error, "orig", None) or error).__name__)
        db_breaker.of(app).failure()
        try:
            db.session.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone; the session is reset below
            pass
        db.session.remove()
        return database_unavailable_response()

    @app.errorhandler(db_breaker.BreakerOpen)
    def breaker_open(error):
        """Fast: nothing here touches the database."""
        retry_after = db_breaker.of(app).retry_after()
        if request.endpoint == "ops.ready":
            return jsonify(status="fail", checks={"database": {"status": "fail", "breaker": "open",
                                                               "retry_after": retry_after}}), 503
        return database_unavailable_response(retry_after)

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        if request.headers.get("HX-Request"):
            return session_expired_response(400)
        return render_template(
            "error.html", code=400,
            description="Your form expired or was sent from elsewhere (missing or bad CSRF "
            "token). Reload the page and try again.",
        ), 400


def register_template_helpers(app: Flask) -> None:
    from webapp import presentation

    app.jinja_env.filters.update(presentation.FILTERS)

    from webapp.queue_health import jobs_delayed

    app.jinja_env.globals["jobs_delayed"] = jobs_delayed


def register_commands(app: Flask) -> None:
    from webapp import cli

    cli.register(app)
