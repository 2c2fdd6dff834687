"""Feature flags: an admin switches a risky feature off (page or CLI) without a deploy; every
process sees it through the database within the cache interval; the feature then answers
with a clear message, never a 500; each change is audited."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import event, func, select

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp import flags, tokens
from webapp.extensions import db
from webapp.models import AuditEvent, FeatureFlag, ProbeRun


@pytest.fixture
def world(app):
    admin = UserFactory(is_admin=True)
    membership = MembershipFactory(role="maintainer", team__slug="core")
    service = ServiceFactory(team=membership.team, slug="api", base_url="http://127.0.0.1:9/",
                             health_url="http://127.0.0.1:9/healthz")
    _, secret = tokens.create_token(membership.user, "t", ["read", "write", "probe"], 30)
    db.session.commit()
    return SimpleNamespace(admin=admin, maintainer=membership.user, service=service,
                           headers={"Authorization": f"Bearer {secret}"})


def _count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def test_admin_switches_a_flag_off_and_on_with_an_audit_trail(client, auth, world):
    auth.login(world.admin)
    page = client.get("/admin/flags").get_data(as_text=True)
    assert "Draft PDF exports" in page and page.count("Switch off") == len(flags.FLAGS)

    response = client.post("/admin/flags/pdf_export", data={"enabled": "off", "note": "WeasyPrint leak"})
    assert response.status_code == 302
    row = db.session.scalar(select(FeatureFlag).where(FeatureFlag.key == "pdf_export"))
    assert row.enabled is False and row.note == "WeasyPrint leak" and row.changed_by_id == world.admin.id
    event_ = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "feature_flag.set"))
    assert event_.before == {"enabled": True} and event_.after["enabled"] is False
    assert event_.actor_id == world.admin.id
    page = client.get("/admin/flags").get_data(as_text=True)
    assert "Switch on" in page and "WeasyPrint leak" in page

    # The same state again writes nothing (write only on change).
    client.post("/admin/flags/pdf_export", data={"enabled": "off"})
    assert _count(AuditEvent, AuditEvent.action == "feature_flag.set") == 1

    client.post("/admin/flags/pdf_export", data={"enabled": "on"})
    db.session.expire_all()
    assert flags.enabled("pdf_export")
    assert _count(AuditEvent, AuditEvent.action == "feature_flag.set") == 2


def test_a_bad_state_or_an_unknown_flag_changes_nothing(client, auth, world):
    auth.login(world.admin)
    assert client.post("/admin/flags/nope", data={"enabled": "off"}).status_code == 404
    response = client.post("/admin/flags/probe_now", data={"enabled": "maybe"}, follow_redirects=True)
    assert "State must be on or off" in response.get_data(as_text=True)
    assert _count(FeatureFlag) == 0


def test_draft_export_switched_off_is_a_clear_503_page(client, auth, world, runner):
    from tests.test_api_endpoints import start

    assessment = start(world.service, world.maintainer)
    assert runner.invoke(args=["flags", "set", "pdf_export", "off"]).exit_code == 0
    auth.login(world.maintainer)
    response = client.get(f"/assessments/{assessment.id}/export.pdf")
    body = response.get_data(as_text=True)
    assert response.status_code == 503 and response.mimetype == "text/html"
    assert "Draft PDF exports are switched off by an admin" in body and "Traceback" not in body


def test_probe_now_switched_off_in_the_web_and_the_api(client, auth, world, runner):
    result = runner.invoke(args=["flags", "set", "probe_now", "off", "--note", "probe storm"])
    assert result.exit_code == 0 and "probe_now is now off" in result.output
    auth.login(world.maintainer)
    response = client.post(f"/services/{world.service.id}/probes/run", follow_redirects=True)
    assert response.status_code == 200
    assert "Starting a probe run by hand is switched off" in response.get_data(as_text=True)
    page = client.get(f"/services/{world.service.id}/probes").get_data(as_text=True)  # said before clicking
    assert 'disabled aria-describedby="probe-now-off">Probe now</button>' in page
    assert f'action="/services/{world.service.id}/probes/run"' not in page
    response = client.post("/api/v1/services/core/api/probe-runs", headers=world.headers)
    assert response.status_code == 503 and response.mimetype == "application/problem+json"
    assert "switched off" in response.get_json()["detail"] and response.headers["Retry-After"] == "60"
    assert _count(ProbeRun) == 0

    runner.invoke(args=["flags", "set", "probe_now", "on"])
    assert f'action="/services/{world.service.id}/probes/run"' in client.get(
        f"/services/{world.service.id}/probes").get_data(as_text=True)
    response = client.post(f"/services/{world.service.id}/probes/run")
    assert response.status_code == 302 and "/probes/runs/" in response.headers["Location"]


def test_api_writes_switched_off_reads_go_on(client, world, runner):
    runner.invoke(args=["flags", "set", "api_writes", "off"])
    response = client.post("/api/v1/teams", json={"name": "Payments"}, headers=world.headers)
    assert response.status_code == 503 and "reading still works" in response.get_json()["detail"]
    assert client.get("/api/v1/teams", headers=world.headers).status_code == 200
    verify = client.post("/api/v1/reports/verify", json={"sha256": "0" * 64}, headers=world.headers)
    assert verify.status_code == 200 and verify.get_json()["match"] is False  # a POST that changes nothing
    runner.invoke(args=["flags", "set", "api_writes", "on"])
    assert client.post("/api/v1/teams", json={"name": "Payments"}, headers=world.headers).status_code == 201


def test_scheduled_sweep_and_link_checks_skip_while_switched_off(app, world, runner):
    from webapp.probes.tasks import check_evidence_links, probe_due_services

    runner.invoke(args=["flags", "set", "scheduled_probes", "off"])
    assert probe_due_services.call_local() == 0
    assert check_evidence_links.call_local() == 0
    assert _count(ProbeRun) == 0
    runner.invoke(args=["flags", "set", "scheduled_probes", "on"])
    assert probe_due_services.call_local() == 1  # the service is due: it is probed again


def test_cli_lists_flags_and_refuses_unknown_ones(runner):
    runner.invoke(args=["flags", "set", "api_writes", "off", "--note", "migration"])
    listing = runner.invoke(args=["flags", "list"]).output.splitlines()
    assert len(listing) == len(flags.FLAGS)
    assert any(line.startswith("api_writes\toff\t") and "migration" in line for line in listing)
    assert any(line.startswith("probe_now\ton\tnever changed") for line in listing)
    result = runner.invoke(args=["flags", "set", "nope", "off"])
    assert result.exit_code != 0 and "unknown feature flag 'nope'" in result.output
    event_ = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "feature_flag.set"))
    assert event_.actor_id is None and event_.after == {"key": "api_writes", "enabled": False, "note": "migration"}


def test_flags_cost_one_query_per_cache_interval_and_other_processes_see_changes(app, runner):
    """Another process (here: the CLI, its own session) switches a flag; this process sees it
    once its cache interval is over, and reads all flags with a single query until then."""
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if "feature_flag" in statement:
            statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        with app.app_context():
            assert all(flags.enabled(key) for key in flags.FLAGS)
            assert all(flags.enabled(key) for key in flags.FLAGS)
            assert len(statements) == 1  # eight checks, one query
            stale = dict(flags._cache)
            runner.invoke(args=["flags", "set", "probe_now", "off"])
            flags._cache.update(stale)  # as in another process, which did not make the change
            assert flags.enabled("probe_now") is True  # within the interval: what it read
            app.config["FEATURE_FLAG_CACHE_SECONDS"] = 0  # as if the interval had passed
            try:
                assert flags.enabled("probe_now") is False
            finally:
                app.config["FEATURE_FLAG_CACHE_SECONDS"] = 5
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
