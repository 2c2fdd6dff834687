"""Settings read from the environment once, validated at start-up."""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import timedelta
from pathlib import Path

DEFAULT_SECRET = "change-me"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Every environment variable Preflight reads (docs/deploy/ files are checked against it).
KNOWN_VARIABLES = frozenset({
    "PREFLIGHT_ENV", "PREFLIGHT_INSTANCE_PATH", "SECRET_KEY", "DATABASE_URL", "REDIS_URL",
    "ALLOW_SIGNUP", "SESSION_COOKIE_SECURE", "CHECKLISTS_DIR", "PROBE_ALLOW_NETWORKS",
    "PROBE_INTERVAL_MINUTES", "PROBE_DEADLINE_SECONDS", "PROBE_CONCURRENCY",
    "PROBE_RETENTION_DAYS", "LOG_FORMAT", "LOG_LEVEL", "RATELIMIT_ENABLED", "HUEY_IMMEDIATE",
    "REDIS_TIMEOUT_MS", "DB_CONNECT_TIMEOUT", "DB_STATEMENT_TIMEOUT_MS", "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW", "DB_POOL_TIMEOUT", "SHUTDOWN_DRAIN_SECONDS", "ATTENTION_ASSESSMENT_DAYS",
    "EVIDENCE_REATTEST_DAYS", "REMEMBER_COOKIE_DAYS", "TRUSTED_PROXIES",
    "FEATURE_FLAG_CACHE_SECONDS", "DB_BREAKER_FAILURES", "DB_BREAKER_COOLDOWN_SECONDS",
    # read by webapp/gunicorn_conf.py and webapp/serve.py
    "HOST", "PORT", "WEB_CONCURRENCY", "JOB_WORKERS", "GUNICORN_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT", "PROMETHEUS_MULTIPROC_DIR",
})


class ConfigError(RuntimeError):
    """Raised when a setting is missing or malformed; the message names the variable."""


