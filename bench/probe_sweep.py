"""Benchmark: probe a fleet of local targets, some hanging, with bounded concurrency.

Usage (from the repository root)::

    .venv/bin/python bench/probe_sweep.py [--targets 1000] [--hanging 100]
        [--deadline 2.0] [--servers 8] [--concurrency 100] [--skip-sequential] [--strict]

A separate server process listens on ``--servers`` ephemeral ports on 127.0.0.1 (so its
CPU does not distort the client's event loop). ``--targets`` URLs are spread over those
ports; ``--hanging`` of them, spread evenly through the list, accept the connection and
never answer. The client runs one ``run_checks`` health sweep (concurrency 100, per-request
deadline ``--deadline``) and prints wall time, peak RSS of the client process
(``ru_maxrss``) and outcome counts, e.g.::

    sweep: 1000 targets, 100 hanging, wall 2.31 s, peak RSS 95 MB, pass 900, error 100

Then, unless ``--skip-sequential``, it times a plain sequential loop of ``run_check``
over the non-hanging targets (measured) and adds ``hanging x deadline`` for the hanging
ones (computed, not waited for). Goals: sweep wall < 2.5 s and peak RSS < 300 MB; with
``--strict`` a miss exits 1. Exits 0 otherwise; Ctrl-C stops the server process and
exits 130. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import signal
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LOOPBACK = "127.0.0.1"
WALL_GOAL_S = 2.5
RSS_GOAL_MB = 300

_BODY = b'{"status": "pass", "version": "1.0.0"}'
_HEALTHY_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/health+json\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
    b"X-Content-Type-Options: nosniff\r\n"
    b"Cache-Control: no-store\r\n"
    b"\r\n" + _BODY
)


# ---------------------------------------------------------------- server process


class _TargetProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1: ``/hang/...`` never answers, anything else is healthy."""

    def __init__(self, live: set[asyncio.Transport]) -> None:
        self.live = live
        self.buffer = b""
        self.hanging = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.live.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.live.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.hanging:
            return
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            parts = head.split(b" ", 2)
            if len(parts) < 2 or parts[1].startswith(b"/hang/"):
                self.hanging = True  # accept, read, never respond
                return
            self.transport.write(_HEALTHY_RESPONSE)
        if len(self.buffer) > 65_536:
            self.transport.abort()


async def _serve(n_servers: int, conn) -> None:
    loop = asyncio.get_running_loop()
    live: set[asyncio.Transport] = set()
    servers = [
        await loop.create_server(lambda: _TargetProtocol(live), LOOPBACK, 0, backlog=1024)
        for _ in range(n_servers)
    ]
    conn.send([s.sockets[0].getsockname()[1] for s in servers])

    stop = asyncio.Event()

    def on_parent_message() -> None:
        # "stop", or EOF because the parent died: either way, shut down.
        try:
            conn.recv()
        except (EOFError, OSError):
            pass
        stop.set()

    loop.add_reader(conn.fileno(), on_parent_message)
    await stop.wait()
    loop.remove_reader(conn.fileno())
    for server in servers:
        server.close()
    for transport in list(live):
        transport.abort()
    for server in servers:
        await server.wait_closed()


