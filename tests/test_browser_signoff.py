"""The sign-off journey in real Chromium: the team submits, the owner and an SRE sign off in
meeting mode (keyboard navigation, gaps only, the form on the last slide), then the signed
PDF is downloaded and verified on the verification page."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.factories import PASSWORD
from tests.signoff_helpers import Cast, answered_assessment
from webapp import assessments, reports
from webapp.extensions import db
from webapp.models import Assessment, Report

pytestmark = pytest.mark.browser


def _login(page, user):
    page.context.clear_cookies()
    page.goto(page.base + "/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_url(page.base + "/")


def _sign_in_meeting(page, assessment_id, role, present):
    page.goto(f"{page.base}/assessments/{assessment_id}/meeting")
    page.set_viewport_size({"width": 1920, "height": 1080})
    assert page.locator(".slide.is-current").get_attribute("id") == "slide-summary"
    page.keyboard.press("ArrowRight")
    assert page.locator(".slide.is-current").get_attribute("id") != "slide-summary"
    page.keyboard.press("End")
    assert page.locator(".slide.is-current").get_attribute("id") == "slide-decision"
    page.select_option("#slide-decision select[name=role]", role)
    page.select_option("#slide-decision select[name=decision]", "approve")
    page.fill("#slide-decision input[name=present]", present)
    page.click("#slide-decision button[type=submit]")


def test_submit_sign_off_in_meeting_mode_download_and_verify(page, tmp_path):
    page.set_default_timeout(30_000)  # signing off renders and signs the PDF in the request
    cast = Cast(tier=2)
    assessment = answered_assessment(cast.service, cast.member, notes=True, evidence=True)
    gap = assessments.answer_for(assessment, "structured_logging")
    gap.status = "partial"
    assessments.refresh_score(assessment)
    db.session.commit()

    _login(page, cast.member)
    page.goto(f"{page.base}/assessments/{assessment.id}")
    page.click("button:has-text('Submit for review')")
    page.locator("text=Answers are read-only until the reviewers decide").wait_for()

    # The SRE sees it waiting, with the count in the navigation.
    _login(page, cast.sre)
    assert page.locator(".nav-count").inner_text() == "1"

    _login(page, cast.owner)
    page.goto(f"{page.base}/assessments/{assessment.id}/meeting")
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.screenshot(path="/tmp/preflight-meeting-summary.png")
    page.keyboard.press("g")  # gaps only: category slides without gaps are skipped
    page.keyboard.press("ArrowRight")
    current = page.locator(".slide.is-current")
    assert current.get_attribute("data-has-gaps") == "true"
    assert current.locator(".slide-item:visible").count() == current.locator(".slide-item.is-gap").count()
    page.screenshot(path="/tmp/preflight-meeting-gaps.png")
    page.keyboard.press("g")
    # Turning "gaps only" on from a slide without gaps goes to the next slide with gaps, not back
    # to the summary.
    slides = page.eval_on_selector_all(".slide", "all => all.map(s => [s.id, s.dataset.hasGaps])")
    calm = next(i for i, (_, gaps) in enumerate(slides) if gaps == "false")
    page.goto(f"{page.base}/assessments/{assessment.id}/meeting#{slides[calm][0]}")
    page.reload()  # a change of fragment alone is not a new page load
    assert page.locator(".slide.is-current").get_attribute("id") == slides[calm][0]
    page.keyboard.press("g")
    after = next(ident for ident, gaps in slides[calm:] if gaps == "true")
    assert page.locator(".slide.is-current").get_attribute("id") == after
    page.keyboard.press("g")
    # Space moves on, except on a focused control: there it opens or presses it, as everywhere.
    page.goto(f"{page.base}/assessments/{assessment.id}/meeting")
    page.reload()
    page.keyboard.press("Space")
    assert page.locator(".slide.is-current").get_attribute("id") == slides[1][0]
    page.keyboard.press("End")
    summary = page.locator(".slide.is-current summary").first
    summary.focus()
    page.keyboard.press("Space")
    assert summary.evaluate("s => s.parentNode.open") is True
    assert page.locator(".slide.is-current").get_attribute("id") == slides[-1][0]
    _sign_in_meeting(page, assessment.id, "owner", "Olive, Sam, Mo")
    page.locator("text=Your decision as “owner” is recorded").wait_for()
    page.screenshot(path="/tmp/preflight-meeting-decision.png")

    _login(page, cast.sre)
    _sign_in_meeting(page, assessment.id, "sre", "Olive, Sam, Mo")
    page.locator("text=Signed off. The assessment is frozen").wait_for()
    # The room stays on the projector view: the decision slide says how it ended.
    assert page.url.endswith(f"/assessments/{assessment.id}/meeting#slide-decision")
    assert page.locator(".slide.is-current").get_attribute("id") == "slide-decision"
    page.screenshot(path="/tmp/preflight-meeting-signed.png")
    db.session.expire_all()
    assert db.session.get(Assessment, assessment.id).state == "signed_off"

    with page.expect_download() as download:
        page.click("text=Download signed report")
    pdf = tmp_path / "report.pdf"
    download.value.save_as(pdf)
    stored = db.session.scalar(select(Report))
    assert pdf.read_bytes() == stored.pdf
    assert reports.verify_pdf(pdf.read_bytes()).genuine

    page.goto(page.base + "/reports/verify")
    page.set_input_files("input[name=pdf]", str(pdf))
    page.click("main form button[type=submit]")
    page.locator("#verify-result").wait_for()
    assert "✔ Genuine" in page.locator("#verify-result").inner_text()

    # Escape leaves meeting mode.
    page.goto(f"{page.base}/assessments/{assessment.id}/meeting")
    page.keyboard.press("Escape")
    page.wait_for_url(f"**/assessments/{assessment.id}/review")
