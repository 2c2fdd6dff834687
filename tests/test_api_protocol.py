"""The API's HTTP contract: problem+json errors, ETag/If-Match, cursor pagination, per-token rate
limits, body caps, no CSRF for bearer requests, and the OpenAPI document and docs page."""

from __future__ import annotations

import re
import threading
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from tests.factories import MembershipFactory, ServiceFactory, TeamFactory, UserFactory
from webapp import assessments, catalog, create_app, tokens
from webapp.api.schemas import AnswerIn, ServiceIn
from webapp.extensions import db, limiter
from webapp.models import Answer, Service


@pytest.fixture
def ctx(app):
    membership = MembershipFactory(role="maintainer", team__slug="core")
    service = ServiceFactory(team=membership.team, slug="api", name="API")
    _, secret = tokens.create_token(membership.user, "t", ["read", "write", "probe"], 30)
    db.session.commit()

    return SimpleNamespace(user=membership.user, team=membership.team, service=service,
                           headers={"Authorization": f"Bearer {secret}"})


def is_problem(response, status: int) -> dict:
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert body["status"] == status and body["title"] and body["detail"] and body["request_id"]
    return body


# Problems --------------------------------------------------------------------------------

def test_unknown_url_and_wrong_method_are_problems(client, ctx):
    body = is_problem(client.get("/api/v1/nothing-here", headers=ctx.headers), 404)
    assert body["type"] == "about:blank"
    response = client.delete("/api/v1/teams", headers=ctx.headers)
    is_problem(response, 405)
    assert "GET" in response.headers["Allow"]


def test_validation_problem_lists_every_field(client, ctx):
    response = client.post("/api/v1/teams/core/services", headers=ctx.headers, json={
        "name": "", "tier": 0, "lifecycle": "dead", "health_url": "ftp://x", "colour": "red"})
    body = is_problem(response, 422)
    assert body["type"] == "/api/v1/docs#problem-validation"
    fields = {e["field"]: e for e in body["errors"]}
    assert set(fields) == {"name", "tier", "lifecycle", "health_url", "colour"}
    assert fields["health_url"]["pointer"] == "#/health_url"
    assert fields["colour"]["detail"] == "Extra inputs are not permitted"
    assert body["detail"].startswith("5 fields are invalid in the request body: ")


def test_malformed_json_wrong_media_type_and_nul(client, ctx):
    is_problem(client.post("/api/v1/teams", data="{nope", content_type="application/json", headers=ctx.headers), 400)
    body = is_problem(client.post("/api/v1/teams", data="name=x", headers=ctx.headers,
                                  content_type="application/x-www-form-urlencoded"), 415)
    assert "application/json" in body["detail"]
    body = is_problem(client.post("/api/v1/teams", json={"name": "a\x00b"}, headers=ctx.headers), 422)
    assert body["errors"][0]["detail"] == "Text cannot contain NUL characters."


def test_query_validation_and_huge_ids_are_problems_not_500s(client, ctx):
    body = is_problem(client.get("/api/v1/teams?limit=1000", headers=ctx.headers), 422)
    assert body["errors"][0]["field"] == "limit"
    is_problem(client.get(f"/api/v1/assessments/{2**40}", headers=ctx.headers), 404)
    is_problem(client.get(f"/api/v1/assessments/{10**25}", headers=ctx.headers), 404)
    is_problem(client.get("/api/v1/audit-events?object_id=99999999999", headers=ctx.headers), 422)
    body = is_problem(client.get("/api/v1/audit-events?team=a%00b", headers=ctx.headers), 422)
    assert body["errors"] == [{"field": "team", "detail": "Text cannot contain NUL characters."}]
    body = is_problem(client.get("/api/v1/audit-events?since=0001-01-01T00:00:00%2B05:00", headers=ctx.headers), 422)
    assert body["errors"][0]["field"] == "since"


