"""API tokens: shown once and stored hashed, scopes, expiry, revocation (UI and CLI), last use,
team tokens limited to their team, and session cookies never accepted by the API."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.factories import MembershipFactory, ServiceFactory, UserFactory
from webapp import tokens
from webapp.extensions import db
from webapp.models import ApiToken, AuditEvent, Service, utcnow


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def make_token(user, scopes=("read",), days=30, team=None) -> str:
    _, secret = tokens.create_token(user, "test", list(scopes), days, team=team)
    db.session.commit()
    return secret


def test_token_is_stored_only_as_its_sha256(app):
    user = UserFactory()
    secret = make_token(user)
    row = db.session.scalar(select(ApiToken))
    assert secret.startswith("pft_") and len(secret) > 40
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in (row.token_hash, row.prefix) and row.prefix == secret[:12]
    assert db.session.scalar(select(AuditEvent.action)) == "token.create"


def test_read_token_reads_but_cannot_write(client):
    membership = MembershipFactory(role="maintainer", team__slug="core")
    secret = make_token(membership.user, scopes=("read",))
    assert client.get("/api/v1/teams/core", headers=bearer(secret)).status_code == 200
    response = client.post("/api/v1/teams/core/services", json={"name": "Billing"}, headers=bearer(secret))
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["type"].endswith("#problem-insufficient-scope")
    assert 'scope="write"' in response.headers["WWW-Authenticate"]
    assert db.session.scalar(select(Service)) is None


def test_write_token_without_read_cannot_read(client):
    user = UserFactory()
    secret = make_token(user, scopes=("write",))
    response = client.get("/api/v1/teams", headers=bearer(secret))
    assert response.status_code == 403
    assert "lacks the “read” scope" in response.get_json()["detail"]


def test_probe_scope_is_needed_to_trigger_probes(client):
    membership = MembershipFactory(role="member", team__slug="core")
    ServiceFactory(team=membership.team, slug="api")
    secret = make_token(membership.user, scopes=("read", "write"))
    response = client.post("/api/v1/services/core/api/probe-runs", headers=bearer(secret))
    assert response.status_code == 403
    assert "“probe” scope" in response.get_json()["detail"]


def test_expired_token_is_refused(client):
    user = UserFactory()
    secret = make_token(user)
    db.session.scalar(select(ApiToken)).expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    response = client.get("/api/v1/me", headers=bearer(secret))
    assert response.status_code == 401
    assert "expired" in response.get_json()["detail"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_revoked_token_is_refused_and_unknown_ones_too(client):
    user = UserFactory()
    secret = make_token(user)
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 200
    tokens.revoke_token(db.session.scalar(select(ApiToken)), user)
    db.session.commit()
    response = client.get("/api/v1/me", headers=bearer(secret))
    assert response.status_code == 401 and response.get_json()["detail"] == "This token was revoked."
    response = client.get("/api/v1/me", headers=bearer("pft_" + "x" * 43))
    assert response.status_code == 401 and response.get_json()["detail"] == "Unknown token."


def test_disabled_account_tokens_stop_working(client):
    from webapp import accounts

    user = UserFactory()
    secret = make_token(user)
    accounts.disable_user(user, None)
    db.session.commit()
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 401


def test_session_cookie_is_not_accepted_by_the_api(client, auth):
    user = UserFactory()
    db.session.commit()
    auth.login(user)
    assert client.get("/teams/").status_code == 200  # the browser session works on pages
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert "Session cookies are not accepted" in response.get_json()["detail"]


def test_last_used_is_written_after_the_response_at_most_once_a_minute(client):
    user = UserFactory()
    secret = make_token(user)

    def use() -> None:
        response = client.get("/api/v1/me", headers=bearer(secret))
        assert response.status_code == 200
        response.close()  # what a WSGI server does once the response is sent

    use()
    db.session.expire_all()
    first = db.session.scalar(select(ApiToken.last_used_at))
    assert first is not None
    use()
    db.session.expire_all()
    assert db.session.scalar(select(ApiToken.last_used_at)) == first  # within the minute: no write
    token = db.session.scalar(select(ApiToken))
    token.last_used_at = first - timedelta(minutes=2)
    db.session.commit()
    use()
    db.session.expire_all()
    assert db.session.scalar(select(ApiToken.last_used_at)) > first - timedelta(minutes=2)


def test_team_token_acts_only_on_its_team(client):
    maintainer = MembershipFactory(role="maintainer", team__slug="core")
    MembershipFactory(user=maintainer.user, role="maintainer", team__slug="other")
    secret = make_token(maintainer.user, scopes=("read", "write"), team=maintainer.team)
    ok = client.post("/api/v1/teams/core/services", json={"name": "Billing"}, headers=bearer(secret))
    assert ok.status_code == 201
    refused = client.post("/api/v1/teams/other/services", json={"name": "Search"}, headers=bearer(secret))
    assert refused.status_code == 403
    assert "team token of another team" in refused.get_json()["detail"]
    assert client.post("/api/v1/teams", json={"name": "New"}, headers=bearer(secret)).status_code == 403
    assert client.get("/api/v1/teams/other", headers=bearer(secret)).status_code == 200  # reads are open
    assert [s.slug for s in db.session.scalars(select(Service))] == ["billing"]


def test_only_maintainers_make_team_tokens(app):
    member = MembershipFactory(role="member")
    with pytest.raises(tokens.TokenError, match="Only a maintainer"):
        tokens.create_token(member.user, "ci", ["read"], 30, team=member.team)


def test_same_permissions_as_the_web_app(client):
    viewer = MembershipFactory(role="viewer", team__slug="core")
    outsider = UserFactory()
    ServiceFactory(team=viewer.team, slug="api")
    for user in (viewer.user, outsider):
        secret = make_token(user, scopes=("read", "write"))
        response = client.post("/api/v1/services/core/api/retire", headers=bearer(secret))
        assert response.status_code == 403
        assert response.get_json()["type"].endswith("#problem-forbidden")
    db.session.expire_all()
    assert db.session.scalar(select(Service.lifecycle)) == "live"


# The pages -----------------------------------------------------------------------------

def test_tokens_page_shows_the_secret_once_and_revokes(client, auth):
    user = UserFactory()
    db.session.commit()
    auth.login(user)
    response = client.post("/account/tokens", data={"name": "deploy gate", "scopes": ["read", "write"],
                                                    "expires": "30"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    secret = re.search(r"(pft_[A-Za-z0-9_-]{40,})", response.get_data(as_text=True)).group(1)
    assert client.get("/api/v1/me", headers=bearer(secret)).get_json()["token"]["scopes"] == ["read", "write"]
    page = client.get("/account/tokens").get_data(as_text=True)
    assert "deploy gate" in page and secret not in page  # listed, never shown again
    token = db.session.scalar(select(ApiToken))
    response = client.post(f"/tokens/{token.id}/revoke")
    assert response.status_code == 302
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 401


def test_tokens_page_refuses_a_token_without_scopes(client, auth):
    user = UserFactory()
    db.session.commit()
    auth.login(user)
    response = client.post("/account/tokens", data={"name": "x", "expires": "30"})
    assert response.status_code == 400
    assert "Pick at least one scope" in response.get_data(as_text=True)
    assert db.session.scalar(select(ApiToken)) is None


def test_team_tokens_page_is_for_maintainers(client, auth):
    member = MembershipFactory(role="member")
    maintainer = MembershipFactory(role="maintainer", team=member.team)
    db.session.commit()
    auth.login(member.user)
    assert client.get(f"/teams/{member.team.id}/tokens").status_code == 403
    auth.logout()
    auth.login(maintainer.user)
    response = client.post(f"/teams/{member.team.id}/tokens", data={"name": "catalogue sync",
                                                                    "scopes": ["read"], "expires": "90"})
    assert response.status_code == 200 and "pft_" in response.get_data(as_text=True)
    token = db.session.scalar(select(ApiToken))
    assert token.team_id == member.team.id and token.user_id == maintainer.user.id
    assert f"/teams/{member.team.id}/tokens" in client.get(f"/teams/{member.team.id}").get_data(as_text=True)


def test_another_users_token_cannot_be_revoked(client, auth):
    owner, other = UserFactory(), UserFactory()
    make_token(owner)
    auth.login(other)
    token = db.session.scalar(select(ApiToken))
    assert client.post(f"/tokens/{token.id}/revoke").status_code == 403
    db.session.expire_all()
    assert db.session.scalar(select(ApiToken.revoked_at)) is None


# The CLI -------------------------------------------------------------------------------

def test_cli_creates_lists_and_revokes(runner, client):
    user = UserFactory(email="ops@example.test")
    db.session.commit()
    result = runner.invoke(args=["tokens", "create", "ops@example.test", "--scope", "read", "--expires", "7"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip()
    assert client.get("/api/v1/me", headers=bearer(secret)).get_json()["email"] == user.email
    token = db.session.scalar(select(ApiToken))
    assert (token.expires_at - utcnow()) > timedelta(days=6, hours=23)
    listing = runner.invoke(args=["tokens", "list", "ops@example.test"])
    assert token.prefix in listing.output and "active" in listing.output
    assert runner.invoke(args=["tokens", "revoke", str(token.id)]).exit_code == 0
    assert client.get("/api/v1/me", headers=bearer(secret)).status_code == 401


def test_cli_refuses_unknown_account_and_bad_scope(runner):
    assert runner.invoke(args=["tokens", "create", "nobody@example.test", "--scope", "read"]).exit_code == 1
    UserFactory(email="ops@example.test")
    db.session.commit()
    result = runner.invoke(args=["tokens", "create", "ops@example.test", "--scope", "admin"])
    assert result.exit_code == 2 and db.session.scalar(select(ApiToken)) is None
