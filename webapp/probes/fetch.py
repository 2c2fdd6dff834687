"""Safe async HTTP fetching for probes: address policy, total deadline, byte caps.

Why aiohttp: one httpx AsyncClient degrades badly past ~10 concurrent connections
(encode/httpcore#1035, quadratic pool bookkeeping). aiohttp's connector scales to hundreds
of concurrent connections on one session, and its pluggable resolver lets the address
policy run at connect time: the connector dials exactly the IPs the resolver returned
(pinned, no second lookup) while Host and TLS SNI/hostname checks use the URL's name.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Self

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from cryptography import x509
from yarl import URL

ERROR_CODES = (
    "timeout",
    "dns_error",
    "connect_error",
    "tls_invalid",
    "body_too_large",
    "headers_too_large",
    "ssrf_blocked",
    "too_many_redirects",
    "protocol_error",
    "invalid_url",
    "connection_reset",
    "decompression_error",
)

USER_AGENT = "Preflight-probe/0.1 (production readiness review)"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Never reachable, whatever PROBE_ALLOW_NETWORKS says.
_ALWAYS_BLOCKED: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("link-local address (cloud metadata lives here)", _nets("169.254.0.0/16", "fe80::/10")),
    (
        "cloud metadata / platform service address",
        _nets("fd00:ec2::/32", "100.100.100.200/32", "168.63.129.16/32"),
    ),
    ("unspecified address", _nets("0.0.0.0/8", "::/128")),
    ("multicast address", _nets("224.0.0.0/4", "ff00::/8")),
    ("broadcast address", _nets("255.255.255.255/32")),
    (
        "reserved address",
        # 240/4 future use; IPv4-compatible ::/96 and other reserved IPv6 blocks; site-local.
        _nets("240.0.0.0/4", "::/8", "100::/64", "fec0::/10", "2001:db8::/32"),
    ),
)

# Reachable only when listed in the allow-list.
_ALLOW_LIST_ONLY: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("loopback address", _nets("127.0.0.0/8", "::1/128")),
    (
        "private address",
        _nets(
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fc00::/7",
            "64:ff9b:1::/48",
        ),
    ),
    (
        "special-purpose address",
        _nets(
            "192.0.0.0/24",
            "192.0.2.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "192.88.99.0/24",
        ),
    ),
)

_IPV6_LOOPBACK = ipaddress.IPv6Address("::1")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TEREDO = ipaddress.ip_network("2001::/32")

METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
        "metadata.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)


def _normalise(addr: IPAddress) -> IPAddress:
    """Return the IPv4 address an IPv6 form carries (mapped, NAT64, 6to4, Teredo)."""
    if isinstance(addr, ipaddress.IPv4Address):
        return addr
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _TEREDO and addr.teredo is not None:
        return addr.teredo[1]
    return addr


@functools.lru_cache(maxsize=4096)  # every request's host is checked: parsing was most of it
def _parse_ip(ip: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(ip.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def hostname_blocked_reason(host: str) -> str | None:
    """Refuse well-known cloud metadata names before any lookup."""
    name = host.strip().rstrip(".").lower()
    if name in METADATA_HOSTNAMES or name.endswith(".metadata.google.internal"):
        return f"{host} is a cloud metadata hostname"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses a probe may connect to."""

    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_setting(cls, value: str | None) -> AddressPolicy:
        """Parse PROBE_ALLOW_NETWORKS, e.g. "127.0.0.0/8, ::1/128"; ValueError on a bad entry."""
        nets: list[IPNetwork] = []
        for raw in (value or "").replace(";", ",").split(","):
            entry = raw.strip()
            if not entry:
                continue
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(f"invalid network in allow-list: {entry!r}") from exc
        return cls(tuple(nets))

    def _allowed(self, addr: IPAddress) -> bool:
        return any(addr.version == net.version and addr in net for net in self.allow_networks)

    def blocked_reason(self, ip: str) -> str | None:
        """None when a probe may connect to ``ip``, else why not."""
        return _blocked_reason(self, ip)

    def is_always_blocked(self, ip: str) -> bool:
        reason = self.blocked_reason(ip)
        return reason is not None and reason.endswith("always blocked")


