"""The job worker as a real process: SIGTERM mid-sweep (what `make run` sends on stop)
stops it gracefully — the sweep's runs are closed with an error, the sweep lock is released
— and the next sweep runs. Before, Huey's lock_task stayed held with no expiry and probing
stopped for good."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

from sqlalchemy import func, select

from tests.conftest import REPO
from tests.factories import ServiceFactory
from tests.probe_targets import hostile_server
from webapp.extensions import db, huey, make_huey
from webapp.models import JobLock, ProbeRun, utcnow
from webapp.probes import tasks


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.rollback()  # a fresh look at what the worker committed
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def start_worker(app, instance) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "PREFLIGHT_INSTANCE_PATH": str(instance), "PROBE_ALLOW_NETWORKS": "127.0.0.0/8",
           "PROBE_DEADLINE_SECONDS": "30",  # the hanging target holds the sweep for 30 s
           "SECRET_KEY": "worker-secret-key-for-tests-only", "REDIS_URL": ""}
    log = open(instance / "worker.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "webapp.probes.worker", "--workers", "1", "--no-periodic"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def test_sigterm_mid_sweep_stops_cleanly_and_the_next_sweep_runs(app, tmp_path):
    with hostile_server() as targets:
        hanging = ServiceFactory(health_url=targets.url("/silence"), base_url=None,
                                 next_probe_at=utcnow() - timedelta(minutes=1))
        db.session.commit()
        queue = make_huey({"PREFLIGHT_INSTANCE_PATH": str(tmp_path)})  # the worker's own queue
        queue.storage.enqueue(huey.serialize_task(tasks.probe_due_services.s()))
        worker = start_worker(app, tmp_path)
        try:
            wait_for(lambda: db.session.scalar(select(ProbeRun).where(ProbeRun.service_id == hanging.id)),
                     60, "the worker to start the sweep")
            wait_for(lambda: db.session.get(JobLock, tasks.SWEEP_LOCK), 10, "the sweep lock")
            time.sleep(1)  # well inside the 30 s the hanging target holds it
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=20) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        output = (tmp_path / "worker.log").read_text()
        db.session.rollback()
        run = db.session.scalar(select(ProbeRun).where(ProbeRun.service_id == hanging.id))
        assert run.finished_at is not None, output
        assert run.error == "stopped: the worker shut down before the run finished", output
        assert db.session.scalar(select(func.count(JobLock.name))) == 0, output  # released

        healthy = ServiceFactory(health_url=targets.url("/health"), base_url=None,
                                 next_probe_at=utcnow() - timedelta(minutes=1))
        db.session.commit()
        assert tasks.probe_due_services.call_local() == 1  # the next sweep runs
        db.session.rollback()
        assert db.session.scalar(select(ProbeRun.error).where(ProbeRun.service_id == healthy.id)) is None