def test_an_unknown_query_parameter_is_refused_not_ignored(client, ctx):
    body = is_problem(client.get("/api/v1/services?lifecyle=live", headers=ctx.headers), 422)  # a typo
    assert body["detail"].startswith("Unknown query parameter: lifecyle (this operation takes ")
    assert body["errors"][0]["field"] == "lifecyle" and "lifecycle" in body["errors"][0]["detail"]
    assert client.get("/api/v1/services?lifecycle=live", headers=ctx.headers).status_code == 200


def test_body_is_capped(client, ctx):
    response = client.post("/api/v1/teams", headers=ctx.headers,
                           json={"name": "x", "description": "y" * 300_000})
    assert is_problem(response, 413)["detail"] == "The body is larger than this operation takes (256 KiB at most)."


def test_values_are_taken_strictly_and_said_in_plain_words(client, ctx):
    body = is_problem(client.patch("/api/v1/teams/core", json={"description": "y" * 2001},
                                   headers={**ctx.headers, "If-Match": "*"}), 422)
    assert body["errors"][0]["detail"] == "String should have at most 2000 characters"
    for tier in (True, 2.0, "2"):  # JSON's types: a boolean is no tier
        body = is_problem(client.post("/api/v1/teams/core/services", json={"name": "Odd", "tier": tier},
                                      headers=ctx.headers), 422)
        assert body["errors"][0]["field"] == "tier"


def test_a_name_that_reads_backwards_is_refused(client, ctx):
    body = is_problem(client.post("/api/v1/teams", json={"name": "Pay\u202eslitam"}, headers=ctx.headers), 422)
    assert body["errors"][0]["detail"] == "Use visible characters only (no control or text-direction characters)."


def test_an_if_match_that_can_never_match_says_why(client, ctx):
    current = client.get("/api/v1/teams/core", headers=ctx.headers).headers["ETag"]
    for sent in ("garbage", f"W/{current}"):
        body = is_problem(client.patch("/api/v1/teams/core", json={"description": "d"},
                                       headers={**ctx.headers, "If-Match": sent}), 412)
        assert body["detail"].startswith(f"If-Match {sent} holds no strong ETag")
    assert client.patch("/api/v1/teams/core", json={"description": "d"},
                        headers={**ctx.headers, "If-Match": current}).status_code == 200


def test_a_large_pdf_may_be_sent_for_verification(client, ctx):
    pdf = b"%PDF-1.7 " + b"x" * 600_000  # over the JSON cap, under the upload cap
    response = client.post("/api/v1/reports/verify", data=pdf, content_type="application/pdf", headers=ctx.headers)
    assert response.status_code == 200 and response.get_json()["match"] is False


# ETags -----------------------------------------------------------------------------------

def test_concurrent_service_edit_gets_412_not_an_overwrite(client, ctx):
    etag = client.get("/api/v1/services/core/api", headers=ctx.headers).headers["ETag"]
    first = client.patch("/api/v1/services/core/api", json={"description": "Alice's"},
                         headers={**ctx.headers, "If-Match": etag})
    assert first.status_code == 200
    second = client.patch("/api/v1/services/core/api", json={"description": "Bob's"},
                          headers={**ctx.headers, "If-Match": etag})
    body = is_problem(second, 412)
    assert body["type"] == "/api/v1/docs#problem-stale"
    assert second.headers["ETag"] == first.headers["ETag"]
    db.session.expire_all()
    assert db.session.scalar(select(Service.description)) == "Alice's"


