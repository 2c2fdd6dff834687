"""Sign-in hardening (issue 14, items 2, 4 and 8; issue 8's shared rate limits): sign-out and a
password change end every session, remember-me included; the remember cookie is Secure,
SameSite and short-lived; limits per account and per address behind a trusted proxy, kept in
Redis when REDIS_URL is set; an unknown email costs a password hash like a known one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import pytest

from tests.conftest import REPO, need
from tests.factories import PASSWORD, UserFactory
from webapp import accounts
from webapp.config import load_settings
from webapp.extensions import db
from webapp.models import User

NEW_PASSWORD = "another long password"


def sign_in(client, user, remember=False):
    data = {"email": user.email, "password": PASSWORD}
    if remember:
        data["remember"] = "y"
    response = client.post("/login", data=data)
    assert response.status_code == 302
    return response


def signed_in(client) -> bool:
    return client.get("/teams/").status_code == 200


def copy_cookies(source, target, names):
    for name in names:
        cookie = source.get_cookie(name)
        if cookie is not None:
            target.set_cookie(name, cookie.value)


def test_sign_out_ends_a_copied_session_cookie(app, client):
    user = UserFactory()
    sign_in(client, user)
    thief = app.test_client()
    copy_cookies(client, thief, ["session"])
    assert signed_in(thief)
    client.post("/logout")
    assert not signed_in(thief)
    assert db.session.get(User, user.id).session_generation == 1


def test_sign_out_ends_a_replayed_remember_cookie(app, client):
    user = UserFactory()
    sign_in(client, user, remember=True)
    assert client.get_cookie("remember_token") is not None
    replay = app.test_client()
    copy_cookies(client, replay, ["remember_token"])  # no session cookie: remember-me alone
    assert signed_in(replay)
    client.post("/logout")
    fresh = app.test_client()
    copy_cookies(replay, fresh, ["remember_token"])
    assert not signed_in(fresh)


def test_password_change_ends_other_sessions_and_keeps_this_one(app, client):
    user = UserFactory()
    sign_in(client, user, remember=True)
    laptop = app.test_client()
    sign_in(laptop, user, remember=True)
    stolen = app.test_client()
    copy_cookies(laptop, stolen, ["remember_token"])
    response = client.post("/account/password", data={
        "current": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 302
    assert signed_in(client)
    assert not signed_in(laptop)
    assert not signed_in(stolen)
    assert db.session.get(User, user.id).check_password(NEW_PASSWORD)


def test_a_disabled_account_loses_its_sessions(app, client):
    user = UserFactory()
    sign_in(client, user)
    accounts.disable_user(db.session.get(User, user.id), None)
    db.session.commit()
    assert not signed_in(client)


def test_remember_cookie_has_the_session_cookie_flags_and_a_short_life(tmp_path):
    settings = load_settings(tmp_path, {"PREFLIGHT_ENV": "production", "SECRET_KEY": "k" * 40})
    assert settings["REMEMBER_COOKIE_SECURE"] is True
    assert settings["REMEMBER_COOKIE_SAMESITE"] == settings["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert settings["REMEMBER_COOKIE_HTTPONLY"] is True
    assert settings["REMEMBER_COOKIE_DURATION"] == timedelta(days=14)
    custom = load_settings(tmp_path, {"REMEMBER_COOKIE_DAYS": "3"})
    assert custom["REMEMBER_COOKIE_DURATION"] == timedelta(days=3)
    assert custom["REMEMBER_COOKIE_SECURE"] is False  # development over plain http
    with pytest.raises(Exception, match="REMEMBER_COOKIE_DAYS must be between 1 and 365"):
        load_settings(tmp_path, {"REMEMBER_COOKIE_DAYS": "0"})


def test_the_remember_cookie_sent_is_secure_samesite_and_expires_in_days(app, client):
    user = UserFactory()
    app.config.update(REMEMBER_COOKIE_SECURE=True, REMEMBER_COOKIE_DURATION=timedelta(days=3))
    try:
        response = sign_in(client, user, remember=True)
    finally:
        app.config.update(REMEMBER_COOKIE_SECURE=False, REMEMBER_COOKIE_DURATION=timedelta(days=14))
    header = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith("remember_token="))
    assert "Secure" in header and "SameSite=Lax" in header and "HttpOnly" in header
    expires = parsedate_to_datetime(header.split("Expires=")[1].split(";")[0])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=5)


def test_unknown_email_costs_a_password_hash(client, monkeypatch):
    UserFactory(email="known@example.test")
    hashed = []
    real = accounts.check_password_hash
    monkeypatch.setattr(accounts, "check_password_hash",
                        lambda stored, password: hashed.append(stored) or real(stored, password))
    response = client.post("/login", data={"email": "nobody@example.test", "password": "a guess"})
    assert response.status_code == 400
    assert len(hashed) == 1 and hashed[0].startswith("scrypt:")  # the same work as a real check


# Rate limits -------------------------------------------------------------------------------

@pytest.fixture
def limited_app(app):
    """An app with limits on. Flask-Limiter keeps its state on one global object, set up by
    the last init_app: switch limits off again afterwards for the other tests."""
    from webapp import create_app
    from webapp.extensions import limiter

    def make(**config):
        return create_app({"TESTING": True, "SECRET_KEY": "x" * 32, "WTF_CSRF_ENABLED": False,
                           "SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                           "RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://",
                           "RATELIMIT_KEY_PREFIX": uuid.uuid4().hex, **config})

    yield make
    limiter.enabled = False


def attempt(client, email, password="a wrong guess", address="203.0.113.7", forwarded=None):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post("/login", data={"email": email, "password": password}, headers=headers,
                       environ_base={"REMOTE_ADDR": address}).status_code


def test_failed_sign_ins_are_limited_per_account_across_addresses(limited_app):
    target = UserFactory(email="target@example.test")
    other = UserFactory(email="other@example.test")
    db.session.commit()
    client = limited_app().test_client()
    codes = [attempt(client, target.email, address=f"198.51.100.{n}") for n in range(11)]
    assert codes == [400] * 10 + [429]
    assert attempt(client, target.email, PASSWORD, address="198.51.100.99") == 429
    assert attempt(client, other.email, PASSWORD, address="198.51.100.99") == 302  # others unaffected


def test_behind_a_trusted_proxy_limits_key_on_the_client_not_the_proxy(limited_app):
    users = [UserFactory() for _ in range(32)]
    db.session.commit()
    client = limited_app(TRUSTED_PROXIES=1).test_client()
    # 31 failures from one client, through the proxy, over many accounts: the address limit.
    codes = [attempt(client, u.email, address="10.0.0.1", forwarded="203.0.113.9") for u in users[:31]]
    assert codes == [400] * 30 + [429]
    # Another person behind the same proxy signs in fine.
    assert attempt(client, users[31].email, PASSWORD, address="10.0.0.1", forwarded="203.0.113.10") == 302


def test_without_trusted_proxies_forwarded_headers_are_ignored(limited_app):
    users = [UserFactory() for _ in range(31)]
    db.session.commit()
    client = limited_app().test_client()
    codes = [attempt(client, u.email, address="203.0.113.9", forwarded=f"192.0.2.{n}")
             for n, u in enumerate(users)]
    assert codes == [400] * 30 + [429]  # a forged X-Forwarded-For does not buy new buckets


def test_a_successful_sign_in_does_not_use_up_the_limits(limited_app):
    user = UserFactory()
    db.session.commit()
    client = limited_app().test_client()
    assert [attempt(client, user.email, PASSWORD) for _ in range(15)] == [302] * 15


def test_rate_limits_use_redis_when_redis_url_is_set(tmp_path):
    settings = load_settings(tmp_path, {"REDIS_URL": "redis://127.0.0.1:6379/4"})
    assert settings["RATELIMIT_STORAGE_URI"] == "redis://127.0.0.1:6379/4"
    assert load_settings(tmp_path, {})["RATELIMIT_STORAGE_URI"] == "memory://"


WORKER = """
import json, sys
from webapp import create_app
app = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False, "RATELIMIT_KEY_PREFIX": sys.argv[1]})
client = app.test_client()
codes = [client.post("/login", data={"email": sys.argv[2], "password": sys.argv[3]},
                     environ_base={"REMOTE_ADDR": "198.51.100.%d" % n}).status_code
         for n in range(int(sys.argv[4]))]
print(json.dumps(codes))
"""


@pytest.mark.redis
def test_two_processes_share_the_limits_through_redis(app, tmp_path):
    """Two processes (as two gunicorn workers or two hosts): failures counted in one are
    counted in the other, because the limits live in Redis."""
    redis_url = os.environ.get("TEST_REDIS_URL", "")
    need("redis", bool(redis_url), "TEST_REDIS_URL is not set")
    user = UserFactory()
    db.session.commit()
    env = {**os.environ, "REDIS_URL": redis_url, "SECRET_KEY": "s" * 32,
           "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
           "PREFLIGHT_INSTANCE_PATH": str(tmp_path), "RATELIMIT_ENABLED": "true"}
    prefix = uuid.uuid4().hex

    def worker(password, attempts):
        done = subprocess.run([sys.executable, "-c", WORKER, prefix, user.email, password, str(attempts)],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert worker("a wrong guess", 10) == [400] * 10
    assert worker(PASSWORD, 1) == [429]  # the other process saw the ten failures
