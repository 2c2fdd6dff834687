"""Backups of the whole database to one file, and restores from it.

SQLite: the online backup API (a consistent copy while the app runs). PostgreSQL: `pg_dump`
in its custom format and `pg_restore`, given the connection through PG* environment
variables so the password never appears in a process list. A restore refuses a database
that already holds rows unless forced.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import func, inspect, select, table
from sqlalchemy.engine import Engine, make_url

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"
IGNORED_TABLES = {"alembic_version"}
PG_TIMEOUT_SECONDS = 3600


class BackupError(RuntimeError):
    """A backup or restore that cannot go ahead; the message says why and what to do."""


def rows_per_table(engine: Engine) -> dict[str, int]:
    """Row count of every table in the database (not only the ones the models know)."""
    with engine.connect() as connection:
        names = [n for n in inspect(connection).get_table_names() if n not in IGNORED_TABLES]
        return {name: connection.scalar(select(func.count()).select_from(table(name)))
                for name in names}


def backup(engine: Engine, path: Path) -> None:
    """Write a consistent copy of the database to `path` (replaced if it exists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if engine.dialect.name == "sqlite":
        temporary = path.with_name(path.name + ".partial")
        temporary.unlink(missing_ok=True)
        raw = engine.raw_connection()
        try:
            target = sqlite3.connect(temporary)
            try:
                raw.driver_connection.backup(target)
            finally:
                target.close()
        finally:
            raw.close()
        temporary.replace(path)
    elif engine.dialect.name == "postgresql":
        _run_pg(engine, ["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                         "--file", str(path)])
    else:
        raise BackupError(f"backups of {engine.dialect.name} databases are not supported")


def restore(engine: Engine, path: Path, force: bool = False) -> None:
    """Replace the database's contents with the backup at `path`.

    Refuses when the database holds any rows, unless `force`: a restore over live data is
    an operator's deliberate decision, never an accident.
    """
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"{path} is not a file")
    with path.open("rb") as handle:
        head = handle.read(16)
    occupied = {name: count for name, count in rows_per_table(engine).items() if count}
    if occupied and not force:
        sample = ", ".join(f"{name} ({count})" for name, count in sorted(occupied.items())[:4])
        raise BackupError(f"the database is not empty: {sample}... Restore into an empty "
                          "database, or pass --force to replace everything in it.")
    engine.dispose()  # no pooled connection of ours may hold locks the restore needs
    if engine.dialect.name == "sqlite":
        if head != SQLITE_MAGIC:
            raise BackupError(f"{path} is not an SQLite backup (was it made from PostgreSQL?)")
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        raw = engine.raw_connection()
        try:
            source.backup(raw.driver_connection)
        finally:
            raw.close()
            source.close()
    elif engine.dialect.name == "postgresql":
        if not head.startswith(PG_MAGIC):
            raise BackupError(f"{path} is not a pg_dump custom-format backup")
        _run_pg(engine, ["pg_restore", "--no-owner", "--no-privileges", "--clean", "--if-exists",
                         "--single-transaction", "--exit-on-error", str(path)], database_arg=True)
    else:
        raise BackupError(f"restores into {engine.dialect.name} databases are not supported")
    engine.dispose()


def _run_pg(engine: Engine, command: list[str], database_arg: bool = False) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} not found: install the PostgreSQL client tools "
                          "(Debian: apt-get install postgresql-client)")
    url = make_url(str(engine.url.render_as_string(hide_password=False)))
    env = dict(os.environ)
    env.update({key: str(value) for key, value in {
        "PGHOST": url.host, "PGPORT": url.port, "PGUSER": url.username,
        "PGPASSWORD": url.password, "PGDATABASE": url.database,
        "PGCONNECT_TIMEOUT": "10"}.items() if value})
    if database_arg:
        command = [*command[:-1], "--dbname", url.database or "", command[-1]]
    try:
        completed = subprocess.run(command, env=env, capture_output=True, text=True,
                                   timeout=PG_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise BackupError(f"{command[0]} did not finish within {PG_TIMEOUT_SECONDS} s") from None
    if completed.returncode != 0:
        raise BackupError(f"{command[0]} failed: {completed.stderr.strip()[-800:]}")
