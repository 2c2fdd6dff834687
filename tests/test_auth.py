"""Sign-up (first admin), sign-in failures, invitations, passwords, safe next=, CLI users."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.factories import PASSWORD, UserFactory
from webapp.extensions import db
from webapp.models import AuditEvent, Invitation, User


def test_first_visitor_is_sent_to_signup_and_becomes_admin(client):
    assert client.get("/").headers["Location"].endswith("/signup")
    page = client.get("/signup").get_data(as_text=True)
    assert "admin" in page
    response = client.post("/signup", data={"name": "Ada", "email": "Ada@Example.test",
                                            "password": "a long password", "confirm": "a long password"})
    assert response.status_code == 302
    user = db.session.scalar(select(User))
    assert user.email == "ada@example.test" and user.is_admin and user.is_reviewer
    assert user.password_hash.startswith("scrypt:")
    assert client.get("/").status_code == 200


def test_signup_closed_after_first_user_unless_allowed(app, client):
    UserFactory()
    assert client.get("/signup").status_code == 403
    app.config["ALLOW_SIGNUP"] = True
    try:
        response = client.post("/signup", data={"name": "Bo", "email": "bo@example.test",
                                                "password": "a long password", "confirm": "a long password"})
        assert response.status_code == 302
        assert not db.session.scalar(select(User).where(User.email == "bo@example.test")).is_admin
    finally:
        app.config["ALLOW_SIGNUP"] = False


@pytest.mark.parametrize("data, message", [
    ({"name": "A", "email": "not-an-email", "password": "a long password", "confirm": "a long password"},
     "Invalid email address"),
    ({"name": "A", "email": "a@example.test", "password": "short", "confirm": "short"},
     "at least 10 characters"),
    ({"name": "A", "email": "a@example.test", "password": "a long password", "confirm": "another one!"},
     "Passwords do not match"),
    ({"name": "x" * 121, "email": "a@example.test", "password": "a long password", "confirm": "a long password"},
     "longer than 120"),
])
def test_signup_validation_errors_are_shown_and_nothing_stored(client, data, message):
    response = client.post("/signup", data=data)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(User.id))) == 0


def test_login_failures_share_one_message(client):
    user = UserFactory(email="known@example.test")
    db.session.commit()
    for email, password in (("known@example.test", "wrong password"), ("nobody@example.test", PASSWORD)):
        response = client.post("/login", data={"email": email, "password": password})
        assert response.status_code == 400
        assert "Email or password is not right" in response.get_data(as_text=True)
    user.disabled_at = user.created_at
    db.session.commit()
    response = client.post("/login", data={"email": "known@example.test", "password": PASSWORD})
    assert response.status_code == 400


def test_a_page_behind_sign_in_says_sign_in_like_the_rest_of_the_app(client):
    UserFactory()  # not the first person: no redirect to the admin sign-up
    db.session.commit()
    response = client.get("/teams/", follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "Sign in to see this page." in page and "log in" not in page.lower()


@pytest.mark.parametrize("target, expected", [
    ("/teams/", "/teams/"),
    ("https://evil.example/", "/"),
    ("//evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"),
])
def test_login_next_only_goes_to_same_site_paths(client, target, expected):
    user = UserFactory()
    db.session.commit()
    response = client.post(f"/login?next={target}", data={"email": user.email, "password": PASSWORD})
    assert response.status_code == 302
    assert response.headers["Location"] == expected


def test_logout_is_a_post(client, auth):
    user = UserFactory()
    db.session.commit()
    auth.login(user)
    assert client.get("/logout").status_code == 405
    assert auth.logout().status_code == 302
    assert client.get("/teams/").status_code == 302


def test_invitation_link_works_once(client, auth):
    admin = UserFactory(is_admin=True)
    db.session.commit()
    auth.login(admin)
    response = client.post("/admin/users", data={"email": "new@example.test", "is_reviewer": "y"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    token = page.split("/invite/")[1].split('"')[0]
    auth.logout()
    response = client.post(f"/invite/{token}", data={"name": "New", "password": "a long password",
                                                     "confirm": "a long password"})
    assert response.status_code == 302
    user = db.session.scalar(select(User).where(User.email == "new@example.test"))
    assert user.is_reviewer and not user.is_admin
    assert db.session.scalar(select(Invitation)).used_at is not None
    auth.logout()
    assert client.get(f"/invite/{token}").status_code == 404
    assert client.get("/invite/forged-token").status_code == 404


def test_only_admins_invite(client, auth):
    auth.login(UserFactory())
    db.session.commit()
    assert client.post("/admin/users", data={"email": "x@example.test"}).status_code == 403
    assert db.session.scalar(select(func.count(Invitation.id))) == 0


def test_change_password(client, auth):
    user = UserFactory()
    db.session.commit()
    auth.login(user)
    response = client.post("/account/password", data={"current": "wrong", "password": "new long password",
                                                      "confirm": "new long password"})
    assert response.status_code == 400 and "current password is not right" in response.get_data(as_text=True)
    response = client.post("/account/password", data={"current": PASSWORD, "password": "new long password",
                                                      "confirm": "new long password"})
    assert response.status_code == 302
    db.session.refresh(user)
    assert user.check_password("new long password")
    assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "user.password_change"))


def test_cli_users_create_list_disable(runner):
    result = runner.invoke(args=["users", "create", "ops@example.test", "--reviewer"], input="a long password\n")
    assert result.exit_code == 0, result.output
    assert "created ops@example.test" in result.output
    user = db.session.scalar(select(User).where(User.email == "ops@example.test"))
    assert user.is_admin  # the first account is always an admin
    result = runner.invoke(args=["users", "create", "two@example.test"], input="short\n")
    assert result.exit_code == 1 and "at least 10" in result.output
    assert "ops@example.test" in runner.invoke(args=["users", "list"]).output
    assert runner.invoke(args=["users", "disable", "ops@example.test"]).exit_code == 0
    db.session.expire_all()
    assert not db.session.scalar(select(User).where(User.email == "ops@example.test")).is_active
    assert runner.invoke(args=["users", "disable", "nobody@example.test"]).exit_code == 1


def test_csrf_is_enforced(app, client):
    UserFactory()
    db.session.commit()
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        response = client.post("/login", data={"email": "a@example.test", "password": "x"})
        assert response.status_code == 400
        assert "CSRF" in response.get_data(as_text=True)
    finally:
        app.config["WTF_CSRF_ENABLED"] = False


def test_sign_in_is_rate_limited(app):
    from webapp import create_app
    from webapp.extensions import limiter

    UserFactory(email="target@example.test")
    db.session.commit()
    # Flask-Limiter keeps its state on one global object, set up by the last init_app:
    # build an app with limits on, and switch them off again afterwards.
    limited = create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "WTF_CSRF_ENABLED": False,
                          "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                          "RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://"})
    try:
        client = limited.test_client()
        codes = [client.post("/login", data={"email": "target@example.test", "password": "guess"}).status_code
                 for _ in range(11)]
    finally:
        limiter.enabled = False
        with limited.app_context():
            db.engine.dispose()
    assert codes[:10] == [400] * 10 and codes[10] == 429  # ten failures per account a minute
