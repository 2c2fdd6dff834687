"""Logging: one JSON object per line on stdout in production, with the request id (or job
id) and the user id on every line, and secrets scrubbed before anything is written.

Used by the app (create_app), gunicorn (webapp/gunicorn_conf.py, for its access and error
logs) and the job worker (huey signals set the job id as the line's request id).
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys

# Outside a request (jobs, CLI), who and what a line belongs to.
job_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("job_context", default=None)

# Values that must never reach a log line, whatever the message: key=value pairs whose key
# names a secret, bearer tokens, and Flask session cookies.
SECRET_PATTERNS = [
    re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key|authorization|cookie|session"
               r"|csrf_token)(\"?\s*[=:]\s*\"?)([^\s\"&,;]+)"),
    re.compile(r"(?i)\b(bearer\s+)([A-Za-z0-9._~+/=-]+)"),
    re.compile(r"\b(\.?eJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)"),  # itsdangerous cookie
    re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@/\s]+)(@)"),  # password in a URL
]
_secret_values: set[str] = set()


def add_secret(value: str | None) -> None:
    """Register a value (SECRET_KEY, a signing key password) to be blanked wherever it appears."""
    if value and len(value) >= 8:
        _secret_values.add(value)


def scrub(text: str) -> str:
    for value in _secret_values:
        text = text.replace(value, "[redacted]")
    text = SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}[redacted]", text)
    text = SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
    text = SECRET_PATTERNS[2].sub("[redacted]", text)
    return SECRET_PATTERNS[3].sub(lambda m: f"{m.group(1)}[redacted]{m.group(3)}", text)


class ContextFilter(logging.Filter):
    """Adds request_id and user_id to every record, and scrubs secrets from its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id, user_id = _request_ids()
        if not getattr(record, "request_id", None):
            record.request_id = request_id
        if not getattr(record, "user_id", None):
            record.user_id = user_id
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the line
            message = str(record.msg)
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


def _request_ids() -> tuple[str | None, str | None]:
    from flask import g, has_request_context

    if has_request_context():
        return g.get("request_id"), current_user_id()
    job = job_context.get()
    if job:
        return job.get("request_id"), job.get("user_id")
    return None, None


def current_user_id() -> str | None:
    """The signed-in user's id without a database query: the loaded user if Flask-Login
    already loaded it, else the id its session cookie carries."""
    from flask import g, session

    user = g.get("_login_user")
    if user is not None:
        return str(user.get_id()) if getattr(user, "is_authenticated", False) else None
    try:
        user_id = session.get("_user_id")
    except Exception:  # noqa: BLE001 - a broken cookie must not break logging
        return None
    return str(user_id) if user_id else None


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is now (pytest swaps it per test)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def make_formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(user_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(user_id)s]: %(message)s")


def make_handler(fmt: str) -> logging.Handler:
    handler = StdoutHandler()
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(ContextFilter())
    handler._preflight = True  # type: ignore[attr-defined]  # ours, replaced on reconfigure
    return handler


def configure(fmt: str, level: str) -> None:
    """Send every logger's records (ours, Flask-Limiter's, Huey's, SQLAlchemy's warnings) to
    one stdout handler. Handlers others added (pytest's capture) are left alone."""
    root = logging.getLogger()
    # Drop ours from before and a plain one from logging.basicConfig (the probe worker calls it
    # before the app exists), which would print every line a second time; keep pytest's.
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "_preflight", False)
                        and type(h) is not logging.StreamHandler]
    root.addHandler(make_handler(fmt))
    root.setLevel(level)
    for name in ("webapp", "huey", "flask-limiter"):
        logger = logging.getLogger(name)
        # Drop ours from before and huey_consumer's own plain handler; keep pytest's.
        logger.handlers[:] = [h for h in logger.handlers if not getattr(h, "_preflight", False)
                              and type(h) is not logging.StreamHandler]
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # Alembic lists the seven plugins it loads, at INFO, in every process that imports it
    # (each web worker, every `flask` command): noise before anything the operator wants.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def instrument_queue(huey) -> None:
    """Job log lines carry the job's id as their request id (and the requester's, if known)."""
    import os

    from huey import signals

    @huey.on_startup()
    def _json_logs_in_worker() -> None:
        production = os.environ.get("PREFLIGHT_ENV", "").strip().lower() == "production"
        configure(os.environ.get("LOG_FORMAT", "json" if production else "text").strip().lower(),
                  os.environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO")

    @huey.signal(signals.SIGNAL_EXECUTING)
    def _job_started(signal, task, *args, **kwargs) -> None:
        job_context.set({"request_id": f"job-{task.id}", "user_id": None})

    @huey.signal(signals.SIGNAL_COMPLETE, signals.SIGNAL_ERROR, signals.SIGNAL_CANCELED,
                 signals.SIGNAL_EXPIRED, signals.SIGNAL_LOCKED, signals.SIGNAL_INTERRUPTED)
    def _job_done(signal, task, *args, **kwargs) -> None:
        job_context.set(None)
