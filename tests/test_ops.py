"""Preflight's own production readiness: health, readiness, deep health, metrics, request
ids and security headers — checked with Preflight's own probe rules."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def test_health_endpoints(client):
    assert client.get("/healthz").get_json() == {"status": "pass"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "pass" and ready["checks"]["database"]["status"] == "pass"
    deep = client.get("/healthz/deep")
    assert deep.status_code == 200
    assert set(deep.get_json()["checks"]) == {"database", "queue", "checklists"}


def test_metrics_are_valid_prometheus_with_red_metrics(client):
    client.get("/healthz")
    body = client.get("/metrics").get_data(as_text=True)
    names = {family.name for family in text_string_to_metric_families(body)}
    assert {"preflight_http_requests", "preflight_http_request_duration_seconds"} <= names
    assert any(name.startswith("process_") for name in names)


def test_request_id_is_echoed_or_made(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/healthz", headers={"X-Request-ID": "<bad id>"}).headers["X-Request-ID"]
    assert made != "<bad id>" and len(made) == 32


def test_security_headers_on_every_page(client):
    headers = client.get("/login").headers
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "same-origin"


def test_error_pages_use_the_layout(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404 and "Preflight" in response.get_data(as_text=True)

