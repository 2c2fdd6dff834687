"""A new user in real Chromium: sign up, create a team, register a service, start an
assessment, answer items with the mouse and the keyboard — the score updates in place."""

from __future__ import annotations

import os
import threading

import pytest
from werkzeug.serving import make_server

from tests.conftest import need

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def live_server(app):
    app.config["WTF_CSRF_ENABLED"] = True  # the browser sends real tokens
    # What `make run` does before serving: pages only read checklists, they never load files.
    assert app.test_cli_runner().invoke(args=["checklists", "sync"]).exit_code == 0
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)
    app.config["WTF_CSRF_ENABLED"] = False


@pytest.fixture
def page(live_server):
    need("browser", os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(10_000)
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.base = live_server
        yield page
        assert not [e for e in errors if "Content Security Policy" in e], errors
        context.close()
        browser.close()


def test_new_user_assesses_a_service_without_page_reloads(page):
    base = page.base
    page.goto(base + "/")
    assert page.url.endswith("/signup")
    page.fill("input[name=name]", "Ada Lovelace")
    page.fill("input[name=email]", "ada@example.test")
    page.fill("input[name=password]", "a long password")
    page.fill("input[name=confirm]", "a long password")
    page.click("form button[type=submit]")
    page.wait_for_url(base + "/")

    page.goto(base + "/teams/new")
    page.fill("input[name=name]", "Payments")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/teams/*")
    page.click("text=Register a service")
    page.fill("input[name=name]", "Ledger API")
    page.fill("input[name=health_url]", "javascript:alert(1)")
    page.click("main form button[type=submit]")
    assert page.locator("text=full http:// or https:// URL").count() >= 1
    page.fill("input[name=health_url]", "https://ledger.example.test/health")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/services/*")
    assert page.locator("h1", has_text="Ledger API").count() == 1

    page.click("text=Start assessment")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/assessments/*")
    url = page.url
    header = page.locator("#score-header")
    before = header.inner_text()

    card = page.locator("#item-structured_logging")
    card.locator("button[name=status][value=met]").click()
    page.locator("#item-structured_logging .saved-tick").wait_for()
    assert page.url == url  # no navigation: htmx swapped the card and the score
    assert header.inner_text() != before
    assert page.locator("#item-structured_logging button[value=met][aria-pressed=true]").count() == 1

    # Keyboard: focus the card, move down with j, set "partial" with 2.
    page.locator("#item-structured_logging").focus()
    page.keyboard.press("j")
    focused_key = page.evaluate("document.activeElement.closest('[data-key]')?.dataset.key")
    assert focused_key and focused_key != "structured_logging"
    page.keyboard.press("2")
    page.locator(f"#item-{focused_key} .saved-tick").wait_for()
    assert page.locator(f"#item-{focused_key} button[value=partial][aria-pressed=true]").count() == 1

    # N/A without a reason is refused in place, with the message on the card.
    card = page.locator("#item-log_rotation")
    card.locator("button[name=status][value=n_a]").click()
    page.locator("#item-log_rotation .card-error").wait_for()
    assert "N/A needs a reason" in page.locator("#item-log_rotation").inner_text()
    page.screenshot(path="/tmp/preflight-assessment.png", full_page=False)
