"""Gunicorn settings for production: `gunicorn -c python:webapp.gunicorn_conf webapp.wsgi:app`.

What it adds to plain gunicorn:
- **Draining shutdown.** On SIGTERM `/readyz` answers 503 at once while the server keeps
  serving for SHUTDOWN_DRAIN_SECONDS (so a load balancer takes the instance out of
  rotation first); then the normal graceful stop, in which each worker also serves the
  connections still queued in the listen backlog before it exits, instead of leaving
  them to be reset (bounded by GUNICORN_GRACEFUL_TIMEOUT).
- **One /metrics for all workers.** prometheus-client's multiprocess mode in a fresh
  directory per server (PROMETHEUS_MULTIPROC_DIR), dead workers' gauges cleaned up.
- **JSON logs** (in production) for gunicorn's own error and access lines, with the request
  id and user id the app sets.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
import time

from gunicorn.glogging import Logger

_production = os.environ.get("PREFLIGHT_ENV", "").strip().lower() == "production"


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '5000')}"
workers = _int_env("WEB_CONCURRENCY", 2)
worker_class = "sync"  # the app does blocking I/O with bounded timeouts; probes run in the worker
timeout = _int_env("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT", 20)
# Not a gunicorn setting (gunicorn ignores it): read by on_starting below.
drain_seconds = _int_env("SHUTDOWN_DRAIN_SECONDS", 10 if _production else 0)
keepalive = 2
backlog = 256  # a bounded queue: what waits in it is served at shutdown within graceful_timeout
control_socket_disable = True  # gunicorn 27 would otherwise write ~/.gunicorn
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Set before any worker imports prometheus_client (workers are forked after this module runs).
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="preflight-metrics-")

# Shared memory made before the fork: the master sets it, every worker's /readyz reads it.
_DRAINING = multiprocessing.RawValue("b", 0)


def draining() -> bool:
    return bool(_DRAINING.value)


class JsonLogger(Logger):
    """gunicorn's logger, writing its error and access lines through Preflight's handler."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        from webapp import logs

        fmt = os.environ.get("LOG_FORMAT", "json" if _production else "text").strip().lower()
        for log in (self.error_log, self.access_log):
            log.handlers[:] = [logs.make_handler(fmt)]
            log.propagate = False

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        headers = {k.lower(): v for k, v in (resp.headers or [])}
        path = environ.get("PATH_INFO", "")
        self.access_log.info(
            "%s %s %s", environ.get("REQUEST_METHOD"), path, status,
            extra={
                "request_id": headers.get("x-request-id") or None,
                "user_id": environ.get("preflight.user_id"),
                "method": environ.get("REQUEST_METHOD"), "path": path,
                "status": int(status) if str(status).isdigit() else status,
                "duration_ms": round(request_time.total_seconds() * 1000, 1),
                "bytes": getattr(resp, "sent", None), "remote_addr": environ.get("REMOTE_ADDR"),
                "user_agent": environ.get("HTTP_USER_AGENT"),
            })


logger_class = JsonLogger


def on_starting(server) -> None:
    """Master: start with an empty metrics directory; SIGTERM drains before stopping."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
    _DRAINING.value = 0
    state = {"stop_at": None}

    def handle_term() -> None:
        if state["stop_at"] is None:
            _DRAINING.value = 1
            state["stop_at"] = time.monotonic() + drain_seconds
            server.log.info("SIGTERM: readiness now 503; draining %s s before stopping",
                            drain_seconds)
        if time.monotonic() >= state["stop_at"]:
            raise StopIteration  # what gunicorn's own handle_term does: graceful stop

    manage_workers = server.manage_workers

    def manage_workers_until_drained() -> None:
        if state["stop_at"] is not None and time.monotonic() >= state["stop_at"]:
            raise StopIteration
        manage_workers()

    server.handle_term = handle_term
    server.manage_workers = manage_workers_until_drained


def worker_exit(server, worker) -> None:
    """Worker, after it stopped accepting: serve what is still queued in the backlog, so an
    accepted connection is answered rather than reset when the socket closes."""
    deadline = time.monotonic() + max(1.0, server.cfg.graceful_timeout - 2)
    if not hasattr(worker, "accept"):  # not a sync worker
        return
    for listener in worker.sockets:
        try:
            listener.setblocking(False)
        except OSError:
            continue
    served = 0
    while time.monotonic() < deadline:
        accepted = False
        for listener in worker.sockets:
            try:
                worker.accept(listener)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                continue
            accepted, served = True, served + 1
        if not accepted:
            break
    if served:
        server.log.info("worker %s served %d queued request(s) before exiting", worker.pid, served)


def child_exit(server, worker) -> None:
    """Master: drop a dead worker's live gauges from the shared metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:
    shutil.rmtree(os.environ.get("PROMETHEUS_MULTIPROC_DIR", ""), ignore_errors=True)
