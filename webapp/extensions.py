"""Unbound extension objects; create_app() binds them to the app."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names so Alembic migrations can drop and alter them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])


def make_huey(env: dict | None = None):
    """Huey on Redis when REDIS_URL is set, else on SQLite beside the app's database.

    Built from the environment (not the Flask config) because the consumer process
    imports it before any app exists. PostgreSQL without Redis is refused in production
    (the queue would sit on one host's disk) and warned about in development.
    """
    import logging
    import os
    from pathlib import Path

    from huey import RedisHuey, SqliteHuey

    from webapp.config import queue_problem
    from webapp.logs import instrument_queue

    env = os.environ if env is None else env
    problem = queue_problem(env)
    if problem and env.get("PREFLIGHT_ENV", "").strip().lower() == "production":
        raise SystemExit(f"preflight: configuration error: {problem}")
    if problem:
        logging.getLogger("webapp.queue").warning("%s (tolerated in development)", problem)
    redis_url = env.get("REDIS_URL", "").strip()
    if redis_url:
        # Every Redis call is bounded: a hanging Redis delays jobs, never a web request.
        timeout = int(env.get("REDIS_TIMEOUT_MS", "") or 500) / 1000
        # Not blocking: a BRPOP would outlast the socket timeout; the consumer polls instead.
        from redis import ConnectionPool

        pool = ConnectionPool.from_url(redis_url, socket_timeout=timeout,
                                       socket_connect_timeout=timeout, health_check_interval=30)
        queue = RedisHuey("preflight", connection_pool=pool, blocking=False)
    else:
        instance = Path(env.get("PREFLIGHT_INSTANCE_PATH") or Path(__file__).resolve().parents[1] / "instance")
        instance.mkdir(parents=True, exist_ok=True)
        queue = SqliteHuey("preflight", filename=str(instance / "huey.sqlite3"))
    instrument_queue(queue)
    return queue


huey = make_huey()
