"""In real Chromium: a maintainer writes the runbook, edits it, reads the diff, marks it
reviewed, and finds what needs attention; an admin offboards a leaver."""

from __future__ import annotations

from tests.browser_support import follow
from tests.factories import PASSWORD, MembershipFactory, ServiceFactory, UserFactory
from webapp.extensions import db


def sign_in(page, user) -> None:
    page.goto(page.base + "/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("main form button[type=submit]")
    page.wait_for_url(page.base + "/")


def test_runbook_written_edited_compared_and_reviewed(page):
    member = MembershipFactory(role="maintainer")
    service = ServiceFactory(team=member.team, name="Ledger API")
    db.session.commit()
    sign_in(page, member.user)

    page.goto(f"{page.base}/services/{service.id}/runbook")
    page.click("text=Write the runbook")
    page.fill("textarea[name=body]", "# Ledger runbook\n\nRestart: `systemctl restart ledger`.")
    page.click("text=Save revision")
    page.wait_for_url(f"**/services/{service.id}/runbook")
    assert page.locator(".runbook-body h1", has_text="Ledger runbook").count() == 1
    assert page.locator("text=Nobody has marked this runbook reviewed yet").count() == 1

    page.click("text=Edit runbook")
    page.fill("textarea[name=body]", "# Ledger runbook\n\nRestart: `systemctl restart ledger.service`.\n\nRoll back: redeploy.")
    page.click("text=Save revision")
    page.wait_for_url(f"**/services/{service.id}/runbook")
    follow(page, "text=Latest changes")
    assert page.locator("tr.diff-remove").count() == 1 and page.locator("tr.diff-add").count() >= 2
    page.screenshot(path="/tmp/preflight-runbook-diff.png", full_page=True)

    page.goto(f"{page.base}/services/{service.id}/runbook")
    page.click("text=Mark reviewed today")
    page.wait_for_url(f"**/services/{service.id}/runbook")
    assert page.locator("text=Runbook marked as reviewed today.").count() == 1
    assert page.locator("text=Nobody has marked").count() == 0

    page.goto(page.base + "/attention?mine=1")
    row = page.locator("tr", has_text="Ledger API").first
    assert row.count() == 1  # no owner, no on-call, never assessed…
    assert page.locator("tr.attention-runbook", has_text="Ledger API").count() == 0  # reviewed: not listed
    follow(page, "a.tile:has-text('Missing owner or on-call')")
    assert page.locator("tr.attention-ownership", has_text="Ledger API").count() == 1
    page.screenshot(path="/tmp/preflight-attention.png", full_page=True)

    page.goto(f"{page.base}/services/{service.id}/timeline?kind=runbook")
    assert page.locator(".timeline li").count() == 3  # two edits and a review


def test_admin_offboards_a_leaver(page):
    admin, leaver, heir = UserFactory(is_admin=True), UserFactory(name="Lea Ving"), UserFactory(name="Hugo Heir")
    service = ServiceFactory(owner=leaver, name="Billing")
    db.session.commit()
    sign_in(page, admin)
    page.goto(f"{page.base}/users/{leaver.id}/offboard")
    assert page.locator("td", has_text="Billing").count() == 1
    page.select_option("select[name=new_owner_id]", str(heir.id))
    page.check("input[name=disable]")
    follow(page, "main form button[type=submit]")
    assert page.locator("text=1 service handed over; Lea Ving's account is disabled.").count() == 1
    page.goto(f"{page.base}/services/{service.id}/owners")
    assert page.locator("td", has_text="Hugo Heir").count() >= 1
    # The people table fits its card at a laptop's width: Status and Offboard are not cut off.
    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{page.base}/admin/users")
    wrap = page.evaluate("(() => { const t = document.querySelector('.users-table').parentNode;"
                         " return [t.scrollWidth, t.clientWidth]; })()")
    assert wrap[0] <= wrap[1], wrap
