"""Helpers for the ops tests: scratch databases, a TCP proxy that can hang or cut the
connections between the app and PostgreSQL (or Redis), and a real gunicorn server."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import need

REPO = Path(__file__).resolve().parents[1]


def postgres_admin_url() -> str:
    url = os.environ.get("TEST_POSTGRES_URL", "")
    need("postgres", bool(url), "TEST_POSTGRES_URL is not set")
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextlib.contextmanager
def scratch_postgres():
    """A new, empty PostgreSQL database; dropped afterwards. Yields its URL."""
    admin_url = postgres_admin_url()
    name = f"preflight_ops_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - server down: a skip on a laptop, a failure in CI
        need("postgres", False, f"cannot create a database at {admin_url}: {exc}")
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TcpProxy:
    """A threaded TCP proxy on 127.0.0.1. Modes: "pass" forwards; "hang" keeps every
    connection open but forwards nothing (a hung server or black-holed path); "refuse" closes
    new connections at once. cut() resets every open connection (a restarted database)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.accepted = 0  # connections the app opened through the proxy, whatever the mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted += 1
            if self.mode == "refuse":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            upstream = None
            if self.mode == "pass":
                try:
                    upstream = socket.create_connection(self.upstream, timeout=5)
                except OSError:
                    client.close()
                    continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket | None) -> None:
        sockets = [client] + ([upstream] if upstream else [])
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(sockets, [], [], 0.2)
                if self.mode == "hang" or upstream is None:
                    for sock in readable:  # swallow whatever arrives, answer nothing
                        if not sock.recv(65536):
                            return
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except (OSError, ValueError):  # cut() closed the sockets under us (fd -1)
            return
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
                        sock.close()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.listener.close()


def wait_for_http(port: int, path: str = "/healthz", timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered on port {port} within {timeout} s")


@contextlib.contextmanager
def gunicorn(env: dict, *args: str, app: str = "webapp.wsgi:app", cwd: Path | None = None,
             ready_path: str = "/healthz"):
    """Run gunicorn with Preflight's production config; yields (process, port, log path).
    It is up once `ready_path` answers."""
    port = free_port()
    log_path = Path(env["PREFLIGHT_INSTANCE_PATH"]) / f"gunicorn-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(cwd or ""), str(REPO)])),
                "HOST": "127.0.0.1", "PORT": str(port), **env}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:webapp.gunicorn_conf",
             *args, app], env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    try:
        wait_for_http(port, ready_path)
        yield process, port, log_path
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # graceful: requests in flight finish
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
