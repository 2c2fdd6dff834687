"""Preflight under real gunicorn with webapp/gunicorn_conf.py: one /metrics for every worker,
a SIGTERM that drains (readiness 503 at once, every accepted request answered), and JSON log
lines with request and user ids that never contain a secret."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import threading
import time
import urllib.request
from http.cookiejar import CookieJar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ops_support import gunicorn

pytestmark = pytest.mark.slow


@pytest.fixture
def server_env(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    return {"PREFLIGHT_INSTANCE_PATH": str(instance),
            "DATABASE_URL": f"sqlite:///{instance / 'preflight.sqlite3'}",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), "REDIS_URL": "",
            "PREFLIGHT_ENV": "development", "LOG_FORMAT": "json", "SHUTDOWN_DRAIN_SECONDS": "0"}


def _migrate(env: dict) -> None:
    import subprocess
    import sys
    from pathlib import Path

    flask = Path(sys.executable).parent / "flask"
    r = subprocess.run([str(flask), "--app", "webapp", "db", "upgrade"], env={**os.environ, **env},
                   check=False, capture_output=True)
    assert r.returncode == 0, r.stderr.decode()[-3000:]


def _requests_counted(port: int, endpoint: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "preflight_http_requests_total" and sample.labels["endpoint"] == endpoint:
                total += sample.value
    return total


SLOW_APP = '''
import time
from webapp.wsgi import app as preflight

def app(environ, start_response):
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(0.4)
        environ["PATH_INFO"] = "/healthz"
    return preflight(environ, start_response)
'''


def _booted_workers(log_path) -> int:
    return log_path.read_text().count("Booting worker")


def test_metrics_count_every_request_across_two_workers(server_env, tmp_path):
    (tmp_path / "slow_wsgi.py").write_text(SLOW_APP)
    sent = 60
    env = {**server_env, "WEB_CONCURRENCY": "2"}
    # Up once /metrics answers, so that only this test's requests reach /healthz: a start-up
    # probe that timed out on a busy machine could still be served, and counted, later.
    with gunicorn(env, app="slow_wsgi:app", cwd=tmp_path, ready_path="/metrics") as (_, port, log_path):
        deadline = time.monotonic() + 30
        while _booted_workers(log_path) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        before = _requests_counted(port, "ops.health")

        def hit(index: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", "/slow" if index % 4 == 0 else "/healthz")  # slow ones keep both busy
            response = conn.getresponse()
            response.read()
            conn.close()
            assert response.status == 200

        threads = [threading.Thread(target=hit, args=(i,)) for i in range(sent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        pids = {name.rsplit("_", 1)[-1] for name in os.listdir(server_env["PROMETHEUS_MULTIPROC_DIR"])}
        assert _requests_counted(port, "ops.health") - before == sent
    assert len(pids) >= 2, "both workers served requests and wrote metrics"


def test_sigterm_drains_readiness_first_and_answers_every_queued_request(server_env, tmp_path):
    (tmp_path / "slow_wsgi.py").write_text(SLOW_APP)
    _migrate(server_env)
    env = {**server_env, "WEB_CONCURRENCY": "2", "SHUTDOWN_DRAIN_SECONDS": "1",
           "GUNICORN_GRACEFUL_TIMEOUT": "30"}
    with gunicorn(env, app="slow_wsgi:app", cwd=tmp_path) as (process, port, _log):
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10).status == 200
        connections = []
        for _ in range(16):  # 16 × 0.4 s on 2 workers: most wait in the backlog at SIGTERM
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/slow")
            connections.append(conn)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # let the master handle the signal before we ask again
        ready = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        ready.request("GET", "/readyz")
        outcomes = []
        for conn in connections:
            try:
                response = conn.getresponse()
                response.read()
                outcomes.append(response.status)
            except (ConnectionError, http.client.HTTPException) as exc:
                outcomes.append(type(exc).__name__)
        ready_response = ready.getresponse()
        ready_body = json.loads(ready_response.read())
        assert process.wait(timeout=60) == 0
    assert outcomes == [200] * 16
    assert ready_response.status == 503 and ready_body["checks"]["shutdown"]["draining"] is True


PLANTED = {
    "secret_key": "planted-secret-key-4f1c9a7e2b6d8f03",
    "password": "planted-Password-77aa!",
    "wrong_password": "planted-Wrong-Guess-31c!",
    "token": "planted-api-token-5d2e",
}


def _csrf(opener, url: str) -> str:
    html = opener.open(url, timeout=10).read().decode()
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def test_json_logs_carry_ids_and_never_a_secret(server_env):
    from urllib.parse import urlencode

    _migrate(server_env)
    env = {**server_env, "PREFLIGHT_ENV": "production", "SECRET_KEY": PLANTED["secret_key"],
           "SESSION_COOKIE_SECURE": "false", "WEB_CONCURRENCY": "1"}
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with gunicorn(env) as (_, port, log_path):
        base = f"http://127.0.0.1:{port}"
        opener.open(urllib.request.Request(f"{base}/signup", data=urlencode({
            "csrf_token": _csrf(opener, f"{base}/signup"), "email": "owner@example.test",
            "name": "Owner", "password": PLANTED["password"], "confirm": PLANTED["password"],
        }).encode()), timeout=10)
        opener.open(urllib.request.Request(f"{base}/logout", data=urlencode({
            "csrf_token": _csrf(opener, f"{base}/")}).encode()), timeout=10)
        try:
            opener.open(urllib.request.Request(f"{base}/login", data=urlencode({
                "csrf_token": _csrf(opener, f"{base}/login"), "email": "owner@example.test",
                "password": PLANTED["wrong_password"]}).encode()), timeout=10)
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
        opener.open(urllib.request.Request(f"{base}/login", data=urlencode({
            "csrf_token": _csrf(opener, f"{base}/login"), "email": "owner@example.test",
            "password": PLANTED["password"]}).encode()), timeout=10)
        session_cookie = next(c.value for c in jar if c.name == "session")
        opener.open(urllib.request.Request(
            f"{base}/healthz?token={PLANTED['token']}",
            headers={"Authorization": f"Bearer {PLANTED['token']}", "X-Request-ID": "trace-me-123"}),
            timeout=10)
        try:
            opener.open(f"{base}/admin/users", timeout=10)  # a page this user may or may not see
        except urllib.error.HTTPError as exc:
            exc.read()
    text = log_path.read_text()
    for name, value in [*PLANTED.items(), ("session cookie", session_cookie)]:
        assert value not in text, f"the {name} leaked into the logs"

    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message", "request_id", "user_id"} <= set(line)
                         for line in lines)
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    traced = [line for line in access if line["request_id"] == "trace-me-123"]
    assert len(traced) == 1 and traced[0]["path"] == "/healthz" and traced[0]["user_id"]
    missing = [line["message"] for line in access if not line["request_id"]]
    assert not missing, missing
    events = {line.get("event") for line in lines}
    assert {"auth.login", "auth.login.failed"} <= events
    signed_in = next(line for line in lines if line.get("event") == "auth.login")
    assert signed_in["user_id"] and signed_in["request_id"]