def _server_main(n_servers: int, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    asyncio.run(_serve(n_servers, conn))


class ServerProcess:
    """The target servers in a child process; stop() is safe to call at any time."""

    def __init__(self, n_servers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child_conn = ctx.Pipe()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # child starts ignoring it
        try:
            self.process = ctx.Process(
                target=_server_main, args=(n_servers, child_conn), name="probe-targets"
            )
            self.process.daemon = True
            self.process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        child_conn.close()

    def ports(self, timeout: float = 30.0) -> list[int]:
        if not self.conn.poll(timeout):
            raise RuntimeError("server process did not start")
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.conn.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


# ---------------------------------------------------------------- client


def build_targets(ports: list[int], n_targets: int, n_hanging: int) -> list[tuple[str, bool]]:
    """(url, hangs) pairs; hanging ones spread evenly so they meet healthy ones in flight."""
    hanging = {int(i * n_targets / n_hanging) for i in range(n_hanging)} if n_hanging else set()
    targets = []
    for i in range(n_targets):
        port = ports[i % len(ports)]
        kind = "hang" if i in hanging else "health"
        targets.append((f"http://{LOOPBACK}:{port}/{kind}/{i}", i in hanging))
    return targets


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def sweep(targets, args) -> None:
    from webapp.probes.fetch import AddressPolicy, Fetcher, FetchLimits
    from webapp.probes.rules import run_check, run_checks

    policy = AddressPolicy.from_setting("127.0.0.0/8")
    limits = FetchLimits(
        deadline_s=args.deadline, max_body_bytes=1_048_576, max_header_bytes=65_536
    )
    checks = [("health", url) for url, _ in targets]
    n_hanging = sum(hangs for _, hangs in targets)

    async with Fetcher(policy, limits, max_connections=args.concurrency) as fetcher:
        started = time.perf_counter()
        results = await run_checks(checks, fetcher, concurrency=args.concurrency)
        wall = time.perf_counter() - started
    rss = peak_rss_mb()

    outcomes = Counter(r.outcome for r in results)
    print(
        f"sweep: {len(targets)} targets, {n_hanging} hanging, wall {wall:.2f} s, "
        f"peak RSS {rss:.0f} MB, pass {outcomes['pass']}, error {outcomes['error']}"
        + "".join(f", {o} {n}" for o, n in sorted(outcomes.items()) if o not in ("pass", "error"))
    )
    codes = Counter(r.error_code for r in results if r.error_code)
    if codes:
        print("sweep errors: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()))
    misplaced = sum(
        (r.outcome == "pass") == hangs for r, (_, hangs) in zip(results, targets, strict=True)
    )
    if misplaced:
        print(f"sweep: WARNING {misplaced} results do not match their target's behaviour")
    slowest_healthy = max(
        (r.duration_ms for r, (_, hangs) in zip(results, targets, strict=True) if not hangs),
        default=0.0,
    )
    print(f"sweep: slowest non-hanging check {slowest_healthy:.0f} ms")

    wall_ok, rss_ok = wall < WALL_GOAL_S, rss < RSS_GOAL_MB
    print(
        f"goals: wall < {WALL_GOAL_S} s {'met' if wall_ok else 'MISSED'}, "
        f"peak RSS < {RSS_GOAL_MB} MB {'met' if rss_ok else 'MISSED'}"
    )
    args.goals_met = wall_ok and rss_ok and not misplaced

    if args.skip_sequential:
        return
    healthy = [url for url, hangs in targets if not hangs]
    async with Fetcher(policy, limits, max_connections=args.concurrency) as fetcher:
        started = time.perf_counter()
        passed = 0
        for url in healthy:
            passed += (await run_check("health", url, fetcher)).outcome == "pass"
        measured = time.perf_counter() - started
    computed = n_hanging * args.deadline
    print(
        f"sequential: measured {measured:.2f} s for {len(healthy)} non-hanging targets "
        f"(pass {passed}); computed {n_hanging} hanging x {args.deadline:g} s deadline = "
        f"{computed:.1f} s; estimated total {measured + computed:.1f} s "
        f"({(measured + computed) / wall:.0f}x the concurrent sweep)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--hanging", type=int, default=100)
    parser.add_argument("--deadline", type=float, default=2.0)
    parser.add_argument("--servers", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a goal is missed")
    args = parser.parse_args(argv)
    if not 0 <= args.hanging <= args.targets or args.targets < 1:
        parser.error("need 1 <= targets and 0 <= hanging <= targets")
    if not 1 <= args.servers <= 64 or args.deadline <= 0 or args.concurrency < 1:
        parser.error("need 1 <= servers <= 64, deadline > 0, concurrency >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.goals_met = True
    servers = ServerProcess(args.servers)
    try:
        ports = servers.ports()
        targets = build_targets(ports, args.targets, args.hanging)
        print(
            f"servers: {len(ports)} on {LOOPBACK} (pid {servers.process.pid}), "
            f"deadline {args.deadline:g} s, concurrency {args.concurrency}"
        )
        asyncio.run(sweep(targets, args))
    except KeyboardInterrupt:
        print("interrupted; stopping the server process", file=sys.stderr)
        return 130
    finally:
        servers.stop()
    return 1 if args.strict and not args.goals_met else 0


if __name__ == "__main__":
    sys.exit(main())