def test_simultaneous_edits_with_one_etag_one_wins_one_gets_412(app, client, ctx, monkeypatch):
    """Two requests pass the If-Match check together; the database lets only one write."""
    from webapp.api import views

    etag = client.get("/api/v1/services/core/api", headers=ctx.headers).headers["ETag"]
    barrier = threading.Barrier(2)
    checked = views.check_if_match

    def check_then_wait(current):
        checked(current)
        try:  # on PostgreSQL the second request waits on the row lock instead, so don't insist
            barrier.wait(timeout=2)
        except threading.BrokenBarrierError:
            pass

    monkeypatch.setattr(views, "check_if_match", check_then_wait)
    results = {}

    def edit(who):
        response = app.test_client().patch("/api/v1/services/core/api", json={"description": who},
                                           headers={**ctx.headers, "If-Match": etag})
        results[who] = response.status_code

    threads = [threading.Thread(target=edit, args=(who,)) for who in ("alice", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == [200, 412]
    winner = next(who for who, status in results.items() if status == 200)
    db.session.expire_all()
    assert db.session.scalar(select(Service.description)) == winner


def test_update_without_if_match_is_428_and_weak_tags_never_match(client, ctx):
    is_problem(client.patch("/api/v1/services/core/api", json={"tier": 1}, headers=ctx.headers), 428)
    etag = client.get("/api/v1/services/core/api", headers=ctx.headers).headers["ETag"]
    is_problem(client.patch("/api/v1/services/core/api", json={"tier": 1},
                            headers={**ctx.headers, "If-Match": f"W/{etag}"}), 412)
    db.session.expire_all()
    assert db.session.scalar(select(Service.tier)) == 2


def test_concurrent_answer_gets_412_and_keeps_the_first(client, ctx):
    catalog.sync(force=True)
    assessment = assessments.start_assessment(ctx.service, catalog.latest_version("production-readiness"), ctx.user)
    db.session.commit()
    key = assessments.checklist_for(assessment).items[0].key
    url = f"/api/v1/assessments/{assessment.id}/items/{key}/answer"
    item = client.get(f"/api/v1/assessments/{assessment.id}", headers=ctx.headers).get_json()["items"][0]
    first = client.put(url, json={"status": "met", "note": "mine"}, headers={**ctx.headers, "If-Match": item["etag"]})
    assert first.status_code == 200
    second = client.put(url, json={"status": "not_met", "note": "theirs"},
                        headers={**ctx.headers, "If-Match": item["etag"]})
    is_problem(second, 412)
    assert second.headers["ETag"] == first.headers["ETag"]
    db.session.expire_all()
    assert db.session.scalar(select(Answer.note)) == "mine"
    retried = client.put(url, json={"status": "partial", "note": "theirs"},
                         headers={**ctx.headers, "If-Match": first.headers["ETag"]})
    assert retried.status_code == 200 and retried.get_json()["item"]["status"] == "partial"


# Pagination ------------------------------------------------------------------------------

def test_cursor_pagination_walks_every_page_once(client, ctx):
    for _ in range(6):
        TeamFactory()
    db.session.commit()
    seen, url, pages = [], "/api/v1/teams?limit=3", 0
    while url:
        response = client.get(url, headers=ctx.headers)
        body = response.get_json()
        seen += [t["slug"] for t in body["items"]]
        pages += 1
        if body["next_cursor"]:
            assert response.headers["Link"].endswith('rel="next"')
            url = re.match(r"<([^>]+)>", response.headers["Link"]).group(1)
            assert f"cursor={body['next_cursor']}" in url and "limit=3" in url
        else:
            url = None
    assert pages == 3 and len(seen) == 7 and len(set(seen)) == 7


def test_cursor_is_stable_when_rows_are_added_meanwhile(client, ctx):
    for _ in range(3):
        TeamFactory()
    db.session.commit()
    first = client.get("/api/v1/teams?limit=2", headers=ctx.headers).get_json()
    TeamFactory(slug="aaa-new")
    db.session.commit()
    rest = client.get(f"/api/v1/teams?limit=10&cursor={first['next_cursor']}", headers=ctx.headers).get_json()
    slugs = [t["slug"] for t in first["items"] + rest["items"]]
    assert len(slugs) == len(set(slugs)) == 5


def test_bad_cursor_is_a_400_problem(client, ctx):
    body = is_problem(client.get("/api/v1/teams?cursor=bm9wZQ", headers=ctx.headers), 400)
    assert body["type"] == "/api/v1/docs#problem-bad-cursor"


# Rate limits and CSRF (an app with both switched on, as in production) ---------------------

@pytest.fixture
def strict_app(app):
    strict = create_app({
        "TESTING": True, "SECRET_KEY": "test-secret-key-not-for-production",
        "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
        "RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://",
        "WTF_CSRF_ENABLED": True, "API_RATE_LIMIT": "3/minute", "HUEY_IMMEDIATE": True,
    })
    yield strict
    limiter.enabled = False  # one global Limiter object: leave it as the shared test app had it
    with strict.app_context():
        db.engine.dispose()


def test_rate_limit_is_per_token_with_retry_after(strict_app, ctx):
    other = UserFactory()
    _, other_secret = tokens.create_token(other, "t", ["read"], 30)
    db.session.commit()
    client = strict_app.test_client()
    statuses = [client.get("/api/v1/me", headers=ctx.headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/me", headers=ctx.headers)
    body = is_problem(response, 429)
    assert 1 <= int(response.headers["Retry-After"]) <= 61
    assert "3 per 1 minute" in body["detail"]
    # Another token has its own budget.
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {other_secret}"}).status_code == 200


def test_bearer_requests_need_no_csrf_token_but_forms_still_do(strict_app, ctx):
    client = strict_app.test_client()
    response = client.post("/api/v1/teams", json={"name": "Payments"}, headers=ctx.headers)
    assert response.status_code == 201
    page = strict_app.test_client()
    assert page.post("/login", data={"email": ctx.user.email, "password": "x"}).status_code == 400


# The document and the docs page ----------------------------------------------------------

def test_openapi_document_comes_from_the_validating_models(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    schemas = spec["components"]["schemas"]
    assert schemas["ServiceIn"]["properties"]["tier"] == ServiceIn.model_json_schema()["properties"]["tier"]
    assert schemas["AnswerIn"]["required"] == AnswerIn.model_json_schema()["required"]
    ops = [op for methods in spec["paths"].values() for op in methods.values()]
    assert len(ops) >= 26 and len({op["operationId"] for op in ops}) == len(ops)
    put = spec["paths"]["/api/v1/assessments/{assessment_id}/items/{item_key}/answer"]["put"]
    assert {"412", "428", "422", "429"} <= set(put["responses"]) and put["x-token-scope"] == "write"
    assert any(p["name"] == "If-Match" and p["required"] for p in put["parameters"])


def test_docs_page_lists_every_operation_under_the_strict_csp(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    spec = client.get("/api/v1/openapi.json").get_json()
    for methods in spec["paths"].values():
        for op in methods.values():
            assert f'id="{op["operationId"]}"' in html
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    # Parameter notes are markdown like the operations' descriptions: no raw backticks.
    assert "<code>next_cursor</code>" in html and "`next_cursor`" not in html


def test_every_api_route_refuses_a_session_cookie(app, client, ctx):
    """The API's permission matrix against the browser session: every operation but the two
    documentation URLs answers 401 to a signed-in admin without a token, and writes nothing."""
    from flask import url_for

    admin = UserFactory(is_admin=True, is_reviewer=True)
    db.session.commit()
    with client.session_transaction() as session:
        session["_user_id"], session["_fresh"] = admin.get_id(), True
    checked = 0
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api.") or rule.endpoint in ("api.openapi_document", "api.docs"):
            continue
        with app.test_request_context():
            url = url_for(rule.endpoint, **{name: "1" if name.endswith("_id") else "core"
                                            for name in rule.arguments})
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            response = client.open(url, method=method, json={})
            assert response.status_code == 401, f"{method} {url}: {response.status_code}"
            checked += 1
    assert checked >= 26
    assert client.get("/api/v1/docs").status_code == 200  # documentation is public
