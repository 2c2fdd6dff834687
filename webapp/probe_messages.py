"""What a probe result means to a person: a sentence they can act on, the raw error kept one
click away, and what to configure when a probe can never run."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from webapp.models import ProbeResult, Service
from webapp.probes.runs import RECORD_CHECKS, network_targets

# What each check kind needs configured on the service, in words for the settings page.
_NEEDS = {
    "health": "health URL",
    "readiness": "readiness URL",
    "deep_health": "deep health URL",
    "metrics": "metrics URL",
    "https": "base URL",
    "security_headers": "base URL",
    "tls_expiry": "https:// base URL",
    "correlation_id": "health URL or base URL",
    "latency": "health URL",
}

KIND_LABELS = {
    "health": "health", "readiness": "readiness", "deep_health": "deep health", "metrics": "metrics",
    "https": "HTTPS", "security_headers": "security headers", "tls_expiry": "TLS expiry",
    "correlation_id": "correlation ID", "latency": "latency", "runbook_present": "runbook",
    "oncall_present": "on-call",
}


@dataclass(frozen=True)
class ProbeMessage:
    sentence: str  # what happened and what to do, in plain words
    raw: str  # the error code and the fetcher's own text, for whoever debugs it


def _where(url: str) -> tuple[str, int | None]:
    try:
        parts = urlsplit(url or "")
        port = parts.port or {"https": 443, "http": 80}.get(parts.scheme.lower())
    except ValueError:
        return url or "the service", None
    return parts.hostname or "the service", port


def _tls_sentence(text: str, host: str, port: int | None) -> str:
    lowered = text.lower()
    if "wrong_version_number" in lowered or "http_request" in lowered or "record layer failure" in lowered:
        return (f"The server answered plain HTTP on an HTTPS request: is TLS enabled on port {port}? "
                "If the service only speaks HTTP there, make the URL start with http://.")
    if "expired" in lowered:
        return f"The TLS certificate of {host} has expired: renew it."
    if "self-signed" in lowered or "self signed" in lowered or "local issuer" in lowered:
        return (f"The TLS certificate of {host} is not signed by an authority Preflight trusts "
                "(self-signed or a missing intermediate certificate): serve the full chain.")
    if "hostname" in lowered or "match" in lowered:
        return f"The TLS certificate is not valid for the name {host}: it was issued for another name."
    return f"The TLS handshake with {host} failed: the certificate or the TLS setup was not accepted."


def _error_sentence(code: str, text: str, url: str) -> str:
    host, port = _where(url)
    sentences = {
        "timeout": (f"{host} did not answer within the probe's time limit. Is the service up, and is "
                    "it reachable from where Preflight runs?"),
        "dns_error": (f"The name {host} could not be resolved. Check its spelling, or whether the name "
                      "exists only inside a network Preflight cannot see."),
        "connect_error": (f"Nothing accepted a connection on {host} port {port}. Is the service running "
                          "and listening on that port?"),
        "body_too_large": ("The answer was larger than the probe reads; a health or metrics endpoint should "
                           "answer with a small document."),
        "headers_too_large": "The response headers were larger than the probe accepts.",
        "ssrf_blocked": ("Preflight's probe policy refuses this address. A private or loopback address can be "
                         "allowed by an admin (PROBE_ALLOW_NETWORKS); link-local and cloud metadata "
                         "addresses are always refused."),
        "too_many_redirects": "The URL redirected more than 5 times: point the probe at the final URL.",
        "protocol_error": f"{host} answered with something that is not valid HTTP.",
        "invalid_url": "The probe URL is not valid: correct it in the service's settings.",
        "connection_reset": f"{host} closed the connection before a complete answer arrived.",
        "decompression_error": "The response claimed a compression it did not use correctly.",
    }
    if code == "tls_invalid":
        return _tls_sentence(text, host, port)
    return sentences.get(code, f"The probe could not complete its request to {host}.")


def _sentence_case(text: str) -> str:
    text = (text or "").strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def describe(result: ProbeResult | None, outcome: str | None = None) -> ProbeMessage | None:
    """A probe result as a person reads it; None when there is no result."""
    if result is None:
        return None
    raw = " — ".join(part for part in (result.error_code, result.explanation) if part)
    if result.error_code:
        return ProbeMessage(_error_sentence(result.error_code, result.explanation or "", result.url), raw)
    return ProbeMessage(_sentence_case(result.explanation) or f"The probe reported {outcome or result.outcome}.",
                        raw)


def cannot_run(service: Service, kind: str | None) -> str | None:
    """Why a check kind can never run for this service and what to configure; None if it can."""
    if not kind or kind in RECORD_CHECKS:
        return None
    if kind in {k for k, _ in network_targets(service)}:
        return None
    need = _NEEDS.get(kind, "probe URL")
    return (f"Never probed: no {need} is configured for {service.name}. Add one in the service's "
            "settings, or answer this item yourself.")
