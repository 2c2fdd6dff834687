"""The shipped Grafana dashboard (docs/deploy/grafana-dashboard.json) and the Prometheus alert
rules query only metrics Preflight's /metrics really exports (or the two documented outside
ones), so neither can silently show "No data" after a rename."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.test_retry import FlakyTask
from webapp import retry

DEPLOY = Path(__file__).resolve().parents[1] / "docs" / "deploy"
DASHBOARD = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
# Metrics queried that Preflight does not export itself, and who does.
OUTSIDE = {
    "up": "Prometheus itself, per scrape target",
    "preflight_backup_last_success_timestamp_seconds": "the backup job, via node_exporter's textfile "
                                                       "collector (docs/runbook.md)",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                   "unless", "offset"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not functions, labels or keywords)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("(") or match.group(0) in PROMQL_KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def dashboard_queries() -> list[str]:
    queries = [t["expr"] for p in DASHBOARD["panels"] for t in p.get("targets", [])]
    for variable in DASHBOARD["templating"]["list"]:
        found = re.match(r"label_values\((\w+)", variable.get("query", "") or "")
        if found:
            queries.append(found.group(1))
    return queries


def alert_queries() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus-alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def exported_names(client) -> set[str]:
    client.get("/login")  # labelled series appear once something was counted
    client.get("/no-such-page")
    retry.enqueue(FlakyTask(RedisConnectionError("refused")))
    body = client.get("/metrics").get_data(as_text=True)
    return {sample.name for family in text_string_to_metric_families(body) for sample in family.samples}


def test_the_extractor_finds_metrics_and_skips_functions_labels_and_keywords():
    expr = ('histogram_quantile(0.95, sum by (le, endpoint) (rate(preflight_http_request_duration_seconds_bucket'
            '{job="$job", status=~"5.."}[5m]))) / on (instance) group_left up > bool 1')
    assert metric_names(expr) == {"preflight_http_request_duration_seconds_bucket", "up"}


def test_every_metric_the_dashboard_and_alerts_query_is_exported(client):
    exported = exported_names(client)
    queried = {name for q in dashboard_queries() + alert_queries() for name in metric_names(q)}
    assert len(queried) >= 12, f"too few metrics found in the queries: {sorted(queried)}"
    missing = sorted(queried - exported - OUTSIDE.keys())
    assert not missing, f"queried but not exported by /metrics: {missing}"
    # The dashboard covers the four golden signals and the dependencies.
    for name in ("preflight_http_requests_total", "preflight_http_request_duration_seconds_bucket",
                 "preflight_database_up", "preflight_database_breaker_open", "preflight_db_pool_connections_in_use",
                 "preflight_job_queue_pending", "preflight_probe_sweep_running_seconds", "preflight_retries_total"):
        assert any(name in metric_names(q) for q in dashboard_queries()), f"no panel shows {name}"


def test_dashboard_is_importable_grafana_json():
    assert DASHBOARD["uid"] and DASHBOARD["title"] == "Preflight" and DASHBOARD["schemaVersion"] >= 36
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in DASHBOARD["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another"
                cells.add((x, y))
        if panel["type"] != "row":
            assert panel["targets"] and panel["datasource"]["uid"] == "${datasource}"
    runbook = (DEPLOY.parents[1] / "docs" / "runbook.md").read_text()
    assert "grafana-dashboard.json" in runbook