# A sweep checks the same few addresses thousands of times (every request and every new
# connection); parsing and range-matching each took a tenth of a millisecond. The answer
# depends only on the (frozen) policy and the address string, so it is safe to remember.
@functools.lru_cache(maxsize=4096)
def _blocked_reason(policy: AddressPolicy, ip: str) -> str | None:
    original = _parse_ip(ip)
    if original is None:
        return hostname_blocked_reason(ip) or f"{ip!r} is not an IP address"
    addr = _normalise(original)
    shown = f"{original}" if addr == original else f"{original} (carries {addr})"
    for reason, nets in _ALWAYS_BLOCKED:
        if addr == _IPV6_LOOPBACK:
            break  # ::1 sits inside reserved ::/8 but is plain loopback
        if any(addr.version == n.version and addr in n for n in nets):
            return f"{shown} is a {reason}; always blocked"
    for reason, nets in _ALLOW_LIST_ONLY:
        if any(addr.version == n.version and addr in n for n in nets):
            if policy._allowed(addr):
                return None
            return f"{shown} is a {reason}, not in PROBE_ALLOW_NETWORKS"
    if not addr.is_global and not policy._allowed(addr):
        return f"{shown} is not a public address"
    return None


@dataclass(frozen=True)
class FetchLimits:
    deadline_s: float = 10.0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    max_body_bytes: int = 1_048_576
    max_header_bytes: int = 65_536
    max_redirects: int = 5
    excerpt_bytes: int = 1024


@dataclass(frozen=True)
class TlsInfo:
    not_after: datetime | None
    subject: str
    issuer: str
    verified: bool
    verify_error: str | None


