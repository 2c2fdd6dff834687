"""`make run`: the web server (gunicorn) and the job worker (Huey consumer), together.

Both run as child processes; Ctrl-C or SIGTERM stops both, and if either dies the other
is stopped too, so the pair never runs half-alive.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", default=os.environ.get("PORT", "5000"))
    parser.add_argument("--web-workers", default=os.environ.get("WEB_CONCURRENCY", "2"))
    parser.add_argument("--job-workers", default=os.environ.get("JOB_WORKERS", "2"))
    args = parser.parse_args()

    # webapp/gunicorn_conf.py: draining SIGTERM, shared /metrics, JSON access log in production.
    web = [str(BIN / "gunicorn"), "-c", "python:webapp.gunicorn_conf", "--bind", f"{args.host}:{args.port}",
           "--workers", args.web_workers, "--timeout", "60", "webapp.wsgi:app"]
    worker = [str(BIN / "huey_consumer"), "webapp.probes.tasks.huey", "--workers", args.job_workers,
              "--worker-type", "thread", "--delay", "0.1", "--max-delay", "1.0"]  # "Probe now" starts within a second
    children = [subprocess.Popen(web), subprocess.Popen(worker)]
    print(f"preflight: serving on http://{args.host}:{args.port}/ with probes running", flush=True)

    def stop(*_):
        # gunicorn drains on SIGTERM; Huey's graceful stop (running jobs finish) is SIGINT.
        for child, sig in zip(children, (signal.SIGTERM, signal.SIGINT), strict=True):
            if child.poll() is None:
                child.send_signal(sig)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    finally:
        stop()
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
    return max((child.returncode or 0) for child in children)


if __name__ == "__main__":
    sys.exit(main())
