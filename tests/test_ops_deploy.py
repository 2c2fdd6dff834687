"""The deployment files in docs/deploy/ are checked here, since no container engine runs on
this machine: the image runs as a non-root user, its health check hits a real route, it stops
on SIGTERM, it sets only variables the app knows and bakes in no secret; compose wires
PostgreSQL, Redis, web and worker; the alert rules pass promtool; every runtime dependency
is pinned."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from webapp.config import KNOWN_VARIABLES

DEPLOY = Path(__file__).resolve().parents[1] / "docs" / "deploy"
ENVIRONMENT_OF_TOOLS = re.compile(r"^(PYTHON\w*|PIP_\w+|FLASK_APP)$")  # Python's and pip's own
SECRET_NAMES = re.compile(r"(SECRET|PASSWORD|TOKEN|KEY)", re.I)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (DEPLOY / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def env_pairs(argument: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(argument))


def test_dockerfile_runs_as_non_root_and_stops_on_sigterm():
    instructions = dockerfile_instructions()
    users = [arg for op, arg in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user_at = max(i for i, (op, _) in enumerate(instructions) if op == "USER")
    assert not any(op in ("RUN", "COPY") for op, _ in instructions[last_user_at:]), \
        "nothing is installed or copied after dropping root"
    assert [arg for op, arg in instructions if op == "STOPSIGNAL"] == ["SIGTERM"]
    cmd = next(arg for op, arg in reversed(instructions) if op == "CMD")
    assert "python:webapp.gunicorn_conf" in cmd and "webapp.wsgi:app" in cmd


def test_dockerfile_healthcheck_hits_a_real_route(app):
    check = next(arg for op, arg in dockerfile_instructions() if op == "HEALTHCHECK")
    path = re.search(r"http://127\.0\.0\.1:8000(/[\w/]*)", check).group(1)
    assert path in {rule.rule for rule in app.url_map.iter_rules()}
    assert app.test_client().get(path).status_code == 200


def test_dockerfile_sets_only_known_variables_and_no_secrets():
    variables = {}
    for op, arg in dockerfile_instructions():
        if op == "ENV":
            variables.update(env_pairs(arg))
        assert not (op == "ARG" and SECRET_NAMES.search(arg)), f"a secret as a build arg: {arg}"
    unknown = {name for name in variables if name not in KNOWN_VARIABLES
               and not ENVIRONMENT_OF_TOOLS.match(name)}
    assert not unknown
    assert not [name for name in variables if SECRET_NAMES.search(name)]
    assert variables["PREFLIGHT_ENV"] == "production"


def test_dockerfile_copies_only_what_exists():
    repo = DEPLOY.parents[1]
    for op, arg in dockerfile_instructions():
        if op == "COPY":
            for source in shlex.split(arg)[:-1]:
                assert (repo / source).exists(), f"COPY {source}: no such path in the repository"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_has_database_queue_web_and_worker():
    services = compose()["services"]
    assert {"postgres", "redis", "web", "worker", "migrate"} <= set(services)
    assert services["web"]["stop_signal"] == "SIGTERM"
    assert services["worker"]["stop_signal"] == "SIGINT"  # Huey's graceful stop
    assert "huey_consumer" in services["worker"]["command"]
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["REDIS_URL"].startswith("redis://")


def test_compose_app_variables_are_known_and_secrets_come_from_outside():
    services = compose()["services"]
    for name in ("web", "worker", "migrate"):
        env = services[name]["environment"]
        assert not set(env) - KNOWN_VARIABLES, f"{name}: {set(env) - KNOWN_VARIABLES}"
        assert re.fullmatch(r"\$\{SECRET_KEY:\?[^}]*\}", env["SECRET_KEY"])
        assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_alert_rules_pass_promtool_and_point_at_the_runbook():
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    runbook = (DEPLOY.parent / "runbook.md").read_text().lower()
    for alert in alerts:
        anchor = alert["annotations"]["runbook"].split("#")[1]
        assert f"### {alert['alert'].lower()}" in runbook, f"{alert['alert']} not explained in the runbook"
        assert anchor == alert["alert"].lower()
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus); CI runs it")
    for command in (["check", "rules", "prometheus-alerts.yml"],
                    ["test", "rules", "prometheus-alerts.test.yml"]):
        result = subprocess.run(["promtool", *command], cwd=DEPLOY, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_runtime_dependency_is_pinned():
    project = tomllib.loads((DEPLOY.parents[1] / "pyproject.toml").read_text())["project"]
    pinned = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pinned[re.sub(r"[-_.]+", "-", name).lower()] = version
    for requirement in project["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0]).lower()
        assert name in pinned, f"{name} is a dependency but not pinned: run `make constraints`"


def test_known_variables_cover_every_setting_config_reads():
    import webapp.config

    source = Path(webapp.config.__file__).read_text()
    read = set(re.findall(r'(?:env\.get\(|_(?:int|bool|networks)\(env, )"([A-Z][A-Z_]+)"', source))
    assert len(read) > 20 and read <= KNOWN_VARIABLES, read - KNOWN_VARIABLES
