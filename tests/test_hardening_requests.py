"""Hostile requests (issue 14, items 7, 9 and 11): NUL bytes anywhere are a 400 with a clear
message; an expired form on an htmx save keeps the person's text and says to sign in again;
a chunked body over the limit is a 413 like any other large body."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from tests.factories import MembershipFactory, ServiceFactory, TeamFactory, UserFactory
from webapp import assessments, catalog
from webapp.extensions import db
from webapp.models import Answer, Evidence, Team

NUL_MESSAGE = "The request contains a NUL character (\\x00)"
ITEM = "structured_logging"


@pytest.fixture
def editor(auth):
    membership = MembershipFactory(role="maintainer")
    service = ServiceFactory(team=membership.team, tier=2)
    catalog.sync(force=True)
    assessment = assessments.start_assessment(service, catalog.latest_version("production-readiness"),
                                              membership.user)
    db.session.commit()
    auth.login(membership.user)
    return membership.user, assessment


# Item 7: NUL bytes ---------------------------------------------------------------------------

def test_a_nul_in_the_login_email_is_a_400(client):
    UserFactory()
    response = client.post("/login", data={"email": "a\x00@example.test", "password": "whatever"})
    assert response.status_code == 400
    assert NUL_MESSAGE in response.get_data(as_text=True)


@pytest.mark.parametrize("field", ["note", "status"])
def test_a_nul_in_an_answer_is_a_400_and_nothing_is_stored(client, editor, field):
    _user, assessment = editor
    data = {"status": "met", "note": "fine", "version": "0"}
    data[field] += "\x00"
    response = client.post(f"/assessments/{assessment.id}/items/{ITEM}/answer", data=data)
    assert response.status_code == 400 and NUL_MESSAGE in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Answer)) == 0


def test_a_nul_in_an_evidence_title_is_a_400(client, editor):
    _user, assessment = editor
    response = client.post(f"/assessments/{assessment.id}/items/{ITEM}/evidence",
                           data={"url": "https://ci.example.test/run/1", "title": "run\x001"})
    assert response.status_code == 400
    assert db.session.scalar(select(func.count()).select_from(Evidence)) == 0


def test_a_nul_in_a_team_name_is_a_400(client, auth):
    auth.login(UserFactory(is_admin=True))
    response = client.post("/teams/new", data={"name": "Pay\x00ments"})
    assert response.status_code == 400 and NUL_MESSAGE in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Team)) == 0


@pytest.mark.parametrize("url", ["/teams/%00", "/services/?q=%00", "/teams/?%00=x"])
def test_a_nul_in_the_path_or_query_is_a_400(client, auth, url):
    TeamFactory()
    auth.login(UserFactory(is_admin=True))
    response = client.get(url)
    assert response.status_code == 400 and NUL_MESSAGE in response.get_data(as_text=True)


def test_a_nul_in_a_json_body_is_a_400(client, auth):
    auth.login(UserFactory(is_admin=True))
    response = client.post("/teams/new", json={"name": ["ok", {"nested": "x\x00"}]})
    assert response.status_code == 400 and NUL_MESSAGE in response.get_data(as_text=True)


# Item 9: an expired form on an htmx save -----------------------------------------------------

@pytest.fixture
def csrf_on(app):
    app.config.update(WTF_CSRF_ENABLED=True, WTF_CSRF_TIME_LIMIT=1)
    yield
    app.config.update(WTF_CSRF_ENABLED=False, WTF_CSRF_TIME_LIMIT=3600)


def token_from(client, path):
    page = client.get(path).get_data(as_text=True)
    return page.split('name="csrf-token" content="')[1].split('"')[0]


def test_an_expired_token_on_an_htmx_save_keeps_the_card_and_says_so(client, editor, csrf_on):
    _user, assessment = editor
    token = token_from(client, f"/assessments/{assessment.id}")
    time.sleep(2.2)  # past WTF_CSRF_TIME_LIMIT (whole seconds): the page was left open too long
    response = client.post(f"/assessments/{assessment.id}/items/{ITEM}/answer",
                           data={"status": "met", "note": "typed for an hour", "version": "0",
                                 "csrf_token": token}, headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert response.headers["HX-Reswap"] == "none"  # the card, and the typed note, stay
    assert response.headers["X-Preflight-Session"] == "expired"
    assert "Your session expired: sign in again" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Answer)) == 0


def test_a_fresh_token_is_handed_to_open_pages(client, editor, csrf_on):
    _user, assessment = editor
    old = token_from(client, f"/assessments/{assessment.id}")
    time.sleep(2.2)
    response = client.get("/session/csrf")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    fresh = response.get_json()["token"]
    assert fresh != old
    saved = client.post(f"/assessments/{assessment.id}/items/{ITEM}/answer",
                        data={"status": "met", "note": "saved at last", "version": "0", "csrf_token": fresh})
    assert saved.status_code == 302
    assert db.session.scalar(select(Answer.note)) == "saved at last"


def test_a_signed_out_htmx_save_is_a_401_without_swap(app, editor):
    _user, assessment = editor
    stranger = app.test_client()
    response = stranger.post(f"/assessments/{assessment.id}/items/{ITEM}/answer",
                             data={"status": "met", "note": "x", "version": "0"}, headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Reswap"] == "none" and response.headers["X-Preflight-Session"] == "expired"
    assert stranger.get("/session/csrf", headers={"HX-Request": "true"}).status_code == 401
    plain = stranger.get(f"/assessments/{assessment.id}")
    assert plain.status_code == 302 and "/login?next=" in plain.headers["Location"]


# Item 11: chunked bodies ---------------------------------------------------------------------

@pytest.fixture
def server(app):
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield http.server_port
    http.shutdown()
    thread.join(timeout=5)


def post_chunked(port: int, path: str, size: int, body: bytes = b"email=a%40example.test&password=") -> tuple[int, str]:
    """POST `size` bytes with Transfer-Encoding: chunked; the response's status and text."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        sent = 0
        try:
            while sent < size:
                sock.sendall(b"%x\r\n%s\r\n" % (len(body), body))
                sent += len(body)
                body = b"x" * 65536
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before reading it all
        reply = b""
        try:
            while b"</html>" not in reply and (chunk := sock.recv(65536)):
                reply += chunk
        except OSError:
            pass
    return int(reply.split(b" ", 2)[1]), reply.decode("utf-8", "replace")