@dataclass(frozen=True)
class FetchResult:
    url: str
    final_url: str
    status_code: int | None
    headers: tuple[tuple[str, str], ...]
    body: bytes
    elapsed_ms: float
    redirects: tuple[str, ...]
    peer_ip: str | None
    error_code: str | None
    error: str | None
    excerpt_bytes: int = 1024

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitive."""
        key = name.lower()
        return next((v for k, v in self.headers if k == key), None)

    def header_all(self, name: str) -> list[str]:
        key = name.lower()
        return [v for k, v in self.headers if k == key]

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def excerpt(self) -> str:
        return self.body[: self.excerpt_bytes].decode("utf-8", errors="replace")


class ProbeBlocked(OSError):
    """Raised inside the resolver so aiohttp never opens the connection."""


class _BodyTooLarge(Exception):
    pass


class _HeadersTooLarge(Exception):
    pass


class _PolicyResolver(AbstractResolver):
    """getaddrinfo once per new connection, then keep only addresses the policy allows."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        if reason := hostname_blocked_reason(host):
            raise ProbeBlocked(reason)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        results: list[ResolveResult] = []
        refused: list[str] = []
        for fam, _, proto, _, sockaddr in infos:
            ip = str(sockaddr[0])
            reason = self._policy.blocked_reason(ip)
            if reason is not None:
                if self._policy.is_always_blocked(ip):
                    raise ProbeBlocked(f"{host} resolves to {reason}")
                refused.append(reason)
                continue
            results.append(
                ResolveResult(
                    hostname=host,
                    host=ip.split("%", 1)[0],
                    port=int(sockaddr[1]),
                    family=fam,
                    proto=proto,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            )
        if not results:
            detail = refused[0] if refused else "no addresses"
            raise ProbeBlocked(f"{host} resolves to {detail}")
        return results

    async def close(self) -> None:
        return None


class _BoundedDecoder:
    """Incremental gzip/deflate decoding that never produces more than ``cap`` bytes."""

    def __init__(self, encoding: str, cap: int) -> None:
        self._encoding = encoding
        self._cap = cap
        self._d: zlib._Decompress | None = None  # type: ignore[name-defined]
        self.out = bytearray()
        self._pending = b""

    def feed(self, data: bytes) -> None:
        if self._d is None:
            if self._encoding == "deflate":
                data = self._pending + data
                if len(data) < 2:
                    self._pending = data
                    return
                # "deflate" is zlib-wrapped by the spec, raw in practice: sniff the header.
                zlib_header = (
                    len(data) >= 2 and data[0] & 0x0F == 8 and ((data[0] << 8 | data[1]) % 31 == 0)
                )
                self._d = zlib.decompressobj(15 if zlib_header else -15)
            else:
                self._d = zlib.decompressobj(47)  # gzip or zlib, auto-detected
        buf = data
        while buf and not self._d.eof:
            room = self._cap + 1 - len(self.out)  # always >= 1: 0 would mean "unlimited"
            self.out += self._d.decompress(buf, room)
            if len(self.out) > self._cap:
                raise _BodyTooLarge
            buf = self._d.unconsumed_tail

    def finish(self) -> None:
        if self._d is None:
            if self._pending:
                raise zlib.error("compressed body ended early")
            return
        if not self._d.eof:
            raise zlib.error("compressed body ended early")


def _error_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        chain.append(cur)
        stack.extend([cur.__cause__, cur.__context__])
        for attr in ("os_error", "certificate_error"):
            inner = getattr(cur, attr, None)
            if isinstance(inner, BaseException):
                stack.append(inner)
    return chain


def classify_error(exc: BaseException) -> tuple[str, str]:
    """Map any exception raised while fetching to (error_code, explanation)."""
    chain = _error_chain(exc)

    def find(*types: type[BaseException]) -> BaseException | None:
        return next((e for e in chain if isinstance(e, types)), None)

    if (e := find(ProbeBlocked)) is not None:
        return "ssrf_blocked", f"refused by probe address policy: {e}"
    if (e := find(_HeadersTooLarge)) is not None:
        return "headers_too_large", str(e)
    if find(LineTooLong) is not None or any(
        isinstance(e, BadHttpMessage) and "too many headers" in str(e).lower() for e in chain
    ):
        return "headers_too_large", "response header block exceeds the header size limit"
    if find(TimeoutError, asyncio.TimeoutError) is not None:
        return "timeout", "no complete response within the time limit"
    if (e := find(ssl.SSLCertVerificationError)) is not None:
        msg = getattr(e, "verify_message", None) or str(e)
        return "tls_invalid", f"TLS certificate rejected: {msg}"
    if (e := find(ssl.SSLError, aiohttp.ClientSSLError)) is not None:
        return "tls_invalid", f"TLS handshake failed: {e}"
    if (e := find(socket.gaierror, aiohttp.ClientConnectorDNSError)) is not None:
        return "dns_error", f"name resolution failed: {e}"
    if find(ConnectionResetError, BrokenPipeError, aiohttp.ServerDisconnectedError) is not None:
        return "connection_reset", "the server closed or reset the connection mid-response"
    if (e := find(aiohttp.InvalidURL)) is not None:
        return "invalid_url", f"invalid URL: {e}"
    if (e := find(aiohttp.ClientConnectorError, ConnectionError)) is not None:
        return "connect_error", f"could not connect: {e}"
    if (e := find(zlib.error)) is not None:
        return "decompression_error", f"could not decode compressed body: {e}"
    if (e := find(HttpProcessingError, aiohttp.ClientResponseError)) is not None:
        return "protocol_error", f"malformed HTTP response: {getattr(e, 'message', e)}"
    if (e := find(aiohttp.ClientPayloadError)) is not None:
        return "protocol_error", f"malformed or incomplete body: {e}"
    if (e := find(OSError)) is not None:
        return "connect_error", f"network error: {e}"
    return "protocol_error", f"unexpected failure: {type(exc).__name__}: {exc}"


def _check_url(raw: str) -> tuple[URL | None, str | None]:
    try:
        url = URL(raw)
    except (ValueError, TypeError) as exc:
        return None, f"not a valid URL: {exc}"
    if url.scheme not in ("http", "https"):
        return None, f"only http and https URLs can be probed, not {url.scheme or 'no scheme'!r}"
    if not url.host:
        return None, "URL has no host"
    if url.user is not None or url.password is not None:
        return None, "credentials in probe URLs are not supported"
    try:
        url.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return None, f"bad port: {exc}"
    return url, None


def _check_host(url: URL, policy: AddressPolicy) -> str | None:
    """Literal IPs skip aiohttp's resolver, so check them (and metadata names) here."""
    host = url.host or ""
    if reason := hostname_blocked_reason(host):
        return reason
    if _parse_ip(host) is not None:
        return policy.blocked_reason(host)
    return None


def _peer_ip(resp: aiohttp.ClientResponse) -> str | None:
    # A small response can be complete (and its connection back in the pool) before we look,
    # so fall back to the protocol the response was read from.
    conn = resp.connection
    protocol = conn.protocol if conn is not None else getattr(resp, "_protocol", None)
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return None
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if peer else None


def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _name(name: x509.Name) -> str:
    return name.rfc4514_string()


class _Turns:
    """At most `n` holders at a time; waiters get their turn in the order they asked, the
    turn handed straight from the one leaving. (asyncio.Semaphore is FIFO too, but each
    release rescans the waiters already woken and not yet running: with thousands waiting,
    a sweep spent ~0.2 s of CPU there.)"""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._leave()  # handed a turn just as it was cancelled: pass it on
            raise  # a cancelled waiter stays queued, done, and is skipped

    async def __aexit__(self, *exc_info: object) -> None:
        self._leave()

    def _leave(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


class Fetcher:
    """One aiohttp session per Fetcher; use as ``async with Fetcher(policy) as f``.

    At most ``max_connections`` requests are in flight; the rest wait their turn, first
    come first served, before their deadline starts. So when many checks are started at
    once, every check's first request goes out before any check's follow-up requests (a
    latency sample, a redirect's next check): a target that hangs starts its deadline early
    instead of behind thousands of quick requests.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        limits: FetchLimits = FetchLimits(),
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
    ) -> None:
        self.policy = policy
        self.limits = limits
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._turns = _Turns(max_connections)

    async def __aenter__(self) -> Self:
        if self._ssl_context is None:
            self._ssl_context = _default_ssl_context()
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            resolver=_PolicyResolver(self.policy),
            use_dns_cache=False,
            ssl=self._ssl_context,
        )
        field_cap = self.limits.max_header_bytes  # one big CSP or cookie header is legitimate
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.limits.connect_timeout_s,
                sock_read=self.limits.read_timeout_s,
            ),
            max_line_size=field_cap,
            max_field_size=field_cap,
            max_headers=128,
            raise_for_status=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _session_or_raise(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the Fetcher as an async context manager")
        return self._session

    async def fetch(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
    ) -> FetchResult:
        """Fetch ``url`` within the limits; every failure is reported, never raised."""
        session = self._session_or_raise()
        state = _FetchState(url=url, final_url=url)
        async with self._turns:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.limits.deadline_s):
                    await self._fetch_hops(session, state, method, headers, follow_redirects)
            except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
                if state.error_code is None:
                    state.error_code, state.error = classify_error(exc)
            return state.result(started, self.limits.excerpt_bytes)

    async def _fetch_hops(
        self,
        session: aiohttp.ClientSession,
        state: _FetchState,
        method: str,
        extra_headers: Mapping[str, str] | None,
        follow_redirects: bool,
    ) -> None:
        send_headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
        for key, value in (extra_headers or {}).items():
            if key.lower() not in ("host", "accept-encoding", "content-length"):
                send_headers[key] = value
        send_headers["Accept-Encoding"] = "identity"

        current = state.url
        hops = 0
        while True:
            state.final_url, state.peer_ip = current, None
            parsed, problem = _check_url(current)
            if parsed is None:
                state.fail("invalid_url", f"{current}: {problem}")
                return
            if reason := _check_host(parsed, self.policy):
                state.fail("ssrf_blocked", f"refused by probe address policy: {reason}")
                return
            async with session.request(
                method,
                parsed,
                headers=send_headers,
                allow_redirects=False,
            ) as resp:
                state.peer_ip = _peer_ip(resp)
                header_bytes = sum(len(k) + len(v) + 4 for k, v in resp.raw_headers)
                if header_bytes > self.limits.max_header_bytes:
                    raise _HeadersTooLarge(
                        f"response headers are {header_bytes} bytes, over the "
                        f"{self.limits.max_header_bytes}-byte limit"
                    )
                location = resp.headers.get("Location")
                if follow_redirects and resp.status in _REDIRECT_STATUSES and location:
                    hops += 1
                    try:
                        target = resp.url.join(URL(location))
                    except (ValueError, TypeError):
                        state.fail("invalid_url", f"unusable redirect Location {location!r}")
                        return
                    state.redirects.append(str(target))
                    if hops > self.limits.max_redirects:
                        state.final_url = str(target)
                        state.fail(
                            "too_many_redirects",
                            f"more than {self.limits.max_redirects} redirects",
                        )
                        return
                    if resp.status == 303 or (
                        resp.status in (301, 302) and method.upper() == "POST"
                    ):
                        method = "GET"
                    current = str(target)
                    resp.close()
                    continue
                state.status_code = resp.status
                state.headers = tuple(
                    (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in resp.raw_headers
                )
                await self._read_body(resp, state)
                return

    async def _read_body(self, resp: aiohttp.ClientResponse, state: _FetchState) -> None:
        cap = self.limits.max_body_bytes
        encoding = (resp.headers.get("Content-Encoding") or "").strip().lower()
        decoder = (
            _BoundedDecoder("deflate" if encoding == "deflate" else "gzip", cap)
            if encoding in ("gzip", "x-gzip", "deflate")
            else None
        )
        raw = bytearray()
        raw_seen = 0
        try:
            async for chunk in resp.content.iter_any():
                if decoder is not None:
                    raw_seen += len(chunk)
                    if raw_seen > cap:
                        raise _BodyTooLarge
                    try:
                        decoder.feed(chunk)
                    except zlib.error as exc:
                        state.fail(
                            "decompression_error", f"could not decode {encoding} body: {exc}"
                        )
                        return
                else:
                    raw += chunk
                    if len(raw) > cap:
                        raise _BodyTooLarge
            if decoder is not None:
                try:
                    decoder.finish()
                except zlib.error as exc:
                    state.fail("decompression_error", f"could not decode {encoding} body: {exc}")
                    return
        except _BodyTooLarge:
            state.fail("body_too_large", f"response body is larger than {cap} bytes")
            resp.close()
            return
        finally:
            state.body = bytes(decoder.out[:cap] if decoder is not None else raw[:cap])

    async def fetch_tls_info(self, url: str) -> TlsInfo | FetchResult:
        """Read the server certificate of an https URL, then verify it in a second handshake."""
        async with self._turns:
            return await self._fetch_tls_info(url)

    async def _fetch_tls_info(self, url: str) -> TlsInfo | FetchResult:
        state = _FetchState(url=url, final_url=url)
        started = time.perf_counter()
        parsed, problem = _check_url(url)
        if parsed is None or parsed.scheme != "https":
            state.fail("invalid_url", problem or "TLS checks need an https:// URL")
            return state.result(started, self.limits.excerpt_bytes)
        host = parsed.host or ""
        port = parsed.port or 443
        verifying = self._ssl_context or _default_ssl_context()
        try:
            async with asyncio.timeout(self.limits.deadline_s):
                ip = await self._resolve_checked(host, port)
                state.peer_ip = ip
                der = await self._handshake(ip, port, host, _no_verify_context())
                if der is None:
                    state.fail("tls_invalid", "server presented no certificate")
                    return state.result(started, self.limits.excerpt_bytes)
                cert = x509.load_der_x509_certificate(der)
                verify_error: str | None = None
                try:
                    await self._handshake(ip, port, host, verifying)
                except ssl.SSLCertVerificationError as exc:
                    verify_error = exc.verify_message or str(exc)
                except ssl.SSLError as exc:
                    verify_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - the contract is "never raises"
            state.error_code, state.error = classify_error(exc)
            return state.result(started, self.limits.excerpt_bytes)
        return TlsInfo(
            not_after=cert.not_valid_after_utc,
            subject=_name(cert.subject),
            issuer=_name(cert.issuer),
            verified=verify_error is None,
            verify_error=verify_error,
        )

    async def _resolve_checked(self, host: str, port: int) -> str:
        if reason := hostname_blocked_reason(host):
            raise ProbeBlocked(reason)
        if _parse_ip(host) is not None:
            if reason := self.policy.blocked_reason(host):
                raise ProbeBlocked(reason)
            return host.strip("[]")
        results = await _PolicyResolver(self.policy).resolve(host, port)
        return results[0]["host"]

    async def _handshake(
        self, ip: str, port: int, host: str, context: ssl.SSLContext
    ) -> bytes | None:
        sni = None if _parse_ip(host) is not None else host
        async with asyncio.timeout(self.limits.connect_timeout_s + self.limits.read_timeout_s):
            _, writer = await asyncio.open_connection(
                ip,
                port,
                ssl=context,
                server_hostname=sni or ip,
                ssl_handshake_timeout=self.limits.connect_timeout_s,
            )
        try:
            sslobj = writer.get_extra_info("ssl_object")
            return sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        finally:
            writer.transport.abort()


def _no_verify_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass
class _FetchState:
    url: str
    final_url: str
    status_code: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    peer_ip: str | None = None
    error_code: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        self.redirects: list[str] = []

    def fail(self, code: str, message: str) -> None:
        if self.error_code is None:
            self.error_code, self.error = code, message

    def result(self, started: float, excerpt_bytes: int) -> FetchResult:
        return FetchResult(
            url=self.url,
            final_url=self.final_url,
            status_code=self.status_code,
            headers=self.headers,
            body=self.body,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
            redirects=tuple(self.redirects),
            peer_ip=self.peer_ip,
            error_code=self.error_code,
            error=self.error,
            excerpt_bytes=excerpt_bytes,
        )
