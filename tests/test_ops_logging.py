"""Logging and settings for operations: job lines carry the job id, secrets are scrubbed,
the queue is never a local file in production, and database waits are bounded."""

from __future__ import annotations

import logging

import pytest

from tests.factories import ServiceFactory
from webapp import logs
from webapp.config import ConfigError, engine_options, load_settings
from webapp.extensions import db, make_huey


def test_job_log_lines_carry_the_job_id(app, capsys):
    from webapp.probes import runs
    from webapp.probes.tasks import complete_run_task

    service = ServiceFactory(base_url="http://127.0.0.1:9/", health_url="http://127.0.0.1:9/healthz")
    run = runs.start_run(service, "manual")
    db.session.commit()
    complete_run_task(run.id)  # immediate mode: executed through Huey, signals and all
    lines = [line for line in capsys.readouterr().out.splitlines() if "webapp.probes" in line]
    probe_lines = [line for line in lines if "probe health http://127.0.0.1:9/healthz" in line]
    assert probe_lines and all("[job-" in line for line in probe_lines)
    assert " ms" in probe_lines[0]


@pytest.mark.parametrize("planted", [
    "password=hunter2-planted", "Authorization: Bearer tok-planted-123",
    "https://user:pw-planted@example.test/x", "session=.eJyplantedplanted.aa.bb",
])
def test_secrets_are_scrubbed_from_any_line(planted):
    secret = planted.split("=")[-1].split(" ")[-1].split(":")[-1].split("@")[0]
    assert secret not in logs.scrub(f"something happened: {planted}")


def test_secret_key_is_blanked_wherever_it_appears(capsys):
    logs.add_secret("a-secret-key-value-for-the-test")
    logging.getLogger("webapp.test").warning("oops a-secret-key-value-for-the-test leaked")
    out = capsys.readouterr().out
    assert "a-secret-key-value-for-the-test" not in out and "[redacted]" in out


def test_production_refuses_postgres_without_redis(tmp_path):
    env = {"PREFLIGHT_ENV": "production", "SECRET_KEY": "k" * 40,
           "DATABASE_URL": "postgresql://postgres@127.0.0.1/x"}
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        load_settings(tmp_path, env)
    with pytest.raises(SystemExit, match="REDIS_URL is not set"):
        make_huey({**env, "PREFLIGHT_INSTANCE_PATH": str(tmp_path)})
    assert load_settings(tmp_path, {**env, "REDIS_URL": "redis://127.0.0.1:6379/0"})["REDIS_URL"]


def test_development_warns_about_postgres_without_redis(tmp_path, caplog):
    queue = make_huey({"DATABASE_URL": "postgresql://postgres@127.0.0.1/x",
                       "PREFLIGHT_INSTANCE_PATH": str(tmp_path)})
    assert type(queue).__name__ == "SqliteHuey"
    assert any("REDIS_URL is not set" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_postgres_engine_options_bound_every_wait(tmp_path):
    settings = load_settings(tmp_path, {"DATABASE_URL": "postgresql://postgres@127.0.0.1/x",
                                        "DB_STATEMENT_TIMEOUT_MS": "4000"})
    options = engine_options(settings["SQLALCHEMY_DATABASE_URI"], settings)
    assert options["pool_pre_ping"] is True
    assert options["pool_size"] == 5 and options["max_overflow"] == 5 and options["pool_timeout"] == 5
    assert options["connect_args"]["connect_timeout"] == 3
    assert "statement_timeout=4000" in options["connect_args"]["options"]
    assert engine_options("sqlite:///x", settings) == {"pool_pre_ping": True}


@pytest.mark.parametrize("env, message", [
    ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL must be one of"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be json or text"),
    ({"DB_STATEMENT_TIMEOUT_MS": "0"}, "DB_STATEMENT_TIMEOUT_MS must be between"),
])
def test_bad_ops_settings_are_refused(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, env)


def test_alembic_plugin_chatter_stays_out_of_the_log(app, capsys):
    # The app is configured; alembic's INFO lines about loading its plugins are dropped.
    logging.getLogger("alembic.runtime.plugins").info("setup plugin alembic.autogenerate.schemas")
    logging.getLogger("alembic.runtime.migration").warning("a real warning still shows")
    out = capsys.readouterr().out
    assert "setup plugin" not in out and "a real warning still shows" in out


def test_a_basic_config_handler_on_the_root_does_not_print_every_line_twice():
    root = logging.getLogger()
    before = list(root.handlers)
    plain = logging.StreamHandler()  # what logging.basicConfig adds (the probe worker calls it)
    root.addHandler(plain)
    try:
        logs.configure("text", "INFO")
        assert plain not in root.handlers
        assert sum(getattr(h, "_preflight", False) for h in root.handlers) == 1
    finally:
        root.handlers[:] = before