def _bool(env: dict, name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _int(env: dict, name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _networks(env: dict, name: str) -> str:
    raw = env.get(name, "")
    for part in filter(None, (p.strip() for p in raw.split(","))):
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not a network like 10.0.0.0/8") from None
    return raw


def _dev_secret(instance_path: Path) -> str:
    """A random key kept in instance/ so sessions survive restarts in development."""
    path = instance_path / "secret_key"
    if path.exists():
        return path.read_text().strip()
    key = secrets.token_hex(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def load_settings(instance_path: Path, env: dict | None = None) -> dict:
    """Return Flask config keys built from environment variables, or raise ConfigError."""
    env = dict(os.environ if env is None else env)
    production = env.get("PREFLIGHT_ENV", "development").strip().lower() == "production"

    secret = env.get("SECRET_KEY", "").strip()
    if production and (not secret or secret == DEFAULT_SECRET or len(secret) < 16):
        raise ConfigError(
            "SECRET_KEY must be set to a long random value in production "
            "(for example: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    if not secret:
        secret = _dev_secret(instance_path)

    database_url = env.get("DATABASE_URL", "").strip()
    if not database_url:
        database_url = f"sqlite:///{instance_path / 'preflight.sqlite3'}"
    elif database_url.startswith("postgresql://"):
        # SQLAlchemy would pick psycopg2 for a bare postgresql:// URL; we ship psycopg 3.
        database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    if not database_url.startswith(("sqlite:", "postgresql+psycopg:")):
        raise ConfigError("DATABASE_URL must be a sqlite:/// or postgresql+psycopg:// URL")

    redis_url = env.get("REDIS_URL", "").strip() or None
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    problem = queue_problem(env)
    if problem and production:
        raise ConfigError(problem)

    log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
    log_format = env.get("LOG_FORMAT", "json" if production else "text").strip().lower()
    if log_format not in ("json", "text"):
        raise ConfigError(f"LOG_FORMAT must be json or text, not {log_format!r}")
    redis_timeout = _int(env, "REDIS_TIMEOUT_MS", 500, 50, 30_000) / 1000

    checklists_dir = env.get("CHECKLISTS_DIR", "").strip() or None
    if checklists_dir and not Path(checklists_dir).is_dir():
        raise ConfigError(f"CHECKLISTS_DIR {checklists_dir!r} is not a directory")

    signing = {name: env.get(name, "").strip() or None
               for name in ("REPORT_SIGNING_CERT", "REPORT_SIGNING_KEY")}
    if bool(signing["REPORT_SIGNING_CERT"]) != bool(signing["REPORT_SIGNING_KEY"]):
        raise ConfigError("set both REPORT_SIGNING_CERT and REPORT_SIGNING_KEY (PEM files), or neither")
    for name, value in signing.items():
        if value and not Path(value).is_file():
            raise ConfigError(f"{name} {value!r} is not a readable file")

    cookie_secure = _bool(env, "SESSION_COOKIE_SECURE", production)
    return {
        **signing,
        "PREFLIGHT_ENV": "production" if production else "development",
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "ALLOW_SIGNUP": _bool(env, "ALLOW_SIGNUP", False),
        "SESSION_COOKIE_SECURE": cookie_secure,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # "Remember me" gets the session cookie's flags and a shorter life than Flask-Login's
        # default year; signing out or changing the password ends it early (User.session_generation).
        "REMEMBER_COOKIE_SECURE": cookie_secure,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_DURATION": timedelta(days=_int(env, "REMEMBER_COOKIE_DAYS", 14, 1, 365)),
        # How many reverse proxies in front of the app set X-Forwarded-For/-Proto/-Host; 0 (the
        # default) trusts none of those headers. Rate limits key on the address this yields.
        "TRUSTED_PROXIES": _int(env, "TRUSTED_PROXIES", 0, 0, 10),
        "CHECKLISTS_DIR": checklists_dir,
        "PROBE_ALLOW_NETWORKS": _networks(env, "PROBE_ALLOW_NETWORKS"),
        "PROBE_INTERVAL_MINUTES": _int(env, "PROBE_INTERVAL_MINUTES", 15, 1, 24 * 60),
        "PROBE_DEADLINE_SECONDS": _int(env, "PROBE_DEADLINE_SECONDS", 10, 1, 60),
        "PROBE_CONCURRENCY": _int(env, "PROBE_CONCURRENCY", 500, 1, 5000),  # see docs/operations.md
        "PROBE_RETENTION_DAYS": _int(env, "PROBE_RETENTION_DAYS", 30, 1, 3650),
        "ATTENTION_ASSESSMENT_DAYS": _int(env, "ATTENTION_ASSESSMENT_DAYS", 90, 1, 3650),
        "EVIDENCE_REATTEST_DAYS": _int(env, "EVIDENCE_REATTEST_DAYS", 180, 1, 3650),
        "LOG_FORMAT": log_format,
        "LOG_LEVEL": log_level,
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        # Redis down or hanging must not lock people out: the limiter gives up on Redis
        # after the socket timeout, logs it, and counts in memory until Redis is back.
        "RATELIMIT_STORAGE_OPTIONS": {"socket_timeout": redis_timeout,
                                      "socket_connect_timeout": redis_timeout},
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
        "REDIS_TIMEOUT_SECONDS": redis_timeout,
        "DB_CONNECT_TIMEOUT": _int(env, "DB_CONNECT_TIMEOUT", 3, 2, 60),
        "DB_STATEMENT_TIMEOUT_MS": _int(env, "DB_STATEMENT_TIMEOUT_MS", 5000, 100, 600_000),
        "DB_POOL_SIZE": _int(env, "DB_POOL_SIZE", 5, 1, 100),
        "DB_MAX_OVERFLOW": _int(env, "DB_MAX_OVERFLOW", 5, 0, 100),
        "DB_POOL_TIMEOUT": _int(env, "DB_POOL_TIMEOUT", 5, 1, 60),
        # The database circuit breaker (webapp/db_breaker.py): this many database failures
        # within 30 s open it; it then answers 503 at once for the cool-down, then lets one
        # request probe the database.
        "DB_BREAKER_FAILURES": _int(env, "DB_BREAKER_FAILURES", 5, 1, 1000),
        "DB_BREAKER_COOLDOWN_SECONDS": _int(env, "DB_BREAKER_COOLDOWN_SECONDS", 10, 1, 600),
        # How long each process trusts the feature flags it read (webapp/flags.py).
        "FEATURE_FLAG_CACHE_SECONDS": _int(env, "FEATURE_FLAG_CACHE_SECONDS", 5, 0, 300),
        "SHUTDOWN_DRAIN_SECONDS": _int(env, "SHUTDOWN_DRAIN_SECONDS", 10 if production else 0, 0, 300),
        "RATELIMIT_ENABLED": _bool(env, "RATELIMIT_ENABLED", True),
        "HUEY_IMMEDIATE": _bool(env, "HUEY_IMMEDIATE", False),
        "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    }


def queue_problem(env: dict) -> str | None:
    """PostgreSQL without Redis would keep the job queue in a local SQLite file, so a second
    host would have its own queue and jobs on a lost disk would vanish."""
    database_url = env.get("DATABASE_URL", "").strip()
    if database_url.startswith("postgresql") and not env.get("REDIS_URL", "").strip():
        return ("DATABASE_URL is PostgreSQL but REDIS_URL is not set: the job queue would live "
                "in a local SQLite file, which other hosts cannot see. Set REDIS_URL.")
    return None


def engine_options(database_url: str, config: dict) -> dict:
    """SQLAlchemy engine options: bounded waits everywhere, so a database that hangs or cuts
    connections costs a request seconds, not a worker."""
    if database_url.startswith("sqlite"):
        return {"pool_pre_ping": True}
    statement_ms = config["DB_STATEMENT_TIMEOUT_MS"]
    return {
        "pool_pre_ping": True,  # a connection cut while pooled is replaced, not handed out
        "pool_size": config["DB_POOL_SIZE"],
        "max_overflow": config["DB_MAX_OVERFLOW"],
        "pool_timeout": config["DB_POOL_TIMEOUT"],
        "pool_recycle": 1800,
        "connect_args": {
            "connect_timeout": config["DB_CONNECT_TIMEOUT"],
            "options": f"-c statement_timeout={statement_ms} -c lock_timeout={statement_ms} "
                       f"-c idle_in_transaction_session_timeout={statement_ms * 12}",
            "application_name": "preflight",
            # Dead peers (a host gone, a cable pulled) are noticed in ~1 minute, not hours.
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
        },
    }
