"""Probe checks: one function per kind, each turning fetched responses into pass/warn/fail.

The ``judge_*`` functions are pure (responses in, CheckResult out) so the decisions are
unit-testable; the ``check_*`` coroutines do the fetching and hand over to them.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from yarl import URL

from webapp.probes import metrics_scan
from webapp.probes.fetch import Fetcher, FetchResult, TlsInfo

OUTCOMES = ("pass", "warn", "fail", "error")
CHECK_KINDS = (
    "health",
    "readiness",
    "deep_health",
    "metrics",
    "https",
    "tls_expiry",
    "security_headers",
    "correlation_id",
    "latency",
    "runbook_link",
)

MAX_DETAILS_BYTES = 4096
METRICS_PARSE_BYTES = 256 * 1024
INLINE_METRICS_BYTES = 4096  # parsed on the event loop; larger pages go to a thread
EXCERPT_CHARS = 1024
_MAX_DETAIL_STR = 300
_MAX_DETAIL_ITEMS = 20

HSTS_MIN_MAX_AGE = 15_552_000  # 180 days
TLS_WARN_DAYS = 30
TLS_FAIL_DAYS = 14
LATENCY_PASS_MS = 300.0
LATENCY_WARN_MS = 1000.0
SECURITY_PASS_SCORE = 90
SECURITY_WARN_SCORE = 70

# health+json (draft-inadarei-api-health-check) plus Spring Boot / Elasticsearch spellings.
_STATUS_WORDS = {
    "pass": "pass",
    "ok": "pass",
    "up": "pass",
    "healthy": "pass",
    "ready": "pass",
    "green": "pass",
    "warn": "warn",
    "warning": "warn",
    "degraded": "warn",
    "yellow": "warn",
    "fail": "fail",
    "failed": "fail",
    "failure": "fail",
    "down": "fail",
    "error": "fail",
    "unhealthy": "fail",
    "out_of_service": "fail",
    "red": "fail",
}
_RANK = {"pass": 0, "warn": 1, "fail": 2, "error": 3}


@dataclass(frozen=True)
class CheckResult:
    kind: str
    url: str
    outcome: str
    explanation: str
    error_code: str | None = None
    status_code: int | None = None
    duration_ms: float = 0.0
    details: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Bounded once, here, whoever builds the result: storing it no longer bounds it
        # again (a JSON encoding per result, thousands per sweep).
        object.__setattr__(self, "details", bounded_details(self.details))

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "url": self.url,
            "outcome": self.outcome,
            "error_code": self.error_code,
            "duration_ms": self.duration_ms,
            "status_code": self.status_code,
            "explanation": self.explanation,
            "details": self.details,
        }


# --- shared helpers ------------------------------------------------------------------------


def _clip(value: Any) -> Any:
    """Make a details value JSON-safe and small: short strings, short lists, plain types."""
    if isinstance(value, str):
        return value if len(value) <= _MAX_DETAIL_STR else value[: _MAX_DETAIL_STR - 1] + "…"
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        items = list(value.items())[:_MAX_DETAIL_ITEMS]
        return {str(k)[:100]: _clip(v) for k, v in items}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clip(v) for v in list(value)[:_MAX_DETAIL_ITEMS]]
    if isinstance(value, datetime):
        return value.isoformat()
    return _clip(str(value))


def bounded_details(details: dict) -> dict:
    """Clip details to at most MAX_DETAILS_BYTES of JSON, trimming the excerpt first."""
    excerpt = details.get("excerpt")
    clipped = {k: _clip(v) for k, v in details.items() if k != "excerpt"}
    if isinstance(excerpt, str):
        clipped["excerpt"] = excerpt[:EXCERPT_CHARS]
    while len(json.dumps(clipped)) > MAX_DETAILS_BYTES:
        current = clipped.get("excerpt")
        if isinstance(current, str) and current:
            clipped["excerpt"] = current[: len(current) // 2]
            continue
        # Still too big without an excerpt: drop the largest remaining entry.
        largest = max(clipped, key=lambda k: len(json.dumps(clipped[k])))
        clipped[largest] = "(omitted: too large)"
        if all(v == "(omitted: too large)" for v in clipped.values()):
            break
    return clipped


def _result(
    kind: str,
    url: str,
    outcome: str,
    explanation: str,
    *,
    fetched: FetchResult | None = None,
    error_code: str | None = None,
    details: dict | None = None,
    duration_ms: float | None = None,
) -> CheckResult:
    details = dict(details or {})
    if fetched is not None and outcome in ("fail", "error") and fetched.body:
        details.setdefault("excerpt", fetched.excerpt()[:EXCERPT_CHARS])
    return CheckResult(
        kind=kind,
        url=url,
        outcome=outcome,
        explanation=explanation,
        error_code=error_code or (fetched.error_code if fetched and outcome == "error" else None),
        status_code=fetched.status_code if fetched is not None else None,
        duration_ms=round(duration_ms if duration_ms is not None else _elapsed(fetched), 3),
        details=details,
    )


def _elapsed(fetched: FetchResult | None) -> float:
    return fetched.elapsed_ms if fetched is not None else 0.0


def _error_result(kind: str, url: str, fetched: FetchResult, what: str = "") -> CheckResult:
    prefix = f"{what}: " if what else ""
    details = {"final_url": fetched.final_url}
    if fetched.redirects:
        details["redirects"] = list(fetched.redirects)
    return _result(
        kind,
        url,
        "error",
        f"{prefix}{fetched.error or fetched.error_code}",
        fetched=fetched,
        details=details,
    )


def _worst(*outcomes: str) -> str:
    return max(outcomes, key=_RANK.__getitem__)


def _is_success(status: int | None) -> bool:
    return status is not None and 200 <= status <= 399


def _parse_json(body: bytes) -> tuple[Any, str | None]:
    """(document, None) or (None, why it is not JSON); never raises on hostile bodies."""
    if not body.strip():
        return None, "empty body"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None, "body is not UTF-8 text"
    try:
        return json.loads(text), None
    except (ValueError, RecursionError):
        return None, "body is not JSON"


def _declares_json(fetched: FetchResult) -> bool:
    """application/json, application/health+json or any other +json media type."""
    media = (fetched.header("content-type") or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def status_word(value: Any) -> str | None:
    """Map a reported health status (``"UP"``, ``"pass"``, ``True``…) to pass/warn/fail."""
    if isinstance(value, bool):
        return "pass" if value else "fail"
    if not isinstance(value, str):
        return None
    return _STATUS_WORDS.get(value.strip().lower().replace("-", "_").replace(" ", "_"))


def _https_form(url: str) -> str:
    parsed = URL(url)
    if parsed.scheme == "https":
        return url
    port = None if parsed.explicit_port in (None, 80) else parsed.explicit_port
    return str(parsed.with_scheme("https").with_port(port))


def _http_form(url: str) -> str:
    parsed = URL(url)
    if parsed.scheme == "http":
        return url
    port = None if parsed.explicit_port in (None, 443) else parsed.explicit_port
    return str(parsed.with_scheme("http").with_port(port))


# --- health, readiness, deep health ---------------------------------------------------------


def judge_health(kind: str, url: str, fetched: FetchResult) -> CheckResult:
    """2xx/3xx in time, and a JSON ``status`` (if any) that does not say fail."""
    if not fetched.ok:
        return _error_result(kind, url, fetched)
    status = fetched.status_code
    details: dict[str, Any] = {"status_code": status}
    if not _is_success(status):
        return _result(
            kind, url, "fail", f"answered HTTP {status}", fetched=fetched, details=details
        )
    doc, not_json = _parse_json(fetched.body)
    if not_json is not None and _declares_json(fetched):
        # It says JSON but is not: a monitor parsing it would choke, so say so.
        details["content_type"] = fetched.header("content-type")
        details["excerpt"] = fetched.excerpt()[:EXCERPT_CHARS]
        not_utf8 = not_json == "body is not UTF-8 text"
        return _result(
            kind,
            url,
            "warn",
            f"answered HTTP {status} declaring JSON, but the {not_json.removeprefix('body ')}",
            fetched=fetched,
            error_code="invalid_utf8" if not_utf8 else "invalid_json",
            details=details,
        )
    if not_json is not None:
        details["note"] = f"{not_json}; a plain-text health answer is fine"
        return _result(
            kind, url, "pass", f"answered HTTP {status}", fetched=fetched, details=details
        )
    if not isinstance(doc, dict) or "status" not in doc:
        details["note"] = "JSON body without a top-level status field"
        return _result(
            kind, url, "pass", f"answered HTTP {status}", fetched=fetched, details=details
        )
    reported = doc["status"]
    details["reported_status"] = reported if isinstance(reported, str | bool) else str(reported)
    word = status_word(reported)
    if word == "fail":
        return _result(
            kind,
            url,
            "fail",
            f"answered HTTP {status} but reports status {reported!r}",
            fetched=fetched,
            details=details,
        )
    if word == "warn":
        return _result(
            kind,
            url,
            "warn",
            f"reports degraded status {reported!r}",
            fetched=fetched,
            details=details,
        )
    if word is None:
        return _result(
            kind,
            url,
            "warn",
            f"answered HTTP {status} with an unrecognised status {reported!r}",
            fetched=fetched,
            details=details,
        )
    return _result(
        kind,
        url,
        "pass",
        f"answered HTTP {status}, status {reported!r}",
        fetched=fetched,
        details=details,
    )


def _dependency_report(doc: Any) -> tuple[str, Any] | None:
    if not isinstance(doc, dict):
        return None
    for key in ("checks", "components", "details", "dependencies"):
        value = doc.get(key)
        if isinstance(value, dict | list) and value:
            return key, value
    return None


def _dependency_statuses(report: Any) -> dict[str, Any]:
    """Name -> reported status for health+json ``checks``, Spring ``components``, lists."""
    statuses: dict[str, Any] = {}
    if isinstance(report, dict):
        for name, entry in report.items():
            items = entry if isinstance(entry, list) else [entry]
            for index, item in enumerate(items):
                label = str(name) if len(items) == 1 else f"{name}[{index}]"
                statuses[label] = item.get("status") if isinstance(item, dict) else item
    else:
        for index, item in enumerate(report):
            if isinstance(item, dict):
                label = str(item.get("name") or item.get("componentId") or index)
                statuses[label] = item.get("status", item.get("state"))
            else:
                statuses[str(index)] = item
    return statuses


def judge_deep_health(
    url: str, fetched: FetchResult, *, shallow_url: str | None = None
) -> CheckResult:
    """As health, plus a dependency report in which nothing fails."""
    base = judge_health("deep_health", url, fetched)
    if base.outcome in ("error", "fail"):
        return base
    details = dict(base.details)
    doc, _ = _parse_json(fetched.body)
    found = _dependency_report(doc)
    if found is None:
        details["note"] = "no checks/components/details mapping in the response"
        return _result(
            "deep_health",
            url,
            "warn",
            "deep health answers but reports no dependency checks; it looks shallow",
            fetched=fetched,
            details=details,
        )
    key, report = found
    statuses = _dependency_statuses(report)
    words = {name: status_word(value) for name, value in statuses.items()}
    failing = sorted(name for name, word in words.items() if word == "fail")
    degraded = sorted(name for name, word in words.items() if word == "warn")
    unknown = sorted(name for name, word in words.items() if word is None)
    details.update(
        report_key=key,
        dependencies={name: _clip(value) for name, value in statuses.items()},
        dependency_count=len(statuses),
    )
    outcome = base.outcome
    if failing:
        return _result(
            "deep_health",
            url,
            "fail",
            f"dependencies failing: {', '.join(failing)}",
            fetched=fetched,
            details=details,
        )
    notes = []
    if degraded:
        outcome = _worst(outcome, "warn")
        notes.append(f"degraded: {', '.join(degraded)}")
    if unknown:
        outcome = _worst(outcome, "warn")
        notes.append(f"no recognisable status: {', '.join(unknown)}")
    if shallow_url and shallow_url.rstrip("/") == url.rstrip("/"):
        outcome = _worst(outcome, "warn")
        notes.append("deep health URL is the same as the shallow health URL")
    explanation = f"{len(statuses)} dependency check(s) reported"
    if notes:
        explanation += "; " + "; ".join(notes)
    elif outcome == "pass":
        explanation += ", all passing"
    return _result("deep_health", url, outcome, explanation, fetched=fetched, details=details)


# --- metrics ------------------------------------------------------------------------------

_RATE_NAME = re.compile(r"(^|_)requests?(_total)?$")
_DURATION_HINT = re.compile(r"duration|latency")


def _families(text: str, content_type: str) -> list[metrics_scan.Family]:
    """Name, type and sample names of each family: scanned when the page is plain
    Prometheus text (most are), else from the full parsers, Prometheus text first unless
    the page says it is OpenMetrics."""
    openmetrics = content_type.startswith("application/openmetrics-text")
    scanned = None if openmetrics else metrics_scan.scan(text)
    if scanned is not None:
        return scanned
    first, second = parse_prometheus, parse_openmetrics
    if openmetrics:
        first, second = second, first
    try:
        parsed = list(first(text))
    except Exception:  # noqa: BLE001 - the parsers raise assorted errors on junk
        parsed = list(second(text))
    return [metrics_scan.Family(family.name, family.type, tuple(sample.name for sample in family.samples))
            for family in parsed]


def judge_metrics(url: str, fetched: FetchResult) -> CheckResult:
    """Prometheus text that parses, with RED (rate, duration) and process metrics."""
    truncated = fetched.error_code == "body_too_large" and _is_success(fetched.status_code)
    if not fetched.ok and not truncated:
        return _error_result("metrics", url, fetched)
    status = fetched.status_code
    details: dict[str, Any] = {"status_code": status}
    if not (status is not None and 200 <= status <= 299):
        return _result(
            "metrics",
            url,
            "fail",
            f"metrics answered HTTP {status}",
            fetched=fetched,
            details=details,
        )
    body = fetched.body
    if truncated or len(body) > METRICS_PARSE_BYTES:
        # Parsing is CPU-bound (~0.35 s per MiB, holding the GIL), so a flood of huge
        # metrics pages would stall the sweep: judge on a whole-line prefix instead.
        body = body[:METRICS_PARSE_BYTES]
        body = body[: body.rfind(b"\n") + 1]
        details["note"] = f"large body; parsed the first {METRICS_PARSE_BYTES // 1024} KiB only"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return _result(
            "metrics",
            url,
            "fail",
            "metrics body is not UTF-8 text",
            fetched=fetched,
            details=details,
        )
    try:
        families = _families(text, (fetched.header("content-type") or "").lower())
    except Exception as exc:  # noqa: BLE001
        details["parse_error"] = str(exc)
        return _result(
            "metrics",
            url,
            "fail",
            "response is not Prometheus/OpenMetrics text",
            fetched=fetched,
            details=details,
        )
    if not families:
        return _result(
            "metrics",
            url,
            "fail",
            "no metric families exposed",
            fetched=fetched,
            details=details,
        )
    rate, duration, process = [], [], []
    for family in families:
        name = family.name
        sample_names = set(family.sample_names)
        if name.startswith("process_"):
            process.append(name)
        if family.type in ("counter", "unknown", "untyped") and (
            _RATE_NAME.search(name) or any(_RATE_NAME.search(s) for s in sample_names)
        ):
            rate.append(name)
        if family.type in ("histogram", "summary", "gaugehistogram") and (
            _DURATION_HINT.search(name) or ("request" in name and name.endswith("_seconds"))
        ):
            duration.append(name)
            if "request" in name:  # a request histogram's _count gives the rate too
                rate.append(name)
    details.update(
        family_count=len(families),
        request_rate_metrics=sorted(set(rate)),
        duration_metrics=sorted(set(duration)),
        process_metric_count=len(process),
        process_metrics=sorted(process)[:10],
    )
    missing = []
    if not rate:
        missing.append("a request counter (e.g. http_requests_total)")
    if not duration:
        missing.append("a request duration histogram/summary (e.g. *_duration_seconds)")
    if not process:
        missing.append("process_* metrics")
    details["missing"] = missing
    outcome = "warn" if missing or truncated else "pass"
    explanation = f"{len(families)} metric families"
    if missing:
        explanation += "; missing " + ", ".join(missing)
    elif truncated:
        explanation += " (body truncated at the size limit)"
    else:
        explanation += " including request rate, duration and process metrics"
    return _result("metrics", url, outcome, explanation, fetched=fetched, details=details)


# --- https and TLS ------------------------------------------------------------------------

_MAX_AGE = re.compile(r'(?:^|;)\s*max-age\s*=\s*"?(\d+)"?\s*(?:;|$)', re.IGNORECASE)


def hsts_max_age(value: str | None) -> int | None:
    if not value:
        return None
    match = _MAX_AGE.search(value)
    return int(match.group(1)) if match else None


def judge_https(
    url: str, https_fetched: FetchResult, http_fetched: FetchResult | None
) -> CheckResult:
    """HTTPS answers, plain HTTP redirects to HTTPS, HSTS with max-age of 180 days or more."""
    details: dict[str, Any] = {"https_url": https_fetched.url}
    if not https_fetched.ok:
        if https_fetched.error_code == "tls_invalid":
            details["error"] = https_fetched.error
            return _result(
                "https",
                url,
                "fail",
                f"HTTPS certificate problem: {https_fetched.error}",
                fetched=https_fetched,
                details=details,
                error_code="tls_invalid",
            )
        return _error_result("https", url, https_fetched, "HTTPS form did not answer")
    if URL(https_fetched.final_url).scheme != "https":
        details["final_url"] = https_fetched.final_url
        return _result(
            "https",
            url,
            "fail",
            "the HTTPS URL redirects to plain HTTP",
            fetched=https_fetched,
            details=details,
        )
    outcome, notes = "pass", []
    details["https_status"] = https_fetched.status_code

    if http_fetched is not None:
        details["http_url"] = http_fetched.url
        location = http_fetched.header("location")
        if not http_fetched.ok:
            details["http"] = f"no plain-HTTP answer ({http_fetched.error_code})"
            notes.append("plain HTTP does not answer")
        elif http_fetched.status_code in (301, 302, 303, 307, 308) and location:
            target = URL(http_fetched.url).join(URL(location))
            details["http_redirect"] = {"status": http_fetched.status_code, "location": location}
            if target.scheme != "https":
                outcome = "fail"
                notes.append(f"plain HTTP redirects to {location!r}, not to HTTPS")
            else:
                notes.append("plain HTTP redirects to HTTPS")
        else:
            outcome = "fail"
            details["http_status"] = http_fetched.status_code
            notes.append(f"plain HTTP answers {http_fetched.status_code} instead of redirecting")

    hsts = https_fetched.header("strict-transport-security")
    max_age = hsts_max_age(hsts)
    details["hsts"] = hsts
    details["hsts_max_age"] = max_age
    if max_age is None:
        outcome = "fail"
        notes.append("no valid Strict-Transport-Security header")
    elif max_age < HSTS_MIN_MAX_AGE:
        outcome = _worst(outcome, "warn")
        notes.append(f"HSTS max-age {max_age}s is under 180 days")
    else:
        notes.append(f"HSTS max-age {max_age}s")
    return _result("https", url, outcome, "; ".join(notes), fetched=https_fetched, details=details)


def judge_tls_expiry(
    url: str, info: TlsInfo | FetchResult, *, now: datetime | None = None, duration_ms: float = 0.0
) -> CheckResult:
    """Fail on an invalid chain or under 14 days left, warn under 30."""
    if isinstance(info, FetchResult):
        return _error_result("tls_expiry", url, info)
    now = now or datetime.now(UTC)
    details: dict[str, Any] = {
        "not_after": info.not_after.isoformat() if info.not_after else None,
        "subject": info.subject,
        "issuer": info.issuer,
        "verified": info.verified,
    }
    days_left = None
    if info.not_after is not None:
        days_left = (info.not_after - now).total_seconds() / 86400
        details["days_left"] = round(days_left, 1)
    if not info.verified:
        details["verify_error"] = info.verify_error
        return _result(
            "tls_expiry",
            url,
            "fail",
            f"certificate does not verify: {info.verify_error}",
            details=details,
            duration_ms=duration_ms,
        )
    if days_left is None:
        return _result(
            "tls_expiry",
            url,
            "error",
            "certificate has no expiry date",
            details=details,
            duration_ms=duration_ms,
        )
    when = info.not_after.date().isoformat() if info.not_after else "?"
    if days_left < TLS_FAIL_DAYS:
        outcome = "fail"
    elif days_left < TLS_WARN_DAYS:
        outcome = "warn"
    else:
        outcome = "pass"
    return _result(
        "tls_expiry",
        url,
        outcome,
        f"certificate expires {when} ({days_left:.0f} days left)",
        details=details,
        duration_ms=duration_ms,
    )


# --- security headers ---------------------------------------------------------------------


def _csp_directives(csp: str) -> dict[str, str]:
    directives: dict[str, str] = {}
    for part in csp.split(";"):
        words = part.strip().split(None, 1)
        if words:
            directives.setdefault(words[0].lower(), words[1] if len(words) > 1 else "")
    return directives


def _cookie_name(set_cookie: str) -> str:
    return set_cookie.split("=", 1)[0].strip()[:60]


def judge_security_headers(url: str, fetched: FetchResult) -> CheckResult:
    """Observatory-style score from 100 down, one line per header."""
    if not fetched.ok:
        return _error_result("security_headers", url, fetched)
    is_https = URL(fetched.final_url).scheme == "https"
    lines: list[dict[str, Any]] = []

    def line(header: str, points: int, note: str) -> None:
        lines.append({"header": header, "points": points, "note": note})

    csp = fetched.header("content-security-policy")
    directives = _csp_directives(csp) if csp else {}
    if csp is None:
        line("content-security-policy", -25, "missing")
    else:
        script = directives.get("script-src", directives.get("default-src", ""))
        if "'unsafe-inline'" in script.lower():
            line("content-security-policy", -10, "allows 'unsafe-inline' scripts")
        else:
            line("content-security-policy", 0, "present")

    hsts = fetched.header("strict-transport-security")
    if not is_https:
        line("strict-transport-security", 0, "not applicable over plain HTTP")
    elif hsts_max_age(hsts) is None:
        line("strict-transport-security", -20, "missing")
    else:
        line("strict-transport-security", 0, "present")

    nosniff = (fetched.header("x-content-type-options") or "").strip().lower()
    if nosniff != "nosniff":
        line("x-content-type-options", -5, "missing" if not nosniff else f"is {nosniff!r}")
    else:
        line("x-content-type-options", 0, "nosniff")

    xfo = (fetched.header("x-frame-options") or "").strip().upper()
    if "frame-ancestors" in directives:
        line("frame-ancestors", 0, "set in CSP")
    elif xfo in ("DENY", "SAMEORIGIN"):
        line("x-frame-options", 0, xfo)
    else:
        line("x-frame-options", -20, "no CSP frame-ancestors and no X-Frame-Options")

    if fetched.header("referrer-policy"):
        line("referrer-policy", 0, "present")
    else:
        line("referrer-policy", -5, "missing")

    cookies = fetched.header_all("set-cookie")
    for attribute in ("Secure", "HttpOnly", "SameSite"):
        lacking = [
            _cookie_name(c)
            for c in cookies
            if not re.search(rf";\s*{attribute}\b", c, re.IGNORECASE)
        ]
        if lacking:
            line("set-cookie", -5, f"without {attribute}: {', '.join(lacking[:5])}")

    score = max(0, 100 + sum(item["points"] for item in lines))
    if score >= SECURITY_PASS_SCORE:
        outcome = "pass"
    elif score >= SECURITY_WARN_SCORE:
        outcome = "warn"
    else:
        outcome = "fail"
    lost = [f"{item['header']} ({item['points']})" for item in lines if item["points"]]
    explanation = f"security header score {score}/100"
    if lost:
        explanation += "; lost points: " + ", ".join(lost)
    details = {"score": score, "headers": lines, "status_code": fetched.status_code}
    return _result("security_headers", url, outcome, explanation, fetched=fetched, details=details)


# --- correlation id and latency -----------------------------------------------------------


def judge_correlation_id(url: str, fetched: FetchResult, sent_id: str) -> CheckResult:
    """Pass when our request id comes back, or the response carries a traceparent."""
    if not fetched.ok:
        return _error_result("correlation_id", url, fetched)
    echoed = {
        name: fetched.header(name)
        for name in ("x-request-id", "x-correlation-id")
        if fetched.header(name) is not None
    }
    traceparent = fetched.header("traceparent")
    details = {"sent_request_id": sent_id, "returned": echoed, "traceparent": traceparent}
    if sent_id in echoed.values():
        name = next(n for n, v in echoed.items() if v == sent_id)
        return _result(
            "correlation_id",
            url,
            "pass",
            f"request id echoed in {name}",
            fetched=fetched,
            details=details,
        )
    if traceparent:
        return _result(
            "correlation_id",
            url,
            "pass",
            "response carries a traceparent header",
            fetched=fetched,
            details=details,
        )
    if echoed:
        explanation = "returned a request id, but not the one sent"
    else:
        explanation = "no X-Request-ID/X-Correlation-ID echo and no traceparent"
    return _result("correlation_id", url, "fail", explanation, fetched=fetched, details=details)


def judge_latency(url: str, samples: list[FetchResult]) -> CheckResult:
    """Median of sequential health GETs: pass under 300 ms, warn under 1 s."""
    failed = next((s for s in samples if not s.ok), None)
    timings = [round(s.elapsed_ms, 1) for s in samples]
    total = sum(s.elapsed_ms for s in samples)
    if failed is not None or not samples:
        if failed is None:
            return _result("latency", url, "error", "no samples taken", duration_ms=total)
        result = _error_result("latency", url, failed)
        return _result(
            "latency",
            url,
            "error",
            result.explanation,
            fetched=failed,
            details={**result.details, "samples_ms": timings},
            duration_ms=total,
        )
    median = statistics.median(s.elapsed_ms for s in samples)
    statuses = [s.status_code for s in samples]
    details = {"samples_ms": timings, "median_ms": round(median, 1), "status_codes": statuses}
    if median < LATENCY_PASS_MS:
        outcome = "pass"
    elif median < LATENCY_WARN_MS:
        outcome = "warn"
    else:
        outcome = "fail"
    explanation = f"median {median:.0f} ms over {len(samples)} requests"
    if not all(_is_success(s) for s in statuses):
        explanation += f" (statuses {statuses})"
    return _result(
        "latency",
        url,
        outcome,
        explanation,
        fetched=samples[-1],
        details=details,
        duration_ms=total,
    )


# --- running ------------------------------------------------------------------------------


async def check_health(kind: str, url: str, fetcher: Fetcher) -> CheckResult:
    return judge_health(kind, url, await fetcher.fetch(url))


async def check_deep_health(url: str, fetcher: Fetcher, shallow_url: str | None) -> CheckResult:
    return judge_deep_health(url, await fetcher.fetch(url), shallow_url=shallow_url)


async def check_metrics(url: str, fetcher: Fetcher) -> CheckResult:
    fetched = await fetcher.fetch(url)
    if len(fetched.body) <= INLINE_METRICS_BYTES:
        return judge_metrics(url, fetched)  # ~1 ms: less than handing it to a thread
    # Parsing up to METRICS_PARSE_BYTES of text is CPU work; keep it off the event loop.
    return await asyncio.to_thread(judge_metrics, url, fetched)


async def check_https(url: str, fetcher: Fetcher, http_url: str | None) -> CheckResult:
    https_url = _https_form(url)
    plain_url = http_url or _http_form(url)
    https_fetched, http_fetched = await asyncio.gather(
        fetcher.fetch(https_url), fetcher.fetch(plain_url, follow_redirects=False)
    )
    return judge_https(url, https_fetched, http_fetched)


async def check_tls_expiry(url: str, fetcher: Fetcher, now: datetime | None) -> CheckResult:
    started = time.perf_counter()
    info = await fetcher.fetch_tls_info(_https_form(url))
    elapsed = (time.perf_counter() - started) * 1000
    return judge_tls_expiry(url, info, now=now, duration_ms=elapsed)


async def check_security_headers(url: str, fetcher: Fetcher) -> CheckResult:
    return judge_security_headers(url, await fetcher.fetch(url))


async def check_correlation_id(url: str, fetcher: Fetcher) -> CheckResult:
    sent_id = f"preflight-{uuid.uuid4()}"
    fetched = await fetcher.fetch(url, headers={"X-Request-ID": sent_id})
    return judge_correlation_id(url, fetched, sent_id)


async def check_latency(url: str, fetcher: Fetcher, samples: int = 3) -> CheckResult:
    results = []
    for _ in range(samples):
        fetched = await fetcher.fetch(url)
        results.append(fetched)
        if not fetched.ok:
            break
    return judge_latency(url, results)


HEALTH_GROUP = ("health", "correlation_id", "latency")


async def run_health_group(url: str, fetcher: Fetcher) -> list[CheckResult]:
    """The health, correlation-id and latency checks of one health URL from a single first
    request (it carries the X-Request-ID and is the first latency sample), then up to two
    more samples if it answered. A hanging health URL costs one hanging request instead of
    three, and a healthy one four requests instead of five. Never raises."""
    started = time.perf_counter()
    try:
        sent_id = f"preflight-{uuid.uuid4()}"
        first = await fetcher.fetch(url, headers={"X-Request-ID": sent_id})
        samples = [first]
        while len(samples) < 3 and samples[-1].ok:
            samples.append(await fetcher.fetch(url))
        return [judge_health("health", url, first), judge_correlation_id(url, first, sent_id),
                judge_latency(url, samples)]
    except Exception as exc:  # noqa: BLE001 - one broken check must not stop a sweep
        elapsed = (time.perf_counter() - started) * 1000
        return [_result(kind, url, "error", f"check failed internally: {type(exc).__name__}: {exc}",
                        duration_ms=elapsed) for kind in HEALTH_GROUP]


async def _runbook_link(url: str, fetcher: Fetcher) -> CheckResult:
    return judge_runbook_link(url, await fetcher.fetch(url))


def judge_runbook_link(url: str, fetched: FetchResult) -> CheckResult:
    """An external runbook must answer: any final status below 400 (a wiki's sign-in page
    still proves the page is there); an address probes may not reach is left unchecked."""
    if fetched.error_code == "ssrf_blocked":
        return _result("runbook_link", url, "warn",
                       "not checked: the runbook's address is not one probes may reach "
                       "(allow it with PROBE_ALLOW_NETWORKS)", error_code=fetched.error_code,
                       duration_ms=_elapsed(fetched))
    if fetched.error_code:
        return _error_result("runbook_link", url, fetched, "the runbook link")
    if fetched.status_code and fetched.status_code >= 400:
        return _result("runbook_link", url, "fail", f"the runbook link answered HTTP {fetched.status_code}",
                       fetched=fetched)
    return _result("runbook_link", url, "pass", f"the runbook link answers (HTTP {fetched.status_code})",
                   fetched=fetched)


async def run_check(
    kind: str,
    url: str,
    fetcher: Fetcher,
    *,
    now: datetime | None = None,
    shallow_url: str | None = None,
    http_url: str | None = None,
) -> CheckResult:
    """Run one check; never raises (a bug in a check becomes an ``error`` outcome)."""
    started = time.perf_counter()
    runners: dict[str, Callable[[], Awaitable[CheckResult]]] = {
        "health": lambda: check_health("health", url, fetcher),
        "readiness": lambda: check_health("readiness", url, fetcher),
        "deep_health": lambda: check_deep_health(url, fetcher, shallow_url),
        "metrics": lambda: check_metrics(url, fetcher),
        "https": lambda: check_https(url, fetcher, http_url),
        "tls_expiry": lambda: check_tls_expiry(url, fetcher, now),
        "security_headers": lambda: check_security_headers(url, fetcher),
        "correlation_id": lambda: check_correlation_id(url, fetcher),
        "latency": lambda: check_latency(url, fetcher),
        "runbook_link": lambda: _runbook_link(url, fetcher),
    }
    runner = runners.get(kind)
    if runner is None:
        return _result(kind, url, "error", f"unknown check kind {kind!r}")
    try:
        return await runner()
    except Exception as exc:  # noqa: BLE001 - one broken check must not stop a sweep
        elapsed = (time.perf_counter() - started) * 1000
        return _result(
            kind,
            url,
            "error",
            f"check failed internally: {type(exc).__name__}: {exc}",
            duration_ms=elapsed,
        )


async def run_checks(
    targets: Iterable[tuple[str, str]], fetcher: Fetcher, *, concurrency: int = 100
) -> list[CheckResult]:
    """Run many checks with bounded concurrency; results come back in input order."""
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(kind: str, url: str) -> CheckResult:
        async with gate:
            return await run_check(kind, url, fetcher)

    return list(await asyncio.gather(*(one(kind, url) for kind, url in targets)))
