"""The job worker: Huey's consumer, made to stop well. `make run` starts it; on its own:

    python -m webapp.probes.worker --workers 2

Differences from `huey_consumer`:
- SIGTERM (what `make run`, systemd, Docker and Kubernetes send) is a graceful stop: a
  probe sweep in flight stops waiting for its targets, stores what it has, closes its runs
  with an error and releases its lock; other jobs finish; after SHUTDOWN_TIMEOUT seconds
  the rest are interrupted. A second SIGTERM, or SIGINT (Ctrl-C), stops at once.
- The open-files limit is raised to fit PROBE_CONCURRENCY (each concurrent probe holds a
  socket, the HTTPS check two).
- The Flask app is built before the first job, so a configuration error stops the worker
  at start-up instead of failing every job.
"""

from __future__ import annotations

import argparse
import logging
import resource
import signal
import sys

from huey.consumer import Consumer

from webapp.extensions import huey
from webapp.probes import tasks

SHUTDOWN_TIMEOUT = 8.0  # `make run` waits 10 s before it kills
log = logging.getLogger("webapp.probes")


class Worker(Consumer):
    """Tells running sweeps to stop as soon as a stop signal arrives."""

    def _handle_signal(self, signum, frame):
        if signum in (signal.SIGTERM, signal.SIGINT):
            tasks.STOPPING.set()
        super()._handle_signal(signum, frame)


def open_files_needed(concurrency: int) -> int:
    """2 × concurrency + 256: two sockets per running check at most (the HTTPS check), plus
    database, queue and log files. 1,256 at the default PROBE_CONCURRENCY of 500."""
    return 2 * concurrency + 256


def raise_open_files_limit(concurrency: int) -> int:
    """Raise the soft RLIMIT_NOFILE to `open_files_needed`, within the hard limit. Returns
    the soft limit."""
    want = open_files_needed(concurrency)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-periodic", action="store_true", help="run queued jobs only, no schedule")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tasks.app_context() as app:
        concurrency = app.config["PROBE_CONCURRENCY"]
    limit = raise_open_files_limit(concurrency)
    if limit < open_files_needed(concurrency):
        log.warning("open-files limit %d is low for PROBE_CONCURRENCY=%d (wants %d: raise the hard limit, "
                    "see docs/operations.md)", limit, concurrency, open_files_needed(concurrency))
    huey.immediate = False
    worker = Worker(huey, workers=args.workers, periodic=not args.no_periodic, worker_type="thread",
                    initial_delay=0.1, max_delay=1.0,  # "Probe now" starts within a second
                    graceful_signal="TERM", shutdown_timeout=SHUTDOWN_TIMEOUT)
    log.info("worker: %d threads, PROBE_CONCURRENCY=%d, open-files limit %d", args.workers, concurrency, limit)
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
