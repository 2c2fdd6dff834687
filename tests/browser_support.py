"""Browser test support: a live server over the test app, and a Chromium page on it
(Debian's Chromium through playwright; never `playwright install`). Registered as a plugin
in conftest.py, so every browser test module gets the `live_server`, `chromium` and `page` fixtures."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.conftest import need

CHROMIUM = "/usr/bin/chromium"
# axe-core is installed by .ci/run (npm) outside the repository; AXE_CORE_JS points at it.
AXE_CANDIDATES = [os.environ.get("AXE_CORE_JS", ""),
                  str(Path.home() / ".cache/preflight-axe/node_modules/axe-core/axe.min.js")]
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
def chromium():
    """Debian's Chromium, launched through playwright; skipped (failed in CI) without it."""
    need("browser", os.path.exists(CHROMIUM), f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, live_server):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.base = live_server
    yield page
    assert not [e for e in errors if "Content Security Policy" in e], errors
    context.close()


def follow(page, selector: str) -> None:
    """Click something that loads a page, and wait until that page has loaded: `click` returns
    once the new URL is committed, and reading the page then can see a document not yet parsed."""
    with page.expect_navigation():
        page.click(selector)
