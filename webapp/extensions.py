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
    imports it before any app exists.
    """
    import os
    from pathlib import Path

    from huey import RedisHuey, SqliteHuey

    env = os.environ if env is None else env
    redis_url = env.get("REDIS_URL", "").strip()
    if redis_url:
        return RedisHuey("preflight", url=redis_url)
    instance = Path(env.get("PREFLIGHT_INSTANCE_PATH") or Path(__file__).resolve().parents[1] / "instance")
    instance.mkdir(parents=True, exist_ok=True)
    return SqliteHuey("preflight", filename=str(instance / "huey.sqlite3"))


huey = make_huey()
