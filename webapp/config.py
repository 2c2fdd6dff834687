"""Settings read from the environment once, validated at start-up."""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

DEFAULT_SECRET = "change-me"
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}


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

    return {
        **signing,
        "PREFLIGHT_ENV": "production" if production else "development",
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "ALLOW_SIGNUP": _bool(env, "ALLOW_SIGNUP", False),
        "SESSION_COOKIE_SECURE": _bool(env, "SESSION_COOKIE_SECURE", production),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "CHECKLISTS_DIR": checklists_dir,
        "PROBE_ALLOW_NETWORKS": _networks(env, "PROBE_ALLOW_NETWORKS"),
        "PROBE_INTERVAL_MINUTES": _int(env, "PROBE_INTERVAL_MINUTES", 15, 1, 24 * 60),
        "PROBE_DEADLINE_SECONDS": _int(env, "PROBE_DEADLINE_SECONDS", 10, 1, 60),
        "PROBE_CONCURRENCY": _int(env, "PROBE_CONCURRENCY", 100, 1, 1000),
        "PROBE_RETENTION_DAYS": _int(env, "PROBE_RETENTION_DAYS", 30, 1, 3650),
        "ATTENTION_ASSESSMENT_DAYS": _int(env, "ATTENTION_ASSESSMENT_DAYS", 90, 1, 3650),
        "EVIDENCE_REATTEST_DAYS": _int(env, "EVIDENCE_REATTEST_DAYS", 180, 1, 3650),
        "LOG_FORMAT": env.get("LOG_FORMAT", "json" if production else "text"),
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        "RATELIMIT_ENABLED": _bool(env, "RATELIMIT_ENABLED", True),
        "HUEY_IMMEDIATE": _bool(env, "HUEY_IMMEDIATE", False),
        "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
    }
