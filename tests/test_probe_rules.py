"""Probe checks: address policy, each check's decision logic, and a few real local round trips.

Decision tests build FetchResult objects directly. End-to-end tests run a small aiohttp
server on 127.0.0.1 (ephemeral port) and never send traffic anywhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta

import pytest
import trustme
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus_text

from tests.probe_targets import _METRICS_BODY
from webapp.probes import metrics_scan, rules
from webapp.probes.fetch import (
    ERROR_CODES,
    AddressPolicy,
    Fetcher,
    FetchLimits,
    FetchResult,
    TlsInfo,
)
from webapp.probes.rules import (
    CHECK_KINDS,
    OUTCOMES,
    CheckResult,
    judge_correlation_id,
    judge_deep_health,
    judge_health,
    judge_https,
    judge_latency,
    judge_metrics,
    judge_security_headers,
    judge_tls_expiry,
    run_check,
    run_checks,
)

LOOPBACK = AddressPolicy.from_setting("127.0.0.0/8")
LIMITS = FetchLimits(deadline_s=2.0)
URL = "https://svc.example.com/health"
GOOD_SECURITY_HEADERS = (
    ("content-security-policy", "default-src 'self'; frame-ancestors 'none'"),
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)


def response(
    status: int | None = 200,
    body: bytes | str = b"",
    headers: tuple[tuple[str, str], ...] | dict[str, str] = (),
    *,
    url: str = URL,
    error_code: str | None = None,
    elapsed_ms: float = 12.0,
) -> FetchResult:
    if isinstance(body, str):
        body = body.encode()
    if isinstance(headers, dict):
        headers = tuple(headers.items())
    return FetchResult(
        url=url,
        final_url=url,
        status_code=status,
        headers=tuple((k.lower(), v) for k, v in headers),
        body=body,
        elapsed_ms=elapsed_ms,
        redirects=(),
        peer_ip="203.0.113.7",
        error_code=error_code,
        error=f"simulated {error_code}" if error_code else None,
    )


def jbody(doc) -> bytes:
    return json.dumps(doc).encode()


# ---------------------------------------------------------------- address policy

ALWAYS_BLOCKED = [
    "169.254.169.254",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
    "fe80::1",
    "fe80::1%eth0",
    "fd00:ec2::254",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "255.255.255.255",
    "240.0.0.1",
]


@pytest.mark.parametrize("ip", ALWAYS_BLOCKED)
def test_always_blocked_even_when_allow_list_covers_it(ip):
    everything = AddressPolicy.from_setting("0.0.0.0/0, ::/0")
    assert AddressPolicy().blocked_reason(ip) is not None
    assert everything.blocked_reason(ip) is not None


@pytest.mark.parametrize(
    ("ip", "allow", "blocked"),
    [
        ("10.0.0.1", None, True),
        ("10.0.0.1", "10.0.0.0/8", False),
        ("::ffff:10.0.0.1", "10.0.0.0/8", False),
        ("172.16.5.4", None, True),
        ("192.168.1.1", None, True),
        ("100.64.0.1", None, True),
        ("fd12:3456::1", None, True),
        ("fd12:3456::1", "fc00::/7", False),
        ("127.0.0.1", None, True),
        ("127.0.0.1", "127.0.0.0/8", False),
        ("127.0.0.1", "10.0.0.0/8", True),
        ("::ffff:127.0.0.1", "127.0.0.0/8", False),
        ("::1", None, True),
        ("::1", "::1/128", False),
        ("8.8.8.8", None, False),
        ("2606:4700:4700::1111", None, False),
        ("64:ff9b::808:808", None, False),  # NAT64 of 8.8.8.8
        ("64:ff9b::a00:1", None, True),  # NAT64 of 10.0.0.1
        ("not-an-ip", None, True),
    ],
)
def test_policy_table(ip, allow, blocked):
    policy = AddressPolicy.from_setting(allow)
    assert (policy.blocked_reason(ip) is not None) is blocked


def test_policy_reason_names_the_carried_ipv4():
    reason = AddressPolicy().blocked_reason("::ffff:169.254.169.254")
    assert "169.254.169.254" in reason and "link-local" in reason


def test_allow_list_setting_parses_and_rejects_junk():
    policy = AddressPolicy.from_setting(" 127.0.0.0/8, ::1/128 ,")
    assert [str(n) for n in policy.allow_networks] == ["127.0.0.0/8", "::1/128"]
    assert AddressPolicy.from_setting(None) == AddressPolicy()
    with pytest.raises(ValueError, match="nonsense"):
        AddressPolicy.from_setting("127.0.0.0/8, nonsense")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Refuse, and fail the test on, any connection attempt that is not to 127.0.0.1."""
    attempts: list[object] = []

    def guard(original):
        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
                attempts.append(address)
                raise PermissionError(f"test refused a connection to {address!r}")
            return original(sock, address)

        return connect

    monkeypatch.setattr(socket.socket, "connect", guard(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(socket.socket.connect_ex))
    yield
    assert attempts == [], f"probe tried to connect beyond loopback: {attempts}"


@pytest.fixture
def no_network(monkeypatch, loopback_only):
    """Record (and refuse) every lookup or connection attempt."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network used: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/",
    ],
)
def test_blocked_targets_are_refused_before_any_connection(no_network, url):
    async def main():
        async with Fetcher(AddressPolicy(), LIMITS) as fetcher:
            return await fetcher.fetch(url), await fetcher.fetch_tls_info(
                url.replace("http:", "https:")
            )

    fetched, tls = asyncio.run(main())
    assert fetched.error_code == "ssrf_blocked" and fetched.status_code is None
    assert isinstance(tls, FetchResult) and tls.error_code == "ssrf_blocked"
    assert no_network == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "file:///etc/passwd", "http://", "junk"])
def test_non_http_urls_are_invalid(no_network, url):
    async def main():
        async with Fetcher(LOOPBACK, LIMITS) as fetcher:
            return await fetcher.fetch(url)

    assert asyncio.run(main()).error_code == "invalid_url"


# ---------------------------------------------------------------- FetchResult helpers


def test_fetch_result_header_access_and_excerpt():
    fetched = response(
        headers=(("set-cookie", "a=1"), ("Content-Type", "text/plain"), ("set-cookie", "b=2")),
        body=b"\xff" + b"x" * 5000,
    )
    assert fetched.header("CONTENT-TYPE") == "text/plain"
    assert fetched.header_all("Set-Cookie") == ["a=1", "b=2"]
    assert fetched.header("missing") is None
    assert fetched.ok
    assert len(fetched.excerpt()) == 1024 and fetched.excerpt().startswith("\ufffd")
    assert "timeout" in ERROR_CODES and not response(error_code="timeout").ok


# ---------------------------------------------------------------- health, readiness


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, jbody({"status": "pass"}), "pass"),
        (200, jbody({"status": "UP"}), "pass"),
        (204, b"", "pass"),
        (301, b"", "pass"),
        (200, jbody({"status": "warn"}), "warn"),
        (200, jbody({"status": "degraded"}), "warn"),
        (200, jbody({"status": "fail"}), "fail"),
        (200, jbody({"status": "DOWN"}), "fail"),
        (200, jbody({"status": "unhealthy"}), "fail"),
        (200, jbody({"status": "mystery"}), "warn"),
        (200, b"OK", "pass"),
        (200, b"\xff\xfe{not utf-8", "pass"),
        (200, b"{broken json", "pass"),
        (200, b"[" * 200_000, "pass"),  # deeply nested: must not blow the stack
        (200, jbody(["a", "list"]), "pass"),
        (500, jbody({"status": "pass"}), "fail"),
        (503, b"down for maintenance", "fail"),
        (404, b"", "fail"),
    ],
)
@pytest.mark.parametrize("kind", ["health", "readiness"])
def test_health_decision(kind, status, body, outcome):
    result = judge_health(kind, URL, response(status, body))
    assert result.outcome == outcome, result.explanation
    assert result.kind == kind and result.status_code == status and result.error_code is None
    if outcome == "fail" and body:
        assert result.details["excerpt"]


@pytest.mark.parametrize(
    ("content_type", "body", "error_code"),
    [
        ("application/json", b'{"status": "pass", "note": "caf\xe9"}', "invalid_utf8"),
        ("application/health+json; charset=utf-8", b"\xff\xfe{not utf-8", "invalid_utf8"),
        ("application/json", b"{broken json", "invalid_json"),
        ("application/vnd.health+json", b"[" * 200_000, "invalid_json"),  # too deep to parse
        ("application/json", b"   ", "invalid_json"),
    ],
)
def test_health_declaring_json_that_is_not_json_is_a_warning_with_a_code(content_type, body, error_code):
    result = judge_health("health", URL, response(200, body, {"Content-Type": content_type}))
    assert (result.outcome, result.error_code) == ("warn", error_code), result.explanation
    assert "declaring JSON" in result.explanation
    assert result.details["content_type"] == content_type and "excerpt" in result.details


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/jsonp"])
def test_health_plain_text_answer_is_fine(content_type):
    result = judge_health("health", URL, response(200, b"\xff\xfe OK", {"Content-Type": content_type}))
    assert (result.outcome, result.error_code) == ("pass", None)


def test_health_fetch_error_is_error_with_code():
    result = judge_health("health", URL, response(None, error_code="timeout"))
    assert (result.outcome, result.error_code) == ("error", "timeout")
    assert "timeout" in result.explanation


def test_health_failure_excerpt_is_raw_and_bounded():
    body = b"<script>alert(1)</script>" + b"A" * 5000
    result = judge_health("health", URL, response(500, body))
    assert result.details["excerpt"].startswith("<script>")  # escaping is the template's job
    assert len(result.details["excerpt"]) <= 1024
    assert len(json.dumps(result.details)) <= rules.MAX_DETAILS_BYTES


# ---------------------------------------------------------------- deep health


@pytest.mark.parametrize(
    ("doc", "outcome", "mentions"),
    [
        (
            {
                "status": "pass",
                "checks": {
                    "db:connections": [{"status": "pass"}],
                    "cache:responseTime": [{"status": "pass"}],
                },
            },
            "pass",
            "2 dependency",
        ),
        (
            {
                "status": "pass",
                "checks": {"db": [{"status": "pass"}], "queue": [{"status": "fail"}]},
            },
            "fail",
            "queue",
        ),
        (
            {"status": "UP", "components": {"db": {"status": "UP"}, "redis": {"status": "DOWN"}}},
            "fail",
            "redis",
        ),
        ({"status": "UP", "components": {"db": {"status": "UP"}}}, "pass", "all passing"),
        ({"status": "UP", "details": {"db": {"status": "OUT_OF_SERVICE"}}}, "fail", "db"),
        ({"status": "pass", "checks": {"db": [{"status": "warn"}]}}, "warn", "degraded"),
        ({"status": "pass"}, "warn", "shallow"),
        ({"status": "pass", "checks": {}}, "warn", "shallow"),
        ({"status": "fail", "checks": {"db": [{"status": "pass"}]}}, "fail", "fail"),
    ],
)
def test_deep_health_decision(doc, outcome, mentions):
    result = judge_deep_health(URL, response(200, jbody(doc)))
    assert result.outcome == outcome, result.explanation
    assert mentions in result.explanation


def test_deep_health_plain_text_looks_shallow():
    assert judge_deep_health(URL, response(200, "OK")).outcome == "warn"


def test_deep_health_same_as_shallow_url_warns():
    doc = {"status": "pass", "checks": {"db": [{"status": "pass"}]}}
    result = judge_deep_health(URL, response(200, jbody(doc)), shallow_url=URL + "/")
    assert result.outcome == "warn" and "same as the shallow" in result.explanation


def test_deep_health_huge_dependency_report_stays_bounded():
    doc = {"status": "pass", "checks": {f"dep{i}": [{"status": "pass"}] for i in range(5000)}}
    result = judge_deep_health(URL, response(200, jbody(doc)))
    assert result.outcome == "pass"
    assert result.details["dependency_count"] == 5000
    assert len(json.dumps(result.details)) <= rules.MAX_DETAILS_BYTES


# ---------------------------------------------------------------- metrics


def full_metrics() -> bytes:
    registry = CollectorRegistry()
    Counter("http_requests_total", "requests", ["code"], registry=registry).labels("200").inc()
    Histogram("http_request_duration_seconds", "latency", registry=registry).observe(0.02)
    ProcessCollector(registry=registry)
    return generate_latest(registry)


def test_metrics_with_red_and_process_pass():
    result = judge_metrics(URL, response(200, full_metrics()))
    assert result.outcome == "pass", result.explanation
    assert result.details["family_count"] >= 3
    assert result.details["request_rate_metrics"] == [
        "http_request_duration_seconds",
        "http_requests",
    ]
    assert result.details["duration_metrics"] == ["http_request_duration_seconds"]
    assert result.details["process_metric_count"] >= 1


@pytest.mark.parametrize(
    "counter",
    [
        "# TYPE http_requests_total counter\nhttp_requests_total 5\n",
        "# TYPE http_requests counter\nhttp_requests 5\n",
        "# TYPE api_requests counter\napi_requests_total 5\n",
    ],
)
def test_metrics_counter_names_with_and_without_total(counter):
    text = (
        counter
        + "# TYPE rpc_latency_seconds summary\nrpc_latency_seconds_count 1\n"
        + "rpc_latency_seconds_sum 0.1\n"
        + "# TYPE process_open_fds gauge\nprocess_open_fds 9\n"
    )
    result = judge_metrics(URL, response(200, text))
    assert result.outcome == "pass", result.explanation


def test_metrics_without_red_or_process_warns():
    result = judge_metrics(URL, response(200, "# TYPE queue_depth gauge\nqueue_depth 3\n"))
    assert result.outcome == "warn"
    assert len(result.details["missing"]) == 3
    assert "http_requests_total" in result.explanation


def test_metrics_without_process_metrics_warns():
    text = full_metrics().decode()
    text = "\n".join(line for line in text.splitlines() if "process_" not in line) + "\n"
    result = judge_metrics(URL, response(200, text))
    assert result.outcome == "warn" and result.details["missing"] == ["process_* metrics"]


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (200, "<!doctype html><html><body>Metrics dashboard</body></html>", "not Prometheus"),
        (200, "", "no metric families"),
        (200, b"\xff\xfe\x00garbage", "not UTF-8"),
        (404, "not found", "HTTP 404"),
        (302, "", "HTTP 302"),
    ],
)
def test_metrics_failures(status, body, why):
    result = judge_metrics(URL, response(status, body))
    assert result.outcome == "fail" and why in result.explanation
    if body:
        assert "excerpt" in result.details


def _parsed_families(text: str):
    """What prometheus_client's Prometheus text parser makes of a page, in the scanner's
    terms, or None where it refuses the page."""
    try:
        return [(family.name, family.type, tuple(sample.name for sample in family.samples))
                for family in parse_prometheus_text(text)]
    except Exception:  # noqa: BLE001 - it raises assorted errors on junk
        return None


METRICS_LINES = [
    "# HELP http_requests_total requests", "# TYPE http_requests_total counter",
    'http_requests_total{code="200"} 5', 'http_requests_total{code="500",path="/a b,}"} 1 1700000000000',
    "http_requests_created 1.7e9", "# TYPE api_requests counter", "api_requests_total 3", "api_requests 3",
    "# TYPE rpc_seconds summary", 'rpc_seconds{quantile="0.5"} 0.1', "rpc_seconds_count 4", "rpc_seconds_sum 0.4",
    "# TYPE lat_seconds histogram", 'lat_seconds_bucket{le="+Inf"} 2', "lat_seconds_count 2", "lat_seconds_sum NaN",
    "# TYPE up gauge", "up 1", "up{} 1", "# HELP up", "# HELP up the \"doc\" \\ here", "# a comment",
    "#comment", "# TYPE  up gauge", "# TYPE up gauge extra", "# TYPE up bogus", "# TYPE up untyped",
    "# TYPE _total counter", "_total 1", "# HELP", "# TYPE", '# "quoted" HELP', "up  1", "up\t1", "up 1_000",
    "up 1 2 3", "up +Inf", "up -1e-3", "up 0x10", "up{a=\"1\",a=\"2\"} 1", 'up{__name__="x"} 1',
    'up{__x="1"} 1', 'up{a="1",} 1', 'up{a="\\n"} 1', 'up{a="1"}1', "up # exemplar", "   ", "",
    "process_open_fds 9", "process:cpu_seconds_total 2", "9up 1", "up{a-b=\"1\"} 1", "up\x0c1",
]


def test_metrics_scan_gives_the_parsers_families():
    """The cheap scanner either gives exactly the parser's families or stands aside (None)
    for the full parsers; it never accepts a page the parser refuses."""
    import random

    pages = [full_metrics().decode(), _METRICS_BODY.decode(), ""]
    chooser = random.Random(17)
    pages += ["\n".join(chooser.choices(METRICS_LINES, k=chooser.randint(1, 12))) for _ in range(3000)]
    scanned_some = False
    for page in pages:
        scanned = metrics_scan.scan(page)
        if scanned is not None:
            scanned_some = True
            assert [tuple(family) for family in scanned] == _parsed_families(page), page
    assert scanned_some
    assert metrics_scan.scan(full_metrics().decode()) is not None  # real pages take the cheap path
    assert metrics_scan.scan(_METRICS_BODY.decode()) is not None


def test_metrics_truncated_body_is_parsed_up_to_the_limit():
    fetched = response(200, full_metrics() + b"partial_line 1", error_code="body_too_large")
    result = judge_metrics(URL, fetched)
    assert result.outcome == "warn" and "truncated" in result.explanation
    assert result.error_code is None


# ---------------------------------------------------------------- https


def https_ok(hsts: str | None = "max-age=31536000; includeSubDomains") -> FetchResult:
    headers = {"strict-transport-security": hsts} if hsts else {}
    return response(200, "ok", headers, url="https://svc.example.com/")


def http_redirect(location: str = "https://svc.example.com/", status: int = 301) -> FetchResult:
    return response(status, "", {"location": location}, url="http://svc.example.com/")


@pytest.mark.parametrize(
    ("https", "http", "outcome", "mentions"),
    [
        (https_ok(), http_redirect(), "pass", "redirects to HTTPS"),
        (https_ok(), http_redirect(status=308), "pass", "HSTS max-age 31536000"),
        (https_ok("max-age=15552000"), http_redirect(), "pass", "15552000"),
        (https_ok("max-age=86400"), http_redirect(), "warn", "under 180 days"),
        (https_ok(None), http_redirect(), "fail", "Strict-Transport-Security"),
        (https_ok("includeSubDomains"), http_redirect(), "fail", "Strict-Transport-Security"),
        (https_ok(), response(200, "plain", url="http://svc.example.com/"), "fail", "instead"),
        (https_ok(), http_redirect("http://svc.example.com/login"), "fail", "not to HTTPS"),
        (
            https_ok(),
            response(None, error_code="connect_error", url="http://svc.example.com/"),
            "pass",
            "does not answer",
        ),
    ],
)
def test_https_decision(https, http, outcome, mentions):
    result = judge_https("https://svc.example.com/", https, http)
    assert result.outcome == outcome, result.explanation
    assert mentions in result.explanation


def test_https_with_invalid_certificate_fails():
    bad = response(None, error_code="tls_invalid", url="https://svc.example.com/")
    result = judge_https("https://svc.example.com/", bad, http_redirect())
    assert (result.outcome, result.error_code) == ("fail", "tls_invalid")


def test_https_not_answering_is_error():
    down = response(None, error_code="timeout", url="https://svc.example.com/")
    assert judge_https("https://svc.example.com/", down, http_redirect()).outcome == "error"


# ---------------------------------------------------------------- TLS expiry

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def tls(days_left: float, *, verified: bool = True, error: str | None = None) -> TlsInfo:
    return TlsInfo(
        not_after=NOW + timedelta(days=days_left),
        subject="CN=svc.example.com",
        issuer="CN=Example CA",
        verified=verified,
        verify_error=error,
    )


@pytest.mark.parametrize(
    ("days", "outcome"), [(365, "pass"), (30.5, "pass"), (29, "warn"), (14.5, "warn"), (13, "fail")]
)
def test_tls_expiry_thresholds(days, outcome):
    result = judge_tls_expiry(URL, tls(days), now=NOW)
    assert result.outcome == outcome
    assert result.details["not_after"] == (NOW + timedelta(days=days)).isoformat()
    assert result.details["days_left"] == round(days, 1)


@pytest.mark.parametrize(
    "error",
    ["certificate has expired", "Hostname mismatch, certificate is not valid for 'x'"],
)
def test_tls_invalid_chain_or_name_fails_but_reports_expiry(error):
    result = judge_tls_expiry(URL, tls(200, verified=False, error=error), now=NOW)
    assert result.outcome == "fail" and error in result.explanation
    assert result.details["not_after"] and result.details["verified"] is False


def test_tls_fetch_failure_is_error():
    result = judge_tls_expiry(URL, response(None, error_code="connect_error"), now=NOW)
    assert (result.outcome, result.error_code) == ("error", "connect_error")


# ---------------------------------------------------------------- security headers


def points(result: CheckResult) -> dict[str, int]:
    lost: dict[str, int] = {}
    for line in result.details["headers"]:
        lost[line["header"]] = lost.get(line["header"], 0) + line["points"]
    return lost


def test_security_headers_full_marks():
    result = judge_security_headers(URL, response(200, "", GOOD_SECURITY_HEADERS))
    assert (result.outcome, result.details["score"]) == ("pass", 100)
    assert all(v == 0 for v in points(result).values())


def test_security_headers_all_missing_on_https():
    result = judge_security_headers(URL, response(200, "hello"))
    assert result.details["score"] == 100 - 25 - 20 - 5 - 20 - 5
    assert result.outcome == "fail" and "excerpt" in result.details
    assert points(result)["content-security-policy"] == -25
    assert points(result)["strict-transport-security"] == -20


def test_security_headers_hsts_not_counted_over_plain_http():
    headers = [h for h in GOOD_SECURITY_HEADERS if h[0] != "strict-transport-security"]
    result = judge_security_headers(
        URL, response(200, "", tuple(headers), url="http://svc.example.com/")
    )
    assert result.details["score"] == 100


def test_security_headers_unsafe_inline_and_x_frame_options():
    headers = (
        ("content-security-policy", "default-src 'self'; script-src 'self' 'unsafe-inline'"),
        ("strict-transport-security", "max-age=31536000"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "SAMEORIGIN"),
    )
    result = judge_security_headers(URL, response(200, "", headers))
    assert result.details["score"] == 100 - 10 - 5
    assert result.outcome == "warn"


def test_security_headers_cookies_lose_points_per_missing_attribute():
    headers = GOOD_SECURITY_HEADERS + (
        ("set-cookie", "session=abc; Path=/"),
        ("set-cookie", "pref=1; Secure; HttpOnly; SameSite=Lax"),
    )
    result = judge_security_headers(URL, response(200, "", headers))
    assert result.details["score"] == 85 and result.outcome == "warn"
    assert points(result)["set-cookie"] == -15
    assert "session" in result.explanation or "set-cookie" in result.explanation


def test_security_headers_huge_header_values_keep_details_bounded():
    headers = (("content-security-policy", "default-src " + "x" * 20_000),) + tuple(
        ("set-cookie", f"c{i}={'v' * 500}") for i in range(200)
    )
    result = judge_security_headers(URL, response(200, "", headers))
    assert len(json.dumps(result.to_json())) < 6000


# ---------------------------------------------------------------- correlation id

SENT = "preflight-1234"


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ({"x-request-id": SENT}, "pass"),
        ({"x-correlation-id": SENT}, "pass"),
        ({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "pass"),
        ({"x-request-id": "server-made-its-own"}, "fail"),
        ({}, "fail"),
    ],
)
def test_correlation_id_decision(headers, outcome):
    result = judge_correlation_id(URL, response(200, "", headers), SENT)
    assert result.outcome == outcome
    assert result.details["sent_request_id"] == SENT


# ---------------------------------------------------------------- latency


@pytest.mark.parametrize(
    ("timings", "outcome", "median"),
    [
        ([100.0, 900.0, 200.0], "pass", 200.0),
        ([250.0, 299.0, 5000.0], "pass", 299.0),
        ([300.0, 500.0, 999.0], "warn", 500.0),
        ([1000.0, 1200.0, 50.0], "fail", 1000.0),
    ],
)
def test_latency_median(timings, outcome, median):
    samples = [response(200, "ok", elapsed_ms=t) for t in timings]
    result = judge_latency(URL, samples)
    assert result.outcome == outcome
    assert result.details["samples_ms"] == timings
    assert result.details["median_ms"] == median


def test_latency_with_a_failed_sample_is_error():
    samples = [response(200, "ok"), response(None, error_code="timeout", elapsed_ms=2000.0)]
    result = judge_latency(URL, samples)
    assert (result.outcome, result.error_code) == ("error", "timeout")


# ---------------------------------------------------------------- run_check plumbing


class ExplodingFetcher:
    async def fetch(self, url, **kwargs):
        raise RuntimeError("boom")

    async def fetch_tls_info(self, url):
        raise RuntimeError("boom")


@pytest.mark.parametrize("kind", CHECK_KINDS)
def test_run_check_never_raises(kind):
    result = asyncio.run(run_check(kind, URL, ExplodingFetcher()))
    assert result.outcome == "error" and "boom" in result.explanation


def test_run_check_unknown_kind_is_error():
    result = asyncio.run(run_check("astrology", URL, ExplodingFetcher()))
    assert result.outcome == "error" and "unknown" in result.explanation


def test_check_result_to_json_shape():
    result = judge_health("health", URL, response(200, jbody({"status": "pass"})))
    data = result.to_json()
    assert set(data) == {
        "kind",
        "url",
        "outcome",
        "error_code",
        "duration_ms",
        "status_code",
        "explanation",
        "details",
    }
    assert data["outcome"] in OUTCOMES
    json.dumps(data)


# ---------------------------------------------------------------- end to end on 127.0.0.1


def build_app() -> web.Application:
    metrics_body = full_metrics()

    async def health(request):
        return web.json_response({"status": "pass"})

    async def failing_health(request):
        return web.json_response({"status": "fail"})

    async def deep(request):
        return web.json_response({"status": "pass", "checks": {"db": [{"status": "pass"}]}})

    async def metrics(request):
        return web.Response(body=metrics_body, content_type="text/plain")

    async def headers(request):
        return web.Response(text="hi", headers=dict(GOOD_SECURITY_HEADERS))

    async def echo(request):
        return web.Response(text="ok", headers={"X-Request-ID": request.headers["X-Request-ID"]})

    async def silent(request):
        return web.Response(text="ok")

    async def gzipped(request):
        assert request.headers["Accept-Encoding"] == "identity"
        return web.Response(body=gzip.compress(b"squeezed"), headers={"Content-Encoding": "gzip"})

    async def to_metadata(request):
        raise web.HTTPFound(request.query.get("to", "http://169.254.169.254/latest/meta-data/"))

    async def hang(request):
        await asyncio.sleep(30)
        return web.Response(text="too late")

    app = web.Application()
    for path, handler in [
        ("/health", health),
        ("/failing", failing_health),
        ("/deep", deep),
        ("/metrics", metrics),
        ("/headers", headers),
        ("/echo", echo),
        ("/silent", silent),
        ("/gzip", gzipped),
        ("/to-metadata", to_metadata),
        ("/hang", hang),
    ]:
        app.router.add_get(path, handler)
    return app


@contextlib.asynccontextmanager
async def local_server(app: web.Application, ssl_context: ssl.SSLContext | None = None):
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def run_against_local(check, **fetcher_kwargs):
    async def main():
        async with (
            local_server(build_app()) as base,
            Fetcher(LOOPBACK, LIMITS, **fetcher_kwargs) as fetcher,
        ):
            return await check(base, fetcher)

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("kind", "path", "outcome"),
    [
        ("health", "/health", "pass"),
        ("readiness", "/failing", "fail"),
        ("deep_health", "/deep", "pass"),
        ("deep_health", "/health", "warn"),
        ("metrics", "/metrics", "pass"),
        ("metrics", "/headers", "fail"),
        ("security_headers", "/headers", "pass"),
        ("correlation_id", "/echo", "pass"),
        ("correlation_id", "/silent", "fail"),
        ("latency", "/health", "pass"),
    ],
)
def test_checks_end_to_end(kind, path, outcome):
    result = run_against_local(lambda base, f: run_check(kind, base + path, f))
    assert result.outcome == outcome, result.explanation
    assert result.status_code == 200 and result.duration_ms > 0
    if kind == "latency":
        assert len(result.details["samples_ms"]) == 3


def test_fetch_end_to_end_reports_peer_and_decodes_unwanted_gzip():
    fetched = run_against_local(lambda base, f: f.fetch(base + "/gzip"))
    assert fetched.ok and fetched.body == b"squeezed" and fetched.peer_ip == "127.0.0.1"


@pytest.mark.parametrize(
    "to", ["http://169.254.169.254/latest/meta-data/", "http://[::ffff:169.254.169.254]/"]
)
def test_redirect_to_metadata_is_blocked(to):
    fetched = run_against_local(lambda base, f: f.fetch(f"{base}/to-metadata?to={to}"))
    assert fetched.error_code == "ssrf_blocked"
    assert len(fetched.redirects) == 1


def test_run_checks_keeps_order_and_a_hanging_target_does_not_hold_up_others():
    async def sweep(base, fetcher):
        targets = [("health", base + "/hang")] + [("health", base + "/health")] * 8
        targets.append(("metrics", base + "/metrics"))
        started = time.perf_counter()
        results = await run_checks(targets, fetcher, concurrency=3)
        return results, time.perf_counter() - started

    results, seconds = run_against_local(sweep)
    assert [r.outcome for r in results] == ["error"] + ["pass"] * 9
    assert results[0].error_code == "timeout"
    assert results[-1].kind == "metrics"
    assert seconds < LIMITS.deadline_s + 1.0


# ---------------------------------------------------------------- TLS end to end


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_server_context(ca: trustme.CA, **cert_kwargs) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", **cert_kwargs).configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def run_tls(ca, server_context, check):
    async def main():
        https_app = build_app()

        async def hsts_redirect(request):
            raise web.HTTPMovedPermanently(https_base + request.path)

        http_app = web.Application()
        http_app.router.add_get("/{tail:.*}", hsts_redirect)
        async with (
            local_server(https_app, server_context) as https_base,
            local_server(http_app) as http_base,
            Fetcher(LOOPBACK, LIMITS, ssl_context=client_context(ca)) as fetcher,
        ):
            return await check(https_base, http_base, fetcher)

    return asyncio.run(main())


def test_tls_expiry_and_https_pass_with_valid_cert(ca):
    async def check(https_base, http_base, fetcher):
        return (
            await run_check("tls_expiry", https_base + "/health", fetcher),
            await run_check("https", https_base + "/headers", fetcher, http_url=http_base + "/"),
            await fetcher.fetch(https_base + "/health"),
        )

    expiry, https, fetched = run_tls(ca, tls_server_context(ca), check)
    assert expiry.outcome == "pass", expiry.explanation
    assert expiry.details["verified"] is True and expiry.details["not_after"]
    assert https.outcome == "pass", https.explanation
    assert fetched.ok and fetched.status_code == 200


def test_tls_expiry_warns_near_expiry(ca):
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=20)
    context = tls_server_context(ca, not_after=not_after)

    async def check(https_base, http_base, fetcher):
        return await run_check("tls_expiry", https_base + "/", fetcher)

    result = run_tls(ca, context, check)
    assert result.outcome == "warn" and result.details["not_after"] == not_after.isoformat()


def test_expired_cert_fails_tls_expiry_with_not_after_and_fetch_is_tls_invalid(ca):
    now = datetime.now(UTC).replace(microsecond=0)
    expired_at = now - timedelta(days=3)
    context = tls_server_context(ca, not_before=now - timedelta(days=90), not_after=expired_at)

    async def check(https_base, http_base, fetcher):
        return (
            await run_check("tls_expiry", https_base + "/health", fetcher),
            await fetcher.fetch(https_base + "/health"),
        )

    expiry, fetched = run_tls(ca, context, check)
    assert expiry.outcome == "fail"
    assert expiry.details["not_after"] == expired_at.isoformat()
    assert expiry.details["verified"] is False and "expired" in expiry.details["verify_error"]
    assert fetched.error_code == "tls_invalid"


def test_untrusted_cert_fails_but_still_reports_subject(ca):
    other_ca = trustme.CA()

    async def check(https_base, http_base, fetcher):
        return await run_check("tls_expiry", https_base + "/", fetcher)

    result = run_tls(ca, tls_server_context(other_ca), check)
    assert result.outcome == "fail" and result.details["not_after"]
    assert "verify" in result.explanation
