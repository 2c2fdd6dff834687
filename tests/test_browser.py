"""A new user in real Chromium: sign up, create a team, register a service, start an
assessment, answer items with the mouse and the keyboard — the score updates in place,
a probe is overridden only with a note, and axe-core finds nothing serious."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.browser_support import AXE_CANDIDATES, follow
from tests.conftest import need
from webapp.extensions import db
from webapp.models import ProbeResult, ProbeRun, Service, ServiceCheck, utcnow


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
    follow(page, "main form button[type=submit]")
    assert page.locator("text=full http:// or https:// URL").count() >= 1
    assert page.evaluate("document.activeElement.name") == "health_url"  # the wrong field, in view
    page.fill("input[name=health_url]", "https://ledger.example.test/health")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/services/*")
    assert page.locator("h1", has_text="Ledger API").count() == 1

    # The probes already know something: the runbook check failed (no runbook written).
    service = db.session.query(Service).filter_by(name="Ledger API").one()
    run = ProbeRun(service_id=service.id, trigger="cli", finished_at=utcnow())
    db.session.add(run)
    db.session.flush()
    result = ProbeResult(run_id=run.id, service_id=service.id, kind="runbook_present", url="", outcome="fail",
                         explanation="No runbook has been written for this service yet.", finished_at=utcnow())
    db.session.add(result)
    db.session.flush()
    db.session.add(ServiceCheck(service_id=service.id, kind="runbook_present", outcome="fail", result_id=result.id))
    db.session.commit()

    page.click("text=Start assessment")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/assessments/*")
    url = page.url
    bar = page.locator("#score-bar")
    before = bar.inner_text()
    # A new assessment starts with what the probe knew, and says so beside the control.
    runbook = page.locator("#item-runbook")
    assert runbook.locator("button[value=not_met][aria-pressed=true]").count() == 1
    assert "No runbook has been written" in runbook.locator(".probe-line").inner_text()

    card = page.locator("#item-structured_logging")
    card.locator("button[name=status][value=met]").click()
    page.locator("#item-structured_logging .saved-tick").wait_for()
    assert page.url == url  # no navigation: htmx swapped the row and every figure
    assert bar.inner_text() != before
    assert page.locator("#item-structured_logging button[value=met][aria-pressed=true]").count() == 1
    header = page.locator("#cat-transparency-progress").inner_text()
    side = page.locator("#category-progress a[href='#cat-transparency'] .cat-score").inner_text()
    assert header.startswith(side.replace("/", " of ")), (header, side)

    # Keyboard: focus the row, move down with j, set "partial" with 2.
    page.locator("#item-structured_logging").focus()
    page.keyboard.press("j")
    focused_key = page.evaluate("document.activeElement.closest('[data-key]')?.dataset.key")
    assert focused_key and focused_key != "structured_logging"
    page.keyboard.press("2")
    page.locator(f"#item-{focused_key} .saved-tick").wait_for()
    assert page.locator(f"#item-{focused_key} button[value=partial][aria-pressed=true]").count() == 1
    # Enter opens the row; e goes to its evidence field; the count follows the save.
    page.keyboard.press("k")
    page.keyboard.press("Enter")
    page.locator("#panel-structured_logging .panel-body").wait_for()
    assert page.locator("#item-structured_logging .item-toggle").get_attribute("aria-expanded") == "true"
    page.keyboard.press("e")
    page.wait_for_function("document.activeElement && document.activeElement.name === 'url'")
    page.keyboard.type("https://wiki.example.test/logging")
    page.keyboard.press("Enter")
    page.locator("#item-structured_logging .meta-count[title='1 evidence link']").wait_for()
    # ? opens the help where you are; shortcuts can be turned off, and that is remembered.
    page.locator("#item-structured_logging").focus()
    page.keyboard.press("?")
    assert page.locator("#keyboard-help").is_visible()
    page.locator("#shortcuts-enabled").uncheck()
    page.keyboard.press("Escape")
    assert not page.locator("#keyboard-help").is_visible()
    page.reload()
    page.locator("#item-structured_logging").focus()
    page.keyboard.press("j")
    assert page.evaluate("document.activeElement.id") == "item-structured_logging"  # j is off
    page.locator("button[data-open-dialog=keyboard-help]").click()
    page.locator("#shortcuts-enabled").check()
    page.keyboard.press("Escape")

    # Overriding the probe needs a note of one's own: refused, the note box opens with focus.
    runbook.locator("button[name=status][value=met]").click()
    runbook.locator(".card-error").wait_for()
    assert "note of your own" in runbook.inner_text()
    assert page.evaluate("document.activeElement.id") == "note-runbook"
    page.keyboard.type("The runbook lives in the team wiki: https://wiki.example.test/runbook")
    runbook.locator("button", has_text="Save as Met with this note").click()
    page.locator("#item-runbook .saved-tick").wait_for()
    assert runbook.locator("button[value=met][aria-pressed=true]").count() == 1
    assert "overridden" in runbook.locator(".probe-line").inner_text()

    # N/A without a reason is refused in place, with the message on the row.
    row = page.locator("#item-log_rotation")
    row.locator("button[name=status][value=n_a]").click()
    page.locator("#item-log_rotation .card-error").wait_for()
    assert "N/A needs a reason" in page.locator("#item-log_rotation").inner_text()

    # axe-core on the page as it is now (a row open, an error shown): nothing serious.
    axe = next((path for path in AXE_CANDIDATES if path and os.path.exists(path)), None)
    need("browser", axe is not None, "axe-core is missing: run .ci/run, or "
         "`npm install --prefix ~/.cache/preflight-axe axe-core` (or set AXE_CORE_JS)")
    # Evaluated over the DevTools protocol: a <script> tag would be refused by our strict CSP.
    page.evaluate(Path(axe).read_text(encoding="utf-8"))
    violations = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']}))
        .violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.slice(0, 8).map(n => n.target.join(" ") + " " + (n.any[0] && n.any[0].message))}))""")
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert serious == [], serious

    shots = Path(tempfile.gettempdir())
    page.screenshot(path=str(shots / "preflight-assessment.png"))