def test_a_chunked_body_over_the_limit_is_a_413(server):
    UserFactory()
    db.session.commit()
    status, text = post_chunked(server, "/login", 10 * 1024 * 1024)
    assert status == 413 and "exceeds the capacity limit" in text


def test_a_small_chunked_body_is_read_whole(server):
    UserFactory()
    db.session.commit()
    status, text = post_chunked(server, "/login", 10, body=b"email=a%40example.test&password=wrong+guess")
    assert status == 400 and "Email or password is not right" in text  # the form arrived whole


def test_not_found_and_wrong_method_pages_speak_plainly(client, auth):
    auth.login(UserFactory())
    for url in ("/no-such-page", "/services/999999"):
        page = client.get(url)
        assert page.status_code == 404
        text = page.get_data(as_text=True)
        assert "There is nothing at this address" in text and "check your spelling" not in text
    wrong = client.get("/logout")
    assert wrong.status_code == 405 and "cannot be used that way" in wrong.get_data(as_text=True)


def test_signed_out_error_pages_offer_sign_in_rather_than_the_dashboard(client):
    UserFactory()
    db.session.commit()
    page = client.get("/signup").get_data(as_text=True)  # closed after the first account
    assert "Sign-up is closed" in page and 'class="button primary" href="/login"' in page
    assert "Go to the dashboard" not in page
