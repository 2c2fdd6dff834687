"""Hostile and healthy local HTTP(S) servers for probe tests, one behaviour per path.

Raw asyncio servers (HTTP libraries are too polite to misbehave on purpose) run on
their own event loop in a background thread, bound to 127.0.0.1 on ephemeral ports::

    with hostile_server() as targets:
        targets.url("/slow-headers")           # http://127.0.0.1:PORT/slow-headers
        targets.tls_url("expired", "/health")  # https://localhost:PORT/health
        targets.client_ssl_context             # trusts the CA of the "valid" server

Every endless behaviour is bounded (iteration caps) and stops when the client goes
away or the servers shut down; shutdown cancels and awaits every connection task.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import trustme
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LOOPBACK = "127.0.0.1"
MAX_REQUEST_HEAD = 64 * 1024
REQUESTS_PER_CONNECTION = 1000
_ZERO_CHUNK = bytes(64 * 1024)

SECURITY_HEADERS = (
    ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


# ---------------------------------------------------------------- response helpers


def _head(status: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _respond(
    writer: asyncio.StreamWriter,
    status: str,
    body: bytes,
    content_type: str = "application/json",
    extra: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
) -> bool:
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    headers.extend(extra)
    writer.write(_head(status, headers) + body)
    await writer.drain()
    return True  # the connection may serve another request


def _client_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    return writer.is_closing() or reader.at_eof()


# ---------------------------------------------------------------- healthy service


def _metrics_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    requests = Counter(
        "http_requests_total", "HTTP requests served.", ["method", "code"], registry=registry
    )
    duration = Histogram(
        "http_request_duration_seconds", "HTTP request latency.", registry=registry
    )
    ProcessCollector(registry=registry)
    for code, count in (("200", 41), ("500", 1)):
        requests.labels(method="GET", code=code).inc(count)
    for seconds in (0.004, 0.02, 0.2, 1.5):
        duration.observe(seconds)
    return registry


_REGISTRY = _metrics_registry()
# Rendered once: the page never changes, and rendering it per request (the process
# collector reads /proc) was a third of the target server's CPU in bench/app_sweep.py.
_METRICS_BODY = generate_latest(_REGISTRY)


async def healthy_health(req: Request, reader, writer) -> bool:
    extra = list(SECURITY_HEADERS)
    if "x-request-id" in req.headers:
        extra.append(("X-Request-ID", req.headers["x-request-id"]))
    body = json.dumps({"status": "pass", "version": "1.4.2"}).encode()
    return await _respond(writer, "200 OK", body, "application/health+json", extra)


async def healthy_ready(req: Request, reader, writer) -> bool:
    body = json.dumps({"status": "pass", "ready": True}).encode()
    return await _respond(writer, "200 OK", body, extra=SECURITY_HEADERS)


async def healthy_deep(req: Request, reader, writer) -> bool:
    body = json.dumps(
        {
            "status": "pass",
            "checks": {
                "database": {"status": "pass", "latency_ms": 3},
                "cache": {"status": "pass", "latency_ms": 1},
                "queue": {"status": "pass", "latency_ms": 2},
            },
        }
    ).encode()
    return await _respond(writer, "200 OK", body, "application/health+json", SECURITY_HEADERS)


async def healthy_metrics(req: Request, reader, writer) -> bool:
    return await _respond(writer, "200 OK", _METRICS_BODY, CONTENT_TYPE_LATEST, SECURITY_HEADERS)


# ---------------------------------------------------------------- rule-level hostility


async def health_says_fail(req: Request, reader, writer) -> bool:
    body = json.dumps({"status": "fail", "output": "database unreachable"}).encode()
    return await _respond(writer, "200 OK", body, "application/health+json")


async def non_utf8_json(req: Request, reader, writer) -> bool:
    body = b'{"status": "pass", "note": "\xff\xfe\xc3\x28 caf\xe9"}'
    return await _respond(writer, "200 OK", body, "application/json")


async def html_metrics(req: Request, reader, writer) -> bool:
    body = b"<!doctype html><html><head><title>Login</title></head><body>Sign in</body></html>"
    return await _respond(writer, "200 OK", body, "text/html; charset=utf-8")


# ---------------------------------------------------------------- transport hostility


async def slow_headers(req: Request, reader, writer) -> bool:
    """Slowloris: a status line, then one header byte every 0.5 s, never finishing."""
    writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(1200):  # ten minutes at most
        await writer.drain()
        await asyncio.sleep(0.5)
        if _client_gone(reader, writer):
            break
        writer.write(b"a")
    return False


async def trickle_body(req: Request, reader, writer) -> bool:
    """Prompt headers, then a 100 kB body one byte every 0.1 s."""
    writer.write(_head("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100000")]))
    for _ in range(100_000):
        await writer.drain()
        await asyncio.sleep(0.1)
        if _client_gone(reader, writer):
            break
        writer.write(b"x")
    return False


async def silence(req: Request, reader, writer) -> bool:
    """Accept, read the request, never answer; wait for the client to give up."""
    with contextlib.suppress(asyncio.TimeoutError):
        async with asyncio.timeout(600):
            while await reader.read(4096):
                pass
    return False


async def endless_chunked(req: Request, reader, writer) -> bool:
    writer.write(
        _head("200 OK", [("Content-Type", "text/plain"), ("Transfer-Encoding", "chunked")])
    )
    chunk = b"%x\r\n" % len(_ZERO_CHUNK) + _ZERO_CHUNK + b"\r\n"
    for _ in range(1_000_000):  # 64 GB at most; a client should stop far sooner
        writer.write(chunk)
        await writer.drain()
        if _client_gone(reader, writer):
            break
    return False


async def huge_content_length(req: Request, reader, writer) -> bool:
    """Claims 10 GB and streams zeros as fast as the client reads."""
    total = 10 * 1000**3
    writer.write(
        _head(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(total))],
        )
    )
    for _ in range(total // len(_ZERO_CHUNK)):
        writer.write(_ZERO_CHUNK)
        await writer.drain()
        if _client_gone(reader, writer):
            break
    return False


class _GzipBomb:
    """A gzip stream of 10 GiB of zeros (~10.6 MB compressed), built lazily.

    Deflate with a full flush after each MiB resets the encoder, so every MiB of zeros
    compresses to the same ~1 kB block: compress it once and repeat it.
    """

    MIB = 1 << 20
    BLOCKS = 10 * 1024
    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"

    def __init__(self) -> None:
        encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
        self.block = encoder.compress(bytes(self.MIB)) + encoder.flush(zlib.Z_FULL_FLUSH)
        self.final = encoder.flush(zlib.Z_FINISH)

    def trailer(self) -> bytes:
        crc, zeros = 0, bytes(self.MIB)
        for _ in range(self.BLOCKS):
            crc = zlib.crc32(zeros, crc)
        return struct.pack("<II", crc, (self.BLOCKS * self.MIB) & 0xFFFFFFFF)


_GZIP_BOMB: _GzipBomb | None = None


async def gzip_bomb(req: Request, reader, writer) -> bool:
    """Content-Encoding: gzip whatever Accept-Encoding said; expands 1000x."""
    global _GZIP_BOMB
    if _GZIP_BOMB is None:
        _GZIP_BOMB = _GzipBomb()
    bomb = _GZIP_BOMB
    writer.write(
        _head(
            "200 OK",
            [
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
                ("Connection", "close"),
            ],
        )
    )
    writer.write(bomb.HEADER)
    batch = bomb.block * 64  # 64 MiB of zeros per write, ~66 kB on the wire
    for _ in range(bomb.BLOCKS // 64):
        writer.write(batch)
        await writer.drain()
        if _client_gone(reader, writer):
            return False
    writer.write(bomb.final + bomb.trailer())
    await writer.drain()
    return False


_METRICS_FLOOD: bytes | None = None


async def endless_metrics(req: Request, reader, writer) -> bool:
    """Valid Prometheus text that never ends: the parser must only see the capped part."""
    global _METRICS_FLOOD
    if _METRICS_FLOOD is None:  # 2 MB of distinct samples, built once, then repeated
        _METRICS_FLOOD = "".join(
            f'app_items_total{{shard="{i // 100}",item="{i % 100}"}} {i}\n' for i in range(50_000)
        ).encode()
    writer.write(
        _head("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Transfer-Encoding", "chunked")])
    )
    view = memoryview(_METRICS_FLOOD)
    for batch in range(1_000_000):
        offset = (batch * 65_536) % len(view)
        chunk = view[offset : offset + 65_536]
        writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        await writer.drain()
        if _client_gone(reader, writer):
            break
    return False


async def big_header(req: Request, reader, writer) -> bool:
    """A single 200 kB response header."""
    return await _respond(writer, "200 OK", b"{}", extra=[("X-Padding", "a" * 200_000)])


async def many_headers(req: Request, reader, writer) -> bool:
    """A thousand small headers: little in bytes, a lot in count."""
    extra = [(f"X-Filler-{i}", "x") for i in range(1000)]
    return await _respond(writer, "200 OK", b"{}", extra=extra)


async def not_http(req: Request, reader, writer) -> bool:
    """Another protocol's banner on an HTTP port."""
    writer.write(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n")
    await writer.drain()
    return False


async def conflicting_length(req: Request, reader, writer) -> bool:
    """Two different Content-Length headers: a request-smuggling shape."""
    writer.write(
        _head("200 OK", [("Content-Length", "2"), ("Content-Length", "40")])
        + b'{}{"status": "pass"}'
    )
    await writer.drain()
    return False


def _redirect_to(location: str) -> Handler:
    async def redirect(req: Request, reader, writer) -> bool:
        return await _respond(writer, "302 Found", b"", "text/plain", [("Location", location)])

    return redirect


async def reset_connection(req: Request, reader, writer) -> bool:
    """Read the request, then close with SO_LINGER 0 so the client gets a RST."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    return False


async def not_found(req: Request, reader, writer) -> bool:
    return await _respond(writer, "404 Not Found", b'{"error": "not found"}')


ROUTES: dict[str, Handler] = {
    "/health": healthy_health,
    "/ready": healthy_ready,
    "/health/deep": healthy_deep,
    "/metrics": healthy_metrics,
    "/health-says-fail": health_says_fail,
    "/non-utf8-json": non_utf8_json,
    "/html/metrics": html_metrics,
    "/slow-headers": slow_headers,
    "/trickle": trickle_body,
    "/silence": silence,
    "/chunked-endless": endless_chunked,
    "/huge": huge_content_length,
    "/gzip-bomb": gzip_bomb,
    "/big-header": big_header,
    "/redirect-loop": _redirect_to("/redirect-loop"),
    "/redirect-metadata": _redirect_to("http://169.254.169.254/latest/meta-data/"),
    "/redirect-mapped-metadata": _redirect_to("http://[::ffff:169.254.169.254]/latest/"),
    "/redirect-file": _redirect_to("file:///etc/passwd"),
    "/metrics-endless": endless_metrics,
    "/many-headers": many_headers,
    "/not-http": not_http,
    "/conflicting-length": conflicting_length,
    "/reset": reset_connection,
}


# ---------------------------------------------------------------- server plumbing


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(parts[0], parts[1].split("?", 1)[0], headers)


@dataclass
class _Loop:
    """An event loop in a daemon thread that tracks and can cancel every connection."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    connections: set[asyncio.Task] = field(default_factory=set)

    def __post_init__(self) -> None:
        # Handshakes the client rightly refuses and resets are expected here: stay quiet.
        self.loop.set_exception_handler(lambda loop, context: None)
        self.thread = threading.Thread(target=self._run, name="probe-targets", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, routes
    ) -> None:
        task = asyncio.current_task()
        self.connections.add(task)
        graceful = True
        try:
            for _ in range(REQUESTS_PER_CONNECTION):
                request = await _read_request(reader)
                if request is None:
                    break
                handler = routes.get(request.path, not_found)
                if not await handler(request, reader, writer):
                    break
        except asyncio.CancelledError:
            graceful = False
            raise
        except (OSError, ssl.SSLError, RuntimeError):
            graceful = False
        finally:
            self.connections.discard(task)
            if graceful and not writer.is_closing():
                writer.close()
            else:
                writer.transport.abort()

    async def start(self, routes: dict[str, Handler], ssl_context=None) -> int:
        server = await asyncio.start_server(
            lambda r, w: self._serve_connection(r, w, routes),
            LOOPBACK,
            0,
            ssl=ssl_context,
            limit=MAX_REQUEST_HEAD,
            ssl_handshake_timeout=5 if ssl_context else None,
            # One server stands in for many machines: a sweep opens hundreds of connections
            # at once, and the default backlog (100) drops SYNs, costing a 1 s retransmit each.
            backlog=4096,
        )
        self.servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        for server in self.servers:
            server.close()
        tasks = list(self.connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self.servers:
            await server.wait_closed()
        await asyncio.sleep(0)  # let aborted transports finish their callbacks

    def stop(self) -> None:
        try:
            self.call(self._shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()


@dataclass
class HostileTargets:
    """Where the servers listen, plus what a client needs to trust the good TLS one."""

    http_port: int
    tls_ports: dict[str, int]
    client_ssl_context: ssl.SSLContext
    expired_not_after: datetime.datetime

    def url(self, path: str) -> str:
        return f"http://{LOOPBACK}:{self.http_port}{path}"

    def tls_url(self, which: str, path: str = "/health") -> str:
        """`which` is "valid", "expired" or "untrusted"; the name matches the certs."""
        return f"https://localhost:{self.tls_ports[which]}{path}"


def _server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def hostile_server() -> Iterator[HostileTargets]:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0, tzinfo=None)
    ca = trustme.CA()
    other_ca = trustme.CA(organization_name="Untrusted Other CA")
    expired_not_after = now - datetime.timedelta(days=3)
    certs = {
        "valid": ca.issue_cert("localhost", LOOPBACK),
        "expired": ca.issue_cert(
            "localhost",
            LOOPBACK,
            not_before=now - datetime.timedelta(days=93),
            not_after=expired_not_after,
        ),
        "untrusted": other_ca.issue_cert("localhost", LOOPBACK),
    }
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    runner = _Loop()
    try:
        http_port = runner.call(runner.start(ROUTES))
        tls_ports = {
            which: runner.call(runner.start(ROUTES, _server_context(cert)))
            for which, cert in certs.items()
        }
        yield HostileTargets(http_port, tls_ports, client_ctx, expired_not_after)
    finally:
        runner.stop()
